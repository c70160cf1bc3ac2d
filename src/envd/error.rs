//! envd's errors: Connect error codes, and the one place they become HTTP. RPCs answer
//! `{"code","message"}` with the code's status (Connect's table); `/files` answers
//! `{"message","code":<status>}` as envd's HTTP handlers do.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The Connect protocol's error codes (connectrpc.com/docs/protocol#error-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (envd-api.md §3.3).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A failed envd call: a code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EnvdError {
    pub code: Code,
    pub message: String,
}

impl EnvdError {
    pub fn new(code: Code, message: impl Into<String>) -> EnvdError {
        EnvdError {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> EnvdError {
        Self::new(Code::NotFound, message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> EnvdError {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn already_exists(message: impl Into<String>) -> EnvdError {
        Self::new(Code::AlreadyExists, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> EnvdError {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn internal(message: impl Into<String>) -> EnvdError {
        Self::new(Code::Internal, message)
    }

    /// An I/O error about `what` (usually a path), with the code envd gives it.
    pub fn io(what: &str, err: &std::io::Error) -> EnvdError {
        use std::io::ErrorKind;
        let code = match err.kind() {
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::InvalidInput => {
                Code::InvalidArgument
            }
            ErrorKind::StorageFull => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        Self::new(code, format!("{what}: {err}"))
    }

    /// The Connect end-stream / unary error object.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"code": self.code.as_str(), "message": self.message})
    }
}

/// A unary Connect error response.
impl IntoResponse for EnvdError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        if status.is_server_error() {
            tracing::warn!(code = self.code.as_str(), error = %self.message, "envd call failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json().to_string(),
        )
            .into_response()
    }
}
