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

use super::gateway::{self, Route};
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
