#!/bin/sh
# Installs changegate from a release: picks the archive for this OS and CPU, downloads it
# and its SHA-256 checksum, refuses it unless the checksum matches, and puts the binary in
# a directory (default: ~/.local/bin).
#
#   curl -fsSL https://raw.githubusercontent.com/changegate/changegate/v0.1.0/install.sh | sh -s -- --version v0.1.0
#   sh install.sh --version v0.1.0 --to /usr/local/bin
#
# Options (each also an environment variable):
#   --to DIR          CHANGEGATE_INSTALL_DIR       where the binary goes (default ~/.local/bin)
#   --version vX.Y.Z  CHANGEGATE_VERSION           the release (default: the latest)
#   --base-url URL    CHANGEGATE_INSTALL_BASE_URL  where the archives are (default: the
#                     GitHub release of that version); https only, or http on loopback
#
# Linux (x86_64, aarch64: static musl binaries) and macOS (x86_64, arm64). On Windows,
# download changegate-x86_64-pc-windows-msvc.zip from the release page instead.
# Exits non-zero, having installed nothing, when any step fails.
set -eu

REPOSITORY="changegate/changegate"

say() { printf 'changegate install: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

usage() {
	cat <<'USAGE'
sh install.sh [--to DIR] [--version vX.Y.Z] [--base-url URL]
  --to DIR          or CHANGEGATE_INSTALL_DIR: where the binary goes (default ~/.local/bin)
  --version vX.Y.Z  or CHANGEGATE_VERSION: the release (default: the latest)
  --base-url URL    or CHANGEGATE_INSTALL_BASE_URL: where the archives are (default: the
                    GitHub release); https only, or http on 127.0.0.1, localhost or [::1]
USAGE
}

dir="${CHANGEGATE_INSTALL_DIR:-}"
version="${CHANGEGATE_VERSION:-}"
base="${CHANGEGATE_INSTALL_BASE_URL:-}"
while [ $# -gt 0 ]; do
	case "$1" in
	--to)
		[ $# -ge 2 ] || die "--to needs a directory"
		dir="$2"
		shift 2
		;;
	--to=*)
		dir="${1#--to=}"
		shift
		;;
	--version)
		[ $# -ge 2 ] || die "--version needs a release tag such as v0.1.0"
		version="$2"
		shift 2
		;;
	--version=*)
		version="${1#--version=}"
		shift
		;;
	--base-url)
		[ $# -ge 2 ] || die "--base-url needs a URL"
		base="$2"
		shift 2
		;;
	--base-url=*)
		base="${1#--base-url=}"
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

if [ -z "$dir" ]; then
	[ -n "${HOME:-}" ] || die "HOME is not set: say where to install with --to DIR"
	dir="$HOME/.local/bin"
fi

case "$version" in
"" | latest) release="latest/download" ;;
v[0-9]*.[0-9]*.[0-9]*) release="download/$version" ;;
[0-9]*.[0-9]*.[0-9]*) release="download/v$version" ;;
*) die "--version must be a release tag such as v0.1.0, not '$version'" ;;
esac
base="${base:-https://github.com/$REPOSITORY/releases/$release}"
base="${base%/}"
# The checksum proves the archive is the one the release lists only if the list itself
# came over an authenticated channel: plain http is for a server on this machine only.
case "$base" in
https://*) ;;
http://127.0.0.1[:/]* | http://localhost[:/]* | "http://[::1]"[:/]*) ;;
*) die "the base URL must be https:// (or http:// on 127.0.0.1, localhost or [::1]): $base" ;;
esac

os="$(uname -s)"
case "$os" in
Linux) os_part="unknown-linux-musl" ;;
Darwin) os_part="apple-darwin" ;;
MINGW* | MSYS* | CYGWIN* | Windows_NT) die "on Windows, download changegate-x86_64-pc-windows-msvc.zip from the release page" ;;
*) die "no prebuilt changegate for $os: install it with cargo install changegate" ;;
esac
arch="$(uname -m)"
case "$arch" in
x86_64 | amd64) arch_part="x86_64" ;;
aarch64 | arm64) arch_part="aarch64" ;;
*) die "no prebuilt changegate for $arch on $os: install it with cargo install changegate" ;;
esac
target="$arch_part-$os_part"
archive="changegate-$target.tar.gz"

download() { # URL FILE
	if command -v curl >/dev/null 2>&1; then
		curl --fail --silent --show-error --location --retry 3 --output "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then
		wget --quiet --tries=3 --output-document="$2" "$1"
	else
		die "neither curl nor wget is installed"
	fi
}

sha256() { # FILE: prints its SHA-256 in hex
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
	else
		die "no sha256sum, shasum or openssl to check the download with"
	fi
}

tmp="$(mktemp -d 2>/dev/null || mktemp -d -t changegate)"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

say "downloading $base/$archive"
download "$base/$archive" "$tmp/$archive" || die "cannot download $base/$archive"
download "$base/$archive.sha256" "$tmp/$archive.sha256" || die "cannot download $base/$archive.sha256"

# The checksum file is `<hex>  <name>` (or `<hex> *<name>`): the first field, lower-cased.
expected="$(cut -d ' ' -f 1 <"$tmp/$archive.sha256" | head -n 1 | tr 'A-F' 'a-f')"
case "$expected" in
*[!0-9a-f]* | "") die "$archive.sha256 holds no SHA-256 checksum" ;;
esac
[ "${#expected}" -eq 64 ] || die "$archive.sha256 holds no SHA-256 checksum"
actual="$(sha256 "$tmp/$archive")"
if [ "$actual" != "$expected" ]; then
	die "checksum mismatch for $archive: expected $expected, got $actual; nothing was installed"
fi
say "checksum ok ($expected)"

mkdir "$tmp/unpacked"
tar -xzf "$tmp/$archive" -C "$tmp/unpacked" || die "cannot unpack $archive"
bin=""
for candidate in "$tmp/unpacked/changegate-$target/changegate" "$tmp/unpacked/changegate"; do
	if [ -f "$candidate" ]; then
		bin="$candidate"
		break
	fi
done
[ -n "$bin" ] || die "$archive holds no changegate binary"

chmod 0755 "$bin"
installed="$("$bin" --version 2>/dev/null)" ||
	die "the changegate in $archive does not run on this machine; nothing was installed"

mkdir -p "$dir" || die "cannot create $dir"
# Copied beside the old binary, then renamed over it: a running changegate is never
# half-written, and a failed copy leaves the old one in place.
new="$dir/.changegate.new.$$"
if ! cp "$bin" "$new" || ! chmod 0755 "$new" || ! mv -f "$new" "$dir/changegate"; then
	rm -f "$new"
	die "cannot install $dir/changegate"
fi
say "installed $installed to $dir/changegate"
case ":${PATH:-}:" in
*":$dir:"*) ;;
*) say "$dir is not on PATH: add it, or run $dir/changegate" ;;
esac
