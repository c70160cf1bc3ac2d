//! envd's plain HTTP file transfer on port 49983: `GET /files` (download) and `POST /files`
//! (upload), what the SDKs' `files.read` / `files.write` / `write_files` and the signed
//! `download_url` / `upload_url` use (`../shared/spec/envd-api.md` §10).
//!
//! - [`download`]: identity with `Range` and conditional requests, or streamed gzip;
//! - [`upload`]: multipart and octet-stream bodies (optionally gzip), into [`staged`] writes that
//!   never leave a truncated file behind;
//! - [`connection`] and [`direct`]: plain HTTP/1.1 identity transfers served by the agent itself,
//!   with `splice(2)` and `sendfile(2)` instead of hyper's buffers;
//! - [`signature`]: `X-Access-Token` or a v1 signature when the sandbox has a token;
//! - [`metadata`]: `X-Metadata-*` headers as `user.e2b.*` xattrs;
//! - [`encoding`]: `Accept-Encoding` / `Content-Encoding`;
//! - [`error`]: what fails, and the one place it becomes an HTTP answer.
//!
//! Query parameters (`path`, `username`, `signature`, `signature_expiration`) are read as envd's
//! generated router does: the first occurrence of each counts.

pub mod connection;
pub mod direct;
pub mod download;
pub mod encoding;
pub mod error;
pub mod metadata;
pub mod signature;
pub mod staged;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Query;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::Router;

pub use error::FilesError;

use super::{Caller, Code, Envd};
use signature::{Credentials, Operation};

/// The header a client holding the sandbox's token sends.
const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// `GET` and `POST /files`. Bodies stream: no body limit applies (the handlers never buffer).
pub fn routes() -> Router<Arc<Envd>> {
    Router::new().route("/files", get(download::get_files).post(upload::post_files))
}

/// A `/files` request's query.
#[derive(Debug, Default)]
pub struct FileQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    /// Unix seconds.
    pub signature_expiration: Option<i64>,
}

impl FileQuery {
    pub fn parse(uri: &Uri) -> Result<FileQuery, FilesError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| FilesError::BadRequest(format!("invalid query: {e}")))?;
        let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let signature_expiration = match first("signature_expiration") {
            None => None,
            Some(v) => Some(v.parse::<i64>().map_err(|e| {
                FilesError::BadRequest(format!(
                    "Invalid format for parameter signature_expiration: {e}"
                ))
            })?),
        };
        Ok(FileQuery {
            path: first("path"),
            username: first("username"),
            signature: first("signature"),
            signature_expiration,
        })
    }
}

/// Checks the token or signature (when the sandbox has a token), then finds the user the
/// request acts as (`?username=`, else the default user).
pub fn authorise(
    envd: &Envd,
    headers: &HeaderMap,
    query: &FileQuery,
    operation: Operation,
) -> Result<Caller, FilesError> {
    let configured = envd.settings().access_token;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let creds = Credentials {
        header_token: headers
            .get(ACCESS_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok()),
        path: query.path.as_deref().unwrap_or(""),
        username: query.username.as_deref().unwrap_or(""),
        signature: query.signature.as_deref(),
        expiration: query.signature_expiration,
    };
    signature::check(configured.as_deref(), &creds, operation, now)?;
    envd.caller(query.username.as_deref())
        .map_err(|e| match e.code {
            Code::Unauthenticated => FilesError::UnknownUser(e.message),
            _ => FilesError::Internal(e.message),
        })
}

/// Resolves a request path for the caller (relative → under their home), refusing `~other`,
/// which envd cannot expand either.
pub fn resolve(caller: &Caller, raw: &str) -> Result<PathBuf, FilesError> {
    if raw.starts_with('~') && raw != "~" && !raw.starts_with("~/") {
        return Err(FilesError::BadPath {
            path: raw.to_string(),
            reason: format!(
                "failed to expand path '{raw}' for user '{}': cannot expand user-specific home dir",
                caller.user.name
            ),
        });
    }
    Ok(caller.path(raw))
}
