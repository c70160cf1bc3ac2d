//! `kernelbox serve`'s one port: each request goes to the gateway when it names a sandbox, to
//! the API otherwise (E2B splits these over `api.<domain>` and the sandbox hosts; with
//! `E2B_API_URL` and `E2B_SANDBOX_URL` both pointing here, one port serves both).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;
use tracing::Instrument;

use super::gateway::{self, Route, ENVD_PORT};
use super::keys::ApiKeys;
use super::sandboxes::Sandboxes;
use crate::agent::NoDelay;

/// Serves the API and the gateway on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandboxes: Arc<Sandboxes>,
    keys: Arc<ApiKeys>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let api = super::api::router(Arc::clone(&sandboxes), keys);
    let app = Router::new()
        .fallback(dispatch)
        .with_state(Port { sandboxes, api });
    axum::serve(NoDelay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Clone)]
struct Port {
    sandboxes: Arc<Sandboxes>,
    api: Router,
}

async fn dispatch(State(Port { sandboxes, api }): State<Port>, request: Request) -> Response {
    let route = route_of(&request);
    let route = match route {
        Route::Api => signed_file_link(&sandboxes, &request).unwrap_or(Route::Api),
        other => other,
    };
    match route {
        Route::Api => match api.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Route::Sandbox { id, port } => {
            let span = tracing::debug_span!("gateway", sandbox = %id, port);
            gateway::forward(&sandboxes, &id, port, request)
                .instrument(span)
                .await
        }
        Route::Invalid(message) => gateway::invalid(message).into_response(),
    }
}

/// The request's route, from its Host (or URI authority, on HTTP/2) and sandbox headers.
fn route_of(request: &Request) -> Route {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header("host").or_else(|| request.uri().host());
    gateway::route(host, header("e2b-sandbox-id"), header("e2b-sandbox-port"))
}

/// A signed `download_url`/`upload_url` that names no sandbox: what the SDKs build when
/// `E2B_SANDBOX_URL` points here (`<url>/files?path=…&signature=…`). The signature was made
/// with one sandbox's access token, so the sandbox whose token reproduces it is the target.
fn signed_file_link(sandboxes: &Sandboxes, request: &Request) -> Option<Route> {
    use crate::envd::files::{signature::Operation, FileQuery};
    if request.uri().path() != "/files" {
        return None;
    }
    let operation = match *request.method() {
        axum::http::Method::GET => Operation::Read,
        axum::http::Method::POST => Operation::Write,
        _ => return None,
    };
    // Read as the agent reads it, so both check the same parameters.
    let query = FileQuery::parse(request.uri()).ok()?;
    let id = sandboxes.signed_by(
        query.path.as_deref().unwrap_or(""),
        operation,
        query.username.as_deref().unwrap_or(""),
        query.signature_expiration,
        query.signature.as_deref()?,
    )?;
    Some(Route::Sandbox {
        id,
        port: ENVD_PORT,
    })
}
