//! Every way a 49999 request can fail, and the one place they become HTTP responses.
//! Bodies follow E2B's server: plain text for handler errors, FastAPI's shape for 422.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::contexts::ContextError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Context {0} not found")]
    ContextNotFound(String),
    #[error("Failed to create context: {0}")]
    CreateContext(String),
    #[error("Failed to set working directory: {0}")]
    WorkingDirectory(String),
    #[error("Failed to restart context {id}: {reason}")]
    Restart { id: String, reason: String },
    /// Request validation, FastAPI-style: the list of `detail` entries.
    #[error("validation failed")]
    Validation(Vec<Value>),
}

impl From<ContextError> for ApiError {
    fn from(e: ContextError) -> ApiError {
        match e {
            ContextError::NotFound(id) => ApiError::ContextNotFound(id),
            ContextError::Ambiguous => ApiError::BadRequest(e.to_string()),
            ContextError::NoKernel(message) | ContextError::Start(message) => {
                ApiError::CreateContext(message)
            }
            ContextError::WorkingDirectory(message) => ApiError::WorkingDirectory(message),
            ContextError::Restart { id, reason } => ApiError::Restart { id, reason },
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::ContextNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::CreateContext(_)
            | ApiError::WorkingDirectory(_)
            | ApiError::Restart { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// One FastAPI validation entry.
    pub fn invalid(kind: &str, loc: &[&str], msg: &str, input: Value) -> Value {
        json!({"type": kind, "loc": loc, "msg": msg, "input": input})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request rejected");
        }
        match self {
            ApiError::Validation(detail) => (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "detail": detail }).to_string(),
            )
                .into_response(),
            other => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                other.to_string(),
            )
                .into_response(),
        }
    }
}
