//! Link-time choices for the changegate binary that depend on the platform it is built for.
//! Both shrink the release binary on Linux with glibc, where the release archives' musl
//! builds and the images (musl, built in Docker) are left as they were; see
//! docs/internals/speed-and-size.md.

use std::path::PathBuf;

/// Placed by the linker's default script as it is, but for the unwind tables: a release
/// binary never unwinds (`panic = "abort"`, and the panic hook in main.rs exits with 2
/// before any unwinding would start), so the tables, about a megabyte, are dead weight.
const DISCARD_UNWIND_TABLES: &str = "\
SECTIONS
{
  /DISCARD/ : { *(.eh_frame) *(.eh_frame.*) *(.eh_frame_hdr) }
}
INSERT AFTER .text;
";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let (target, host) = (var("TARGET"), var("HOST"));
    if !target.ends_with("-linux-gnu") {
        return;
    }
    // Only the optimised builds; test and debug builds keep their tables (tests unwind).
    // A linker chosen with `-fuse-ld=` may not take linker scripts (mold does not): such a
    // build keeps its tables.
    let own_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("fuse-ld=");
    if var("PROFILE") == "release" && !own_linker {
        let script = PathBuf::from(var("OUT_DIR")).join("discard-unwind-tables.ld");
        if std::fs::write(&script, DISCARD_UNWIND_TABLES).is_ok() {
            println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
        }
    }
    // A position-independent binary carries one relocation record for every pointer in its
    // read-only data (about a megabyte here). `-z pack-relative-relocs` packs them into a
    // compact RELR table, which glibc applies at start-up from 2.36 on. Given only when
    // building for the machine that builds, so the binary runs on a glibc at least as new
    // as the one it was linked against; a cross build links as before.
    if target == host && host_glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the glibc this build script runs on (the host's, which is the target's here)
/// is 2.36 or later, the first to apply RELR relocations.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_has_relr() -> bool {
    // SAFETY: gnu_get_libc_version returns a pointer to a static, NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_has_relr() -> bool {
    false
}
