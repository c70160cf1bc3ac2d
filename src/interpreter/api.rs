//! The HTTP API on port 49999 (code-interpreter-api.md §3): health, execute, contexts. Handlers
//! parse leniently (unknown fields and query parameters are ignored, `null` means absent) and
//! validate strictly (a non-string `code` is a 422, as in E2B's server).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::context::ExecuteRequest;
use super::env;
use super::error::ApiError;
use super::service::Interpreter;
use super::stream::EventSink;

/// Request bodies above this are refused with 413. E2B's server has no limit; code cells with
/// embedded data can be megabytes, so this is far above axum's 2 MB default.
const MAX_BODY: usize = 64 << 20;

pub fn router(state: Arc<Interpreter>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .route("/contexts", get(list_contexts).post(create_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .route("/contexts/{id}/interrupt", post(interrupt_context))
        .route("/contexts/{id}", delete(remove_context))
        .method_not_allowed_fallback(|| async {
            detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// FastAPI's shape for routing errors: `{"detail": "..."}`.
fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

async fn health() -> Json<&'static str> {
    Json("OK")
}

/// Parses a JSON object body the way FastAPI does, producing its 422 entries.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::Validation(vec![ApiError::invalid(
            "missing",
            &["body"],
            "Field required",
            Value::Null,
        )]));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.to_ascii_lowercase().contains("json") {
        let input = String::from_utf8_lossy(body).into_owned();
        return Err(ApiError::Validation(vec![ApiError::invalid(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            Value::String(input),
        )]));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::Validation(vec![ApiError::invalid(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )])),
        Err(e) => Err(ApiError::Validation(vec![json!({
            "type": "json_invalid",
            "loc": ["body", e.column()],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.to_string()},
        })])),
    }
}

/// An optional string field: absent or `null` → `None`; anything but a string → 422.
fn opt_str(body: &Map<String, Value>, key: &str, errors: &mut Vec<Value>) -> Option<String> {
    match body.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(ApiError::invalid(
                "string_type",
                &["body", key],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    }
}

async fn execute(
    State(state): State<Arc<Interpreter>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_body(&headers, &body)?;
    let mut errors = Vec::new();
    let code = opt_str(&body, "code", &mut errors);
    if code.is_none() && !body.contains_key("code") {
        errors.push(ApiError::invalid(
            "missing",
            &["body", "code"],
            "Field required",
            Value::Object(body.clone()),
        ));
    } else if code.is_none() && errors.is_empty() {
        errors.push(ApiError::invalid(
            "string_type",
            &["body", "code"],
            "Input should be a valid string",
            Value::Null,
        ));
    }
    let context_id = opt_str(&body, "context_id", &mut errors);
    let language = opt_str(&body, "language", &mut errors);
    let mut env_vars = Vec::new();
    match body.get("env_vars") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => env_vars.push((k.clone(), s.clone())),
                    other => errors.push(ApiError::invalid(
                        "string_type",
                        &["body", "env_vars", k],
                        "Input should be a valid string",
                        other.clone(),
                    )),
                }
            }
        }
        Some(other) => errors.push(ApiError::invalid(
            "dict_type",
            &["body", "env_vars"],
            "Input should be a valid dictionary",
            other.clone(),
        )),
    }
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|t| t > 0.0 && t.is_finite()) => {
            n.as_f64()
        }
        Some(other) => {
            errors.push(ApiError::invalid(
                "greater_than",
                &["body", "timeout"],
                "Input should be a positive number of seconds",
                other.clone(),
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some((bad, _)) = env_vars.iter().find(|(k, _)| !env::valid_key(k)) {
        return Err(ApiError::BadRequest(format!(
            "Invalid environment variable name '{bad}': names must match ^[A-Za-z_][A-Za-z0-9_]*$"
        )));
    }
    if let Some((k, _)) = env_vars.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ApiError::BadRequest(format!(
            "Environment variable '{k}' contains a NUL byte"
        )));
    }

    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let sink = EventSink::new(tx, state.keepalive);
    let req = ExecuteRequest {
        code: code.unwrap_or_default(),
        env_vars,
        timeout,
    };

    // Routing errors are real status codes; a lazily created default context starts its kernel
    // here, before the 200 headers (as E2B's server does).
    let ctx = state
        .contexts
        .route(context_id.as_deref(), language.as_deref())
        .await?;
    tokio::spawn(ctx.execute(req, sink));

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    // No Content-Type, as E2B's server: the SDKs ignore it.
    Ok(Response::builder()
        .status(StatusCode::OK)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn context_json(ctx: &super::context::Context) -> Value {
    json!({"id": ctx.id, "language": ctx.language, "cwd": ctx.cwd.to_string_lossy()})
}

async fn list_contexts(State(state): State<Arc<Interpreter>>) -> Json<Value> {
    Json(Value::Array(
        state
            .contexts
            .list()
            .iter()
            .map(|c| context_json(c))
            .collect(),
    ))
}

async fn create_context(
    State(state): State<Arc<Interpreter>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&headers, &body)?;
    let mut errors = Vec::new();
    let language = opt_str(&body, "language", &mut errors);
    let cwd = opt_str(&body, "cwd", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let ctx = state
        .contexts
        .create(language.as_deref(), cwd.as_deref())
        .await?;
    Ok(Json(context_json(&ctx)))
}

async fn restart_context(
    State(state): State<Arc<Interpreter>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.contexts.restart(&id).await?;
    Ok(Json(Value::Null))
}

async fn interrupt_context(
    State(state): State<Arc<Interpreter>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.contexts.get(&id)?.interrupt();
    Ok(Json(Value::Null))
}

async fn remove_context(
    State(state): State<Arc<Interpreter>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.contexts.remove(&id).await?;
    Ok(Json(Value::Null))
}
