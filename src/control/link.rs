//! HTTP/1.1 to a sandbox's agent over its unix socket: one connection per request (a connect on
//! a local socket costs tens of microseconds, and a connection that carried a stream the client
//! abandoned must close anyway so the agent sees the disconnect).

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Why a request could not reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to the agent's socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP to the agent: {0}")]
    Http(#[from] hyper::Error),
}

/// Sends `request` (origin-form URI, e.g. `/health`) to the agent at `socket`.
pub async fn send(socket: &Path, request: Request<Body>) -> Result<Response<Incoming>, LinkError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(LinkError::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("agent connection: {e}");
        }
    });
    Ok(sender.send_request(request).await?)
}

/// Waits until the agent answers `GET /health` with 204, polling every 5 ms for up to
/// `patience`; `false` if it never does.
pub async fn wait_healthy(socket: &Path, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let request = Request::get("/health")
            .header("host", "sandbox")
            .body(Body::empty());
        if let Ok(request) = request {
            if let Ok(Ok(answer)) =
                tokio::time::timeout(Duration::from_secs(2), send(socket, request)).await
            {
                if answer.status() == StatusCode::NO_CONTENT {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// envd's `POST /init` with a JSON body; `Err` with the agent's answer unless it is 204.
pub async fn init(
    socket: &Path,
    body: &serde_json::Value,
    token: Option<&str>,
) -> Result<(), String> {
    let mut request = Request::post("/init")
        .header("host", "sandbox")
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("x-access-token", token);
    }
    let request = request
        .body(Body::from(body.to_string()))
        .map_err(|e| e.to_string())?;
    let answer = send(socket, request).await.map_err(|e| e.to_string())?;
    if answer.status() == StatusCode::NO_CONTENT {
        Ok(())
    } else {
        Err(format!("the agent's init answered {}", answer.status()))
    }
}
