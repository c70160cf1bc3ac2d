//! The access token. With one configured (a flag, or the init call), every envd call but
//! `/health`, `/files` (which also takes a signature) and `/init` (which checks it itself) must
//! carry it in `X-Access-Token`, as envd's auth middleware demands. Without one, all is open:
//! that is debug mode, where the SDKs hold no token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Envd, EnvdError};

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// Equal in time that depends only on the lengths, so a wrong token's timing tells nothing of
/// the right one.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok` when no token is configured or `headers` carry the configured one.
pub fn check(expected: Option<&str>, headers: &HeaderMap) -> Result<(), EnvdError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match headers.get(ACCESS_TOKEN_HEADER) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(EnvdError::unauthenticated("invalid access token")),
        None => Err(EnvdError::unauthenticated("missing access token")),
    }
}

/// Middleware for the routes that need the token.
pub async fn require_token(State(envd): State<Arc<Envd>>, req: Request, next: Next) -> Response {
    match envd.check_token(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        let mut headers = HeaderMap::new();
        assert!(check(None, &headers).is_ok());
        assert!(check(Some("t"), &headers).is_err());
        headers.insert(ACCESS_TOKEN_HEADER, "t".parse().expect("header value"));
        assert!(check(Some("t"), &headers).is_ok());
        assert!(check(Some("u"), &headers).is_err());
    }
}
