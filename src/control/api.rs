//! E2B's control-plane REST API, as the official SDKs call it (control-plane-api.md §3–§6):
//! create (v1 and v2), get, list (v1 and v2, with filters and paging), kill, timeout, connect
//! (v1 and v2) and metrics, behind `X-API-KEY`. This is the one place where a [`ControlError`]
//! becomes an HTTP answer: `{"code": <status>, "message": …}`, with `Should-Retry: false` where
//! retrying cannot help.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::db::{EndReason, Record};
use super::keys::ApiKeys;
use super::sandboxes::{CreateRequest, Sandboxes, ENVD_VERSION};
use super::ControlError;
use crate::sys::time::rfc3339_millis;

/// The most sandboxes one list page holds (E2B's `limit` maximum and default).
const PAGE_LIMIT: usize = 100;

#[derive(Clone)]
struct Api {
    sandboxes: Arc<Sandboxes>,
}

/// The API's routes, every one behind `X-API-KEY`.
pub fn router(sandboxes: Arc<Sandboxes>, keys: Arc<ApiKeys>) -> Router {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let keys = Arc::clone(&keys);
                async move { authenticate(&keys, req, next).await }
            },
        ))
        .with_state(Api { sandboxes })
}

async fn authenticate(keys: &ApiKeys, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if keys.accepts(key) {
        next.run(request).await
    } else {
        ControlError::Unauthorized.into_response()
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = json!({"code": status.as_u16(), "message": self.to_string()});
        let mut response = (status, Json(body)).into_response();
        if matches!(
            self,
            ControlError::TemplateNotFound(_)
                | ControlError::SandboxNotFound(_)
                | ControlError::BadRequest(_)
                | ControlError::Unauthorized
        ) {
            response
                .headers_mut()
                .insert("should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

async fn not_found() -> ControlError {
    ControlError::NoRoute
}

/// A JSON body, or the type's default for an empty one (the SDKs send `{}` or nothing).
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T, ControlError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError::BadRequest(format!("invalid request body: {e}")))
}

/// `NewSandbox` and `NewSandboxV2`; fields kernelbox does not act on yet (auto-pause, network
/// rules, MCP, volumes) are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    /// snake_case in E2B's API, unlike its neighbours.
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
}

async fn create(State(api): State<Api>, bytes: Bytes) -> Result<Response, ControlError> {
    let request: NewSandbox = body(&bytes)?;
    let template_id = request
        .template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ControlError::BadRequest("templateID is required".into()))?;
    let record = api
        .sandboxes
        .create(CreateRequest {
            template_id,
            timeout_secs: request.timeout,
            metadata: request.metadata.unwrap_or_default(),
            env_vars: request.env_vars.unwrap_or_default(),
            internet: request.allow_internet_access.unwrap_or(true),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(sandbox(&record))).into_response())
}

/// `Sandbox`: what create and connect answer.
fn sandbox(r: &Record) -> Value {
    json!({
        "templateID": r.template_id,
        "sandboxID": r.id,
        "clientID": r.client_id,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": r.envd_access_token,
        "trafficAccessToken": null,
        "domain": null,
    })
}

/// `ListedSandbox`; `SandboxDetail` adds the token and domain.
fn listed(r: &Record) -> Value {
    json!({
        "templateID": r.template_id,
        "sandboxID": r.id,
        "clientID": r.client_id,
        "startedAt": rfc3339_millis(r.started_at),
        "endAt": rfc3339_millis(r.end_at),
        "envdVersion": ENVD_VERSION,
        "cpuCount": r.cpu_count,
        "memoryMB": r.memory_mb,
        "diskSizeMB": 0,
        "state": "running",
        "metadata": r.metadata,
    })
}

