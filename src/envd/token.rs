//! Access tokens: comparing a secret a client sent with the configured one without telling a
//! timing attacker how much of it matched (envd uses Go's `subtle.ConstantTimeCompare`).

use sha2::{Digest, Sha256};

/// Whether `given` equals `expected`, in time independent of their contents and lengths: both are
/// hashed first, so the comparison always runs over two 32-byte digests, and the digests are
/// compared without an early exit.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (
        Sha256::digest(expected.as_bytes()),
        Sha256::digest(given.as_bytes()),
    );
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_match_and_others_do_not() {
        assert!(matches("secret", "secret"));
        assert!(matches("", ""));
        assert!(!matches("secret", "secreT"));
        assert!(!matches("secret", "secret "));
        assert!(!matches("secret", ""));
    }
}
