//! Who may use `/files` when the sandbox has an access token: a client holding the token sends it
//! as `X-Access-Token`; anyone else needs a URL the SDK signed with it (`download_url` /
//! `upload_url`). envd's v1 scheme (`internal/api/auth.go`, SDK `signature.py`):
//!
//! `"v1_" + base64_std_nopad(sha256("<path>:<read|write>:<username or ''>:<token>[:<expiration>]"))`
//!
//! With no token configured nothing is checked (debug mode).

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::envd::auth::constant_time_eq;

/// What the signature allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// Why a `/files` request is not authorised (envd's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("access token present in header but does not match")]
    WrongToken,
    #[error("missing signature query parameter")]
    MissingSignature,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("signature is already expired")]
    Expired,
}

/// The signature of `path` (the raw query value) for `operation` by `username` (`""`: the
/// default user), valid until `expiration` (Unix seconds) if given.
pub fn sign(
    path: &str,
    operation: Operation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let mut raw = format!("{path}:{}:{username}:{token}", operation.as_str());
    if let Some(expiration) = expiration {
        raw.push_str(&format!(":{expiration}"));
    }
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// What a request presents.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// `X-Access-Token` (empty counts as absent, as in envd).
    pub header_token: Option<&'a str>,
    pub path: &'a str,
    pub username: &'a str,
    pub signature: Option<&'a str>,
    pub expiration: Option<i64>,
}

/// Checks a request against the configured token, as envd's `validateSigning`: a token in the
/// header must match and then no signature is needed; otherwise the signature must match (in
/// constant time) and must not have expired at `now` (Unix seconds).
pub fn check(
    configured: Option<&str>,
    creds: &Credentials<'_>,
    operation: Operation,
    now: i64,
) -> Result<(), AuthError> {
    let Some(token) = configured else {
        return Ok(());
    };
    if let Some(given) = creds.header_token.filter(|t| !t.is_empty()) {
        return if constant_time_eq(token.as_bytes(), given.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::WrongToken)
        };
    }
    let given = creds.signature.ok_or(AuthError::MissingSignature)?;
    let expected = sign(
        creds.path,
        operation,
        creds.username,
        token,
        creds.expiration,
    );
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(AuthError::InvalidSignature);
    }
    match creds.expiration {
        Some(expiration) if expiration < now => Err(AuthError::Expired),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_sdks() {
        // Python: get_signature("/home/user/a.txt", "read", None, "tok")
        //   base64.b64encode(sha256(b"/home/user/a.txt:read::tok").digest()).rstrip(b"=")
        let sig = sign("/home/user/a.txt", Operation::Read, "", "tok", None);
        let expected = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(Sha256::digest(b"/home/user/a.txt:read::tok"));
        assert_eq!(sig, format!("v1_{expected}"));
        assert!(!sig.ends_with('='));
        let with_exp = sign("a", Operation::Write, "root", "tok", Some(42));
        let expected = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(Sha256::digest(b"a:write:root:tok:42"));
        assert_eq!(with_exp, format!("v1_{expected}"));
    }

    #[test]
    fn checks_follow_envd() {
        let tok = Some("tok");
        let creds = |sig: Option<&'static str>, exp| Credentials {
            path: "p",
            signature: sig,
            expiration: exp,
            ..Default::default()
        };
        assert_eq!(check(None, &creds(None, None), Operation::Read, 0), Ok(()));
        assert_eq!(
            check(tok, &creds(None, None), Operation::Read, 0),
            Err(AuthError::MissingSignature)
        );
        let good = sign("p", Operation::Read, "", "tok", None);
        let good: &'static str = Box::leak(good.into_boxed_str());
        assert_eq!(
            check(tok, &creds(Some(good), None), Operation::Read, 0),
            Ok(())
        );
        assert_eq!(
            check(tok, &creds(Some(good), None), Operation::Write, 0),
            Err(AuthError::InvalidSignature)
        );
        let timed = sign("p", Operation::Read, "", "tok", Some(100));
        let timed: &'static str = Box::leak(timed.into_boxed_str());
        assert_eq!(
            check(tok, &creds(Some(timed), Some(100)), Operation::Read, 100),
            Ok(())
        );
        assert_eq!(
            check(tok, &creds(Some(timed), Some(100)), Operation::Read, 101),
            Err(AuthError::Expired)
        );
        let header = Credentials {
            header_token: Some("nope"),
            ..creds(Some(good), None)
        };
        assert_eq!(
            check(tok, &header, Operation::Read, 0),
            Err(AuthError::WrongToken)
        );
        let header = Credentials {
            header_token: Some("tok"),
            ..creds(None, None)
        };
        assert_eq!(check(tok, &header, Operation::Read, 0), Ok(()));
    }
}