async fn detail(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ControlError> {
    let record = api.sandboxes.get(&id)?;
    let mut value = listed(&record);
    value["envdAccessToken"] = json!(record.envd_access_token);
    value["domain"] = Value::Null;
    Ok(Json(value))
}

async fn kill(State(api): State<Api>, Path(id): Path<String>) -> Result<StatusCode, ControlError> {
    api.sandboxes.kill(&id, EndReason::Kill).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TimeoutBody {
    timeout: Option<i64>,
}

async fn set_timeout(
    State(api): State<Api>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode, ControlError> {
    let request: TimeoutBody = body(&bytes)?;
    let secs = request
        .timeout
        .filter(|t| *t >= 0)
        .ok_or_else(|| ControlError::BadRequest("timeout (seconds, >= 0) is required".into()))?;
    api.sandboxes.set_timeout(&id, secs as u64)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    State(api): State<Api>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ControlError> {
    let request: TimeoutBody = body(&bytes)?;
    let secs = request.timeout.map(|t| t.max(0) as u64);
    let record = api.sandboxes.connect(&id, secs)?;
    Ok(Json(sandbox(&record)))
}

/// `GET /sandboxes` and `/v2/sandboxes` query: filters and a page.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ListQuery {
    /// URL-encoded `key=value&…` pairs that must all match.
    metadata: Option<String>,
    /// Comma-separated states (`running`, `paused`); absent: all.
    state: Option<String>,
    /// `asc` or `desc` (default) by start time.
    order: Option<String>,
    /// Only sandboxes started after this RFC 3339 time.
    started_after: Option<String>,
    template: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(api): State<Api>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ControlError> {
    let wanted = metadata_filter(query.metadata.as_deref())?;
    let started_after = match query.started_after.as_deref().filter(|s| !s.is_empty()) {
        None => i64::MIN,
        Some(raw) => {
            let (secs, micros) = crate::sys::time::parse_rfc3339(raw).ok_or_else(|| {
                ControlError::BadRequest(format!("invalid startedAfter (RFC 3339 expected): {raw}"))
            })?;
            secs * 1000 + micros / 1000
        }
    };
    let running_wanted = query
        .state
        .as_deref()
        .is_none_or(|s| s.split(',').any(|s| s.trim() == "running"));
    let mut matching: Vec<Record> = api
        .sandboxes
        .list()
        .into_iter()
        .filter(|_| running_wanted)
        .filter(|r| wanted.iter().all(|(k, v)| r.metadata.get(k) == Some(v)))
        .filter(|r| query.template.as_deref().is_none_or(|t| r.template_id == t))
        .filter(|r| r.started_at > started_after)
        .collect();
    if query.order.as_deref() == Some("asc") {
        matching.reverse();
    }
    let total = matching.len();
    let start = match query.next_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ControlError::BadRequest("invalid nextToken".into()))?,
    };
    let limit = query.limit.unwrap_or(PAGE_LIMIT).clamp(1, PAGE_LIMIT);
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(listed)
        .collect();
    let mut headers = HeaderMap::new();
    if start + limit < total {
        headers.insert("x-next-token", HeaderValue::from(start + limit));
    }
    if running_wanted {
        headers.insert("x-total-running", HeaderValue::from(total));
    }
    Ok((headers, Json(page)).into_response())
}

/// `metadata=k%3Dv%26k2%3Dv2` (already URL-decoded once by the query parser) as pairs.
fn metadata_filter(raw: Option<&str>) -> Result<Vec<(String, String)>, ControlError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    serde_urlencoded_pairs(raw)
        .ok_or_else(|| ControlError::BadRequest(format!("invalid metadata filter: {raw}")))
}

/// `k=v&k2=v2` with percent-decoding of each side.
fn serde_urlencoded_pairs(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /sandboxes/{id}/metrics` query: a window in Unix seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetricsQuery {
    start: Option<String>,
    end: Option<String>,
}

/// One sample, taken now (kernelbox keeps no history yet): in the answer when the requested
/// window (default: all time) holds the present.
async fn metrics(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(window): Query<MetricsQuery>,
) -> Result<Json<Value>, ControlError> {
    let record = api.sandboxes.get(&id)?;
    let now = crate::sys::time::now_millis();
    let bound = |raw: Option<&str>, name: &str| -> Result<Option<i64>, ControlError> {
        raw.filter(|r| !r.is_empty())
            .map(|r| {
                r.parse::<i64>().map_err(|_| {
                    ControlError::BadRequest(format!("invalid {name} (Unix seconds expected): {r}"))
                })
            })
            .transpose()
    };
    let (start, end) = (
        bound(window.start.as_deref(), "start")?,
        bound(window.end.as_deref(), "end")?,
    );
    // A few seconds of slack: a client that asks up to "now" computed its now a moment ago.
    let now_secs = now / 1000;
    if start.is_some_and(|s| s > now_secs) || end.is_some_and(|e| e < now_secs - 5) {
        return Ok(Json(json!([])));
    }
    let usage = api.sandboxes.usage(&id).await?;
    let elapsed_ns = ((now - record.started_at).max(1) as f64) * 1e6;
    let cpu_pct = usage.cpu_nanos.map_or(0.0, |n| {
        n as f64 / (elapsed_ns * f64::from(record.cpu_count.max(1))) * 100.0
    });
    Ok(Json(json!([{
        "timestamp": rfc3339_millis(now),
        "timestampUnix": now / 1000,
        "cpuCount": record.cpu_count,
        "cpuUsedPct": cpu_pct,
        "memUsed": usage.memory_bytes,
        "memTotal": usage.memory_limit_bytes.unwrap_or(record.memory_mb * 1024 * 1024),
        "memCache": 0,
        "diskUsed": 0,
        "diskTotal": 0,
    }])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_decode_pairs() {
        assert_eq!(
            metadata_filter(Some("user=abc&app=pr%26od")).expect("ok"),
            vec![
                ("user".to_string(), "abc".to_string()),
                ("app".to_string(), "pr&od".to_string())
            ]
        );
        assert!(metadata_filter(Some("novalue")).is_err());
        assert!(metadata_filter(None).expect("ok").is_empty());
    }
}
