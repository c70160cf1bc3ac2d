//! `kernelbox agent`: the process inside a sandbox. It starts the default contexts, then serves
//! the interpreter API on its port (and, once the sandbox API exists, that on its own port), with
//! CORS and routing by the `E2b-Sandbox-Port` header so a single URL serves both
//! (`E2B_SANDBOX_URL`). Kernels are shut down with the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::interpreter::{self, ContextDefaults, Contexts, Interpreter};

/// The interpreter's port in E2B's sandboxes.
pub const INTERPRETER_PORT: u16 = 49999;
/// envd's port; the sandbox API will live here.
pub const ENVD_PORT: u16 = 49983;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub home: PathBuf,
    /// Where kernelspecs are read from (`$KERNELBOX_HOME/kernels` unless set).
    pub kernels_dir: Option<PathBuf>,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Languages whose contexts exist from start-up.
    pub default_languages: Vec<String>,
    pub keepalive: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the default {language} context did not start: {reason}")]
    DefaultContext { language: String, reason: String },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let runtime_dir = config
        .home
        .join("run")
        .join(format!("agent-{}", std::process::id()));
    crate::sys::private_dir(&runtime_dir).map_err(|source| AgentError::Dir {
        path: runtime_dir.display().to_string(),
        source,
    })?;
    let contexts = Contexts::new(ContextDefaults {
        home: config.home.clone(),
        kernels_dir: config
            .kernels_dir
            .clone()
            .unwrap_or_else(|| config.home.join("kernels")),
        runtime_dir: runtime_dir.clone(),
        workdir: config.workdir.clone(),
        env: config.env.clone(),
    });
    let state = Arc::new(Interpreter {
        contexts,
        keepalive: config.keepalive,
    });

    // Default contexts start in parallel; python is required, the others are best effort (they
    // are created again lazily on first use).
    let starts = config.default_languages.iter().map(|lang| {
        let state = state.clone();
        async move { (lang.clone(), state.contexts.default_for(lang).await) }
    });
    for (language, result) in futures_util::future::join_all(starts).await {
        match result {
            Ok(ctx) => tracing::info!(%language, id = %ctx.id, "default context ready"),
            Err(e) if language == "python" => {
                state.contexts.shutdown_all().await;
                return Err(AgentError::DefaultContext {
                    language,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                tracing::warn!(%language, error = %e, "default context did not start; it will be created on first use")
            }
        }
    }

    let addr = SocketAddr::new(config.addr, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(AgentError::Serve)?;
    let app = app(state.clone());
    // Tests and start-up scripts wait for this line; it comes only once contexts are ready.
    println!("kernelbox agent listening on http://{local}");
    tracing::info!(%local, "interpreter API ready");

    // On SIGTERM the kernels go first, which ends running executions with an error line, so
    // the graceful stop does not wait on streams that could run forever.
    let stopping = state.clone();
    let listener = NoDelay(listener);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.contexts.shutdown_all().await;
        })
        .await;
    let _ = std::fs::remove_dir_all(&runtime_dir);
    served.map_err(AgentError::Serve)
}

/// Accepts with `TCP_NODELAY`: small NDJSON lines must not sit in Nagle's buffer waiting for a
/// delayed ACK (40 ms a line). The plain `TcpStream` keeps vectored writes, so hyper queues large
/// chunks instead of copying them into its own buffer.
struct NoDelay(tokio::net::TcpListener);

impl axum::serve::Listener for NoDelay {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The full HTTP app: port dispatch, CORS and the interpreter routes.
pub fn app(state: Arc<Interpreter>) -> Router {
    interpreter::router(state)
        .layer(axum::middleware::from_fn(by_sandbox_port))
        .layer(axum::middleware::from_fn(cors))
        .layer(axum::middleware::from_fn(trace))
}

async fn trace(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

/// Requests that name another sandbox port through `E2b-Sandbox-Port` are for that service.
/// Only the interpreter exists so far; anything else gets the answer E2B's proxy gives for a port
/// nobody listens on.
async fn by_sandbox_port(req: Request, next: Next) -> Response {
    let port = req
        .headers()
        .get("e2b-sandbox-port")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok());
    match port {
        None | Some(INTERPRETER_PORT) => next.run(req).await,
        Some(port) => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "message": "The sandbox is running but port is not open",
                "port": port,
                "code": 502,
            })
            .to_string(),
        )
            .into_response(),
    }
}

/// CORS `*`, as E2B's server (code-interpreter-api.md §3.1).
async fn cors(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        let mut res = Response::new(Body::from("OK"));
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        if let Some(requested) = requested {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return res;
    }
    let mut res = next.run(req).await;
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
