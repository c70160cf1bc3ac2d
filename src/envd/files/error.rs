//! What can go wrong on `/files`, and the one place it becomes HTTP: envd's HTTP handlers answer
//! `{"message": …, "code": <status>}` (not Connect's `{"code": "<name>"}`), and the SDKs turn the
//! status into their exceptions (404 → `FileNotFoundException`, 400 → invalid argument, 401 →
//! authentication, 507 → not enough space). Messages follow envd's wording.

use std::io;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::signature::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A bad access token or signature (401).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `?username=` names no account (401, as envd: the user is part of the credentials).
    #[error("{0}")]
    UnknownUser(String),
    /// A path that cannot be resolved, such as `~other` (400).
    #[error("error expanding and resolving path '{path}': {reason}")]
    BadPath { path: String, reason: String },
    /// The download's path is missing (404).
    #[error("path '{}' does not exist", .0.display())]
    NotFound(PathBuf),
    /// A download of a directory (400).
    #[error("path '{}' is a directory", .0.display())]
    IsDirectory(PathBuf),
    /// An upload onto a directory (400).
    #[error("path is a directory: {}", .0.display())]
    TargetIsDirectory(PathBuf),
    /// No encoding the client accepts (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// A malformed request: content type, missing `path`, bad metadata, two parts for one
    /// target, a corrupt gzip or multipart body (400).
    #[error("{0}")]
    BadRequest(String),
    /// The disk (or its inodes) ran out (507).
    #[error("{0}")]
    NoSpace(String),
    /// The client went away mid-request; nobody reads the answer.
    #[error("the client went away: {0}")]
    ClientGone(String),
    /// Anything else on the server's side (500).
    #[error("{0}")]
    Internal(String),
}

impl FilesError {
    /// An I/O failure while doing `what`: ENOSPC/EDQUOT are 507 with envd's wording, the rest 500.
    pub fn io(what: &str, err: &io::Error) -> FilesError {
        if is_no_space(err) {
            FilesError::NoSpace(format!("{what}: not enough disk space available"))
        } else {
            FilesError::Internal(format!("{what}: {}", go_text(err)))
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            FilesError::Auth(_) | FilesError::UnknownUser(_) => StatusCode::UNAUTHORIZED,
            FilesError::BadPath { .. }
            | FilesError::IsDirectory(_)
            | FilesError::TargetIsDirectory(_)
            | FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            FilesError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            // Never seen by the client; logged as a failed request.
            FilesError::ClientGone(_) => StatusCode::BAD_REQUEST,
            FilesError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether the file system is full (blocks, inodes or quota).
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// An OS error the way Go prints it (`permission denied`), without Rust's `(os error 13)`: the
/// SDKs show envd's messages to users, and scripts match on them.
pub fn go_text(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) if err.raw_os_error().is_some() => text[..at].to_string(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "/files failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "/files refused");
        }
        let body = json!({"message": self.to_string(), "code": status.as_u16()}).to_string() + "\n";
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_like_go() {
        let err = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(go_text(&err), "permission denied");
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(
            FilesError::io(
                "error writing file",
                &io::Error::from_raw_os_error(libc::ENOSPC)
            )
            .status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
    }
}
