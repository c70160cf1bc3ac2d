//! The gateway: picks the sandbox and port a request is for, as E2B's edge proxy does
//! (`E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers, or a `<port>-<id>.<domain>` Host), and streams
//! it to that sandbox's agent over its unix socket. It only routes: the agent checks its own
//! access token, as envd does.
//!
//! Ports 49983 (sandbox API) and 49999 (code interpreter) are the agent's; the agent tells them
//! apart by the `E2b-Sandbox-Port` header, which the gateway sets from whichever form named the
//! port. Other ports answer "port is not open" until sandboxes get a network of their own.

use axum::body::Body;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode};
use serde_json::json;

use super::link;
use super::sandboxes::Sandboxes;

/// The agent's sandbox API (envd-api.md).
pub const ENVD_PORT: u16 = 49983;
/// The agent's two services (envd-api.md, code-interpreter-api.md).
const AGENT_PORTS: [u16; 2] = [ENVD_PORT, 49999];

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Not for a sandbox: the control-plane API.
    Api,
    Sandbox {
        id: String,
        port: u16,
    },
    /// Names a sandbox, wrongly: 400 with this plain-text message (E2B's words).
    Invalid(&'static str),
}

/// The route of a request from its Host and the two sandbox headers.
pub fn route(host: Option<&str>, id_header: Option<&str>, port_header: Option<&str>) -> Route {
    match (id_header, port_header) {
        (None, None) => {}
        (Some(id), Some(port)) => return target(id, port),
        _ => return Route::Invalid("missing header"),
    }
    let Some(host) = host else {
        return Route::Api;
    };
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let Some((label, _domain)) = name.split_once('.') else {
        return Route::Api;
    };
    match label.split_once('-') {
        Some((port, id)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            target(id, port)
        }
        _ => Route::Api,
    }
}

fn target(id: &str, port: &str) -> Route {
    let Ok(port) = port.trim().parse::<u16>() else {
        return Route::Invalid("Invalid sandbox port");
    };
    let id = id.trim();
    // E2B's ids are `[a-z0-9]+`; `_` lets the SDKs' debug id through (it is then not found).
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Route::Invalid("Invalid sandbox ID");
    }
    Route::Sandbox {
        id: id.to_string(),
        port,
    }
}

/// Streams `request` to sandbox `id`'s agent and its answer back.
pub async fn forward(
    sandboxes: &Sandboxes,
    id: &str,
    port: u16,
    request: Request<Body>,
) -> Response<Body> {
    let Some(socket) = sandboxes.socket(id) else {
        return gone(id, "The sandbox was not found", None);
    };
    if !AGENT_PORTS.contains(&port) {
        return gone(
            id,
            "The sandbox is running but port is not open",
            Some(port),
        );
    }
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut upstream = Request::builder().method(parts.method).uri(path);
    if let Some(headers) = upstream.headers_mut() {
        copy_end_to_end(&parts.headers, headers);
        headers.insert(
            HeaderName::from_static("e2b-sandbox-port"),
            HeaderValue::from(port),
        );
    }
    let Ok(upstream) = upstream.body(body) else {
        return gone(
            id,
            "The sandbox is running but port is not open",
            Some(port),
        );
    };
    match link::send(&socket, upstream).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = parts.status;
            copy_end_to_end(&parts.headers, response.headers_mut());
            response
        }
        Err(e) => {
            tracing::warn!(sandbox = %id, port, "gateway: {e:?}");
            if sandboxes.socket(id).is_some() {
                gone(
                    id,
                    "The sandbox is running but port is not open",
                    Some(port),
                )
            } else {
                gone(id, "The sandbox was not found", None)
            }
        }
    }
}

/// Headers that describe one hop's connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) && name.as_str() != "upgrade" {
            to.append(name.clone(), value.clone());
        }
    }
}

/// E2B's 502 bodies, matched by substring in the SDKs ("was not found" → the sandbox is gone,
/// "port is not open" → unreachable): keep them byte for byte.
fn gone(id: &str, message: &str, port: Option<u16>) -> Response<Body> {
    let mut body = json!({"sandboxId": id, "message": message});
    if let Some(port) = port {
        body["port"] = json!(port);
    }
    body["code"] = json!(502);
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The plain-text 400 for a request that names a sandbox wrongly.
pub fn invalid(message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sbx(id: &str, port: u16) -> Route {
        Route::Sandbox {
            id: id.into(),
            port,
        }
    }

    #[test]
    fn headers_win_then_the_host_names_port_and_id() {
        assert_eq!(route(Some("localhost:3000"), None, None), Route::Api);
        assert_eq!(route(Some("api.example.com"), None, None), Route::Api);
        assert_eq!(route(None, None, None), Route::Api);
        assert_eq!(
            route(Some("localhost:3000"), Some("abc123"), Some("49983")),
            sbx("abc123", 49983)
        );
        assert_eq!(
            route(Some("49999-abc123.example.com"), None, None),
            sbx("abc123", 49999)
        );
        assert_eq!(
            route(Some("49999-abc123.localhost:3000"), None, None),
            sbx("abc123", 49999)
        );
        assert_eq!(
            route(Some("localhost"), Some("abc"), None),
            Route::Invalid("missing header")
        );
        assert_eq!(
            route(None, Some("abc"), Some("http")),
            Route::Invalid("Invalid sandbox port")
        );
        assert_eq!(
            route(None, Some("ABC-1"), Some("49983")),
            Route::Invalid("Invalid sandbox ID")
        );
        assert_eq!(
            route(None, Some("debug_sandbox_id"), Some("49983")),
            sbx("debug_sandbox_id", 49983)
        );
    }

    #[tokio::test]
    async fn the_502_bodies_are_e2bs() {
        let answer = gone("abc", "The sandbox was not found", None);
        assert_eq!(answer.status(), 502);
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"sandboxId":"abc","message":"The sandbox was not found","code":502}"#
        );
        let answer = gone(
            "abc",
            "The sandbox is running but port is not open",
            Some(8080),
        );
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"sandboxId":"abc","message":"The sandbox is running but port is not open","port":8080,"code":502}"#
        );
    }
}
