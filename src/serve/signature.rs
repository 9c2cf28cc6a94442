//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the
//! raw body keyed with the webhook secret, checked before a byte of the body is parsed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Whether `header` is the signature of `body` under `secret`. The comparison takes the
/// same time wherever the first wrong byte is (`verify_slice`), so the signature cannot be
/// guessed byte by byte from response times. A missing or malformed header is wrong.
pub(super) fn valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::valid;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    /// GitHub's own test vector (api-contracts §3.9).
    const GOOD: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_verifies() {
        assert!(valid(SECRET, b"Hello, World!", Some(GOOD)));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!valid(SECRET, b"Hello, World?", Some(GOOD)));
        assert!(!valid(b"another secret", b"Hello, World!", Some(GOOD)));
        assert!(!valid(SECRET, b"Hello, World!", None));
        assert!(!valid(SECRET, b"Hello, World!", Some("")));
        assert!(!valid(
            SECRET,
            b"Hello, World!",
            Some(&GOOD.replace("sha256=", "sha1="))
        ));
        assert!(!valid(SECRET, b"Hello, World!", Some("sha256=zz")));
        // A prefix of the right signature is not the signature.
        assert!(!valid(SECRET, b"Hello, World!", Some(&GOOD[..40])));
    }
}
