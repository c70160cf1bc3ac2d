//! `kernelbox agent`: the process inside a sandbox. It starts the services (the interpreter today,
//! the sandbox API later), serves each on its own port from one runtime, and stops them all when
//! its shutdown future resolves.
//!
//! Every listener answers for every service: a request naming a sandbox port in
//! `E2b-Sandbox-Port` goes to that port's service, so a single URL (`E2B_SANDBOX_URL`) serves them
//! all. CORS and request tracing wrap everything. Kernels are shut down with the agent.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::envd::{self, Envd, EnvdError};
use crate::interpreter::{self, Interpreter, InterpreterOptions, StartError};

/// The interpreter's port in E2B's sandboxes.
pub const INTERPRETER_PORT: u16 = 49999;
/// envd's port: the sandbox API.
pub const ENVD_PORT: u16 = 49983;

/// The header E2B's clients use to name the sandbox port a request is for.
const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";
/// After a failed accept (out of file descriptors and the like): how long to back off instead of
/// spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long browsers may cache a CORS preflight answer (E2B's server sends the same).
const CORS_MAX_AGE_SECS: &str = "600";

/// The two lines an agent prints on stdout, from which whoever started it (tests, the benchmark,
/// the soak) reads its addresses. The interpreter's comes last, once its contexts are ready.
const ENVD_READY: &str = "kernelbox sandbox API on ";
const READY: &str = "kernelbox agent listening on ";

/// One of an agent's ready lines, read back by the process that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyLine {
    /// The sandbox API's URL.
    SandboxApi(String),
    /// The interpreter's URL: the agent is ready.
    Interpreter(String),
}

impl ReadyLine {
    pub fn parse(line: &str) -> Option<ReadyLine> {
        let url = |rest: &str| rest.trim().to_string();
        if let Some(rest) = line.strip_prefix(ENVD_READY) {
            Some(ReadyLine::SandboxApi(url(rest)))
        } else {
            line.strip_prefix(READY)
                .map(|rest| ReadyLine::Interpreter(url(rest)))
        }
    }
}

/// `kernelbox agent` from `bin` on loopback, both services on free ports, in `workdir`: how the
/// tests, the benchmark and the soak start their own agents (they add their own options).
pub fn loopback_command(bin: &Path, workdir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "agent",
        "--addr",
        "127.0.0.1",
        "--port",
        "0",
        "--envd-port",
        "0",
    ])
    .arg("--workdir")
    .arg(workdir);
    cmd
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub addr: std::net::IpAddr,
    /// The interpreter's port (0 picks a free one).
    pub port: u16,
    /// The sandbox API's port (0 picks a free one). Both listeners serve both services through
    /// `E2b-Sandbox-Port`.
    pub envd_port: u16,
    /// Also serve both services on this unix socket (its default service: the sandbox API).
    pub unix_socket: Option<PathBuf>,
    /// Required on the sandbox API and on `/execute` when set (the init call can set it later).
    pub access_token: Option<String>,
    pub home: PathBuf,
    /// Where kernelspecs are read from (`$KERNELBOX_HOME/kernels` unless set).
    pub kernels_dir: Option<PathBuf>,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Languages whose contexts exist from start-up.
    pub default_languages: Vec<String>,
    pub keepalive: Duration,
}

impl AgentConfig {
    fn interpreter_options(&self, runtime_dir: &Path) -> InterpreterOptions {
        InterpreterOptions {
            home: self.home.clone(),
            kernels_dir: self.kernels_dir.clone(),
            runtime_dir: runtime_dir.to_path_buf(),
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            default_languages: self.default_languages.clone(),
            keepalive: self.keepalive,
        }
    }
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
    #[error(transparent)]
    Interpreter(#[from] StartError),
    #[error("cannot start the sandbox API: {0}")]
    Envd(#[from] EnvdError),
    #[error("cannot listen on {path}: {source}")]
    Unix {
        path: String,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Runs the agent until `shutdown` resolves (see [`shutdown_signal`]): starts the interpreter,
/// serves it, and on shutdown stops its kernels before the servers.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let runtime_dir = RuntimeDir::create(&config.home)?;
    let interpreter = Interpreter::start(config.interpreter_options(runtime_dir.path())).await?;
    let envd = Envd::new(envd::Settings {
        workdir: config.workdir.clone(),
        env: config.env.clone(),
        access_token: config.access_token.clone(),
        ..Default::default()
    })?;
    let kernels = interpreter.clone();
    envd.on_env_change(Arc::new(move |vars| {
        let kernels = kernels.clone();
        Box::pin(async move { kernels.set_sandbox_env(&vars).await })
    }));
    let sandbox_api = Service::bind(
        ENVD_PORT,
        SocketAddr::new(config.addr, config.envd_port),
        envd::router(envd.clone()),
    )
    .await?;
    let service = Service::bind(
        INTERPRETER_PORT,
        SocketAddr::new(config.addr, config.port),
        interpreter::router(interpreter.clone()).layer(axum::middleware::from_fn_with_state(
            envd,
            execute_needs_token,
        )),
    )
    .await?;
    let mut agent = Agent::new();
    if let Some(path) = &config.unix_socket {
        agent = agent.unix_socket(bind_unix(path)?, ENVD_PORT);
    }
    println!("{ENVD_READY}http://{}", sandbox_api.local_addr);
    tracing::info!(local = %sandbox_api.local_addr, "sandbox API ready");
    // Tests and start-up scripts wait for this line; it comes only once contexts are ready.
    println!("{READY}http://{}", service.local_addr);
    tracing::info!(local = %service.local_addr, "interpreter API ready");

    // The kernels go first, which ends running executions with an error line, so the graceful
    // stop does not wait on streams that could run forever.
    let stopping = shutdown_then(shutdown, async move { interpreter.shutdown().await });
    agent
        .service(service)
        .service(sandbox_api)
        .serve(stopping)
        .await
}

/// The official SDKs send the access token to the interpreter only with `/execute`, so that is
/// where it is required (E2B's own interpreter checks nothing).
async fn execute_needs_token(State(envd): State<Arc<Envd>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/execute" {
        if let Err(e) = envd.check_token(req.headers()) {
            return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
    }
    next.run(req).await
}

/// Binds a unix socket, replacing a stale socket file a previous run left behind.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    let bind = || tokio::net::UnixListener::bind(path);
    let listener = match bind() {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let _ = std::fs::remove_file(path);
            bind()
        }
        other => other,
    };
    listener.map_err(|source| AgentError::Unix {
        path: path.display().to_string(),
        source,
    })
}

/// `first`, then `then`.
async fn shutdown_then(first: impl Future<Output = ()>, then: impl Future<Output = ()>) {
    first.await;
    then.await;
}

/// This agent's private folder for connection files, removed when the agent ends.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create(home: &Path) -> Result<RuntimeDir, AgentError> {
        let dir = home
            .join("run")
            .join(format!("agent-{}", std::process::id()));
        crate::sys::private_dir(&dir).map_err(|source| AgentError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(RuntimeDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP service of the agent: the sandbox port it stands for in E2B, its bound listener and
/// its routes.
pub struct Service {
    sandbox_port: u16,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    router: Router,
}

impl Service {
    /// Binds `addr` (port 0 picks a free one) for the service E2B knows as `sandbox_port`.
    pub async fn bind(
        sandbox_port: u16,
        addr: SocketAddr,
        router: Router,
    ) -> Result<Service, AgentError> {
        let bind_err = |source| AgentError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Service {
            sandbox_port,
            listener,
            local_addr,
            router,
        })
    }

    /// Where the service actually listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// The services of one agent, served together from one runtime.
#[derive(Default)]
pub struct Agent {
    services: Vec<Service>,
    /// A unix socket that answers for every service too (a control plane reaches an agent in a
    /// sandbox this way, never over the host network), with the port it defaults to.
    unix: Option<(tokio::net::UnixListener, u16)>,
}

impl Agent {
    pub fn new() -> Agent {
        Agent::default()
    }

    /// Adds a service.
    pub fn service(mut self, service: Service) -> Agent {
        self.services.push(service);
        self
    }

    /// Also serves every service on a unix socket; requests that name no port go to
    /// `default_port`'s service.
    pub fn unix_socket(mut self, listener: tokio::net::UnixListener, default_port: u16) -> Agent {
        self.unix = Some((listener, default_port));
        self
    }

    /// Serves every service until `shutdown` resolves, then stops accepting and waits for the
    /// requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let routes: Arc<HashMap<u16, Router>> = Arc::new(
            self.services
                .iter()
                .map(|s| (s.sandbox_port, s.router.clone()))
                .collect(),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let dispatch = |own_port| {
            app(Dispatch {
                routes: routes.clone(),
                own_port,
            })
        };
        let mut servers: Vec<futures_util::future::BoxFuture<'static, std::io::Result<()>>> =
            Vec::new();
        for service in self.services {
            // Identity `/files` transfers are served by the agent itself (splice, sendfile),
            // the rest by hyper: see `envd::files::connection`.
            let served = crate::envd::files::connection::serve(
                NoDelay(service.listener),
                dispatch(service.sandbox_port),
                stopped(stop_rx.clone()),
            );
            servers.push(Box::pin(served));
        }
        if let Some((listener, port)) = self.unix {
            let served = axum::serve(listener, dispatch(port))
                .with_graceful_shutdown(stopped(stop_rx.clone()));
            servers.push(Box::pin(served.into_future()));
        }
        let all = futures_util::future::try_join_all(servers);
        tokio::pin!(all);
        tokio::select! {
            served = &mut all => return served.map(drop).map_err(AgentError::Serve),
            () = shutdown => {}
        }
        let _ = stop_tx.send(true);
        all.await.map(drop).map_err(AgentError::Serve)
    }
}

/// Accepts with `TCP_NODELAY`: small NDJSON lines must not sit in Nagle's buffer waiting for a
/// delayed ACK (40 ms a line). The plain `TcpStream` keeps vectored writes, so hyper queues large
/// chunks instead of copying them into its own buffer.
pub struct NoDelay(pub tokio::net::TcpListener);

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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Which service answers a request on one listener.
#[derive(Clone)]
struct Dispatch {
    /// Every service of the agent, by sandbox port.
    routes: Arc<HashMap<u16, Router>>,
    /// The listener's own service, for requests that name no port.
    own_port: u16,
}

/// One listener's HTTP app: tracing, CORS, then dispatch by sandbox port.
fn app(dispatch: Dispatch) -> Router {
    Router::new()
        .fallback(by_sandbox_port)
        .with_state(dispatch)
        .layer(axum::middleware::from_fn(cors))
        .layer(axum::middleware::from_fn(trace))
}

async fn trace(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

/// Requests that name a sandbox port through `E2b-Sandbox-Port` are for that port's service; an
/// absent or unreadable header means the listener's own. A port no service stands for gets the
/// answer E2B's proxy gives for a port nobody listens on (envd's, until the sandbox API exists).
async fn by_sandbox_port(State(dispatch): State<Dispatch>, req: Request) -> Response {
    let port = sandbox_port(req.headers()).unwrap_or(dispatch.own_port);
    let Some(router) = dispatch.routes.get(&port) else {
        return port_not_open(port);
    };
    match router.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn sandbox_port(headers: &HeaderMap) -> Option<u16> {
    headers
        .get(SANDBOX_PORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn port_not_open(port: u16) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({
            "message": "The sandbox is running but port is not open",
            "port": port,
            "code": StatusCode::BAD_GATEWAY.as_u16(),
        })
        .to_string(),
    )
        .into_response()
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
        return preflight_response(requested);
    }
    let mut res = next.run(req).await;
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

fn preflight_response(requested_headers: Option<HeaderValue>) -> Response {
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
        HeaderValue::from_static(CORS_MAX_AGE_SECS),
    );
    if let Some(requested) = requested_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Resolves on SIGTERM or SIGINT: the agent's shutdown in production.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {

    #[test]
    fn ready_lines_read_back() {
        let line = |s: &str| ReadyLine::parse(s);
        assert_eq!(
            line(&format!("{ENVD_READY}http://127.0.0.1:1\n")),
            Some(ReadyLine::SandboxApi("http://127.0.0.1:1".into()))
        );
        assert_eq!(
            line(&format!("{READY}http://127.0.0.1:2")),
            Some(ReadyLine::Interpreter("http://127.0.0.1:2".into()))
        );
        assert_eq!(line("something else"), None);
    }

    use super::*;

    async fn service(sandbox_port: u16, answer: &'static str) -> Service {
        let router = Router::new().route("/who", axum::routing::get(move || async move { answer }));
        Service::bind(sandbox_port, ([127, 0, 0, 1], 0).into(), router)
            .await
            .expect("bind")
    }

    #[tokio::test]
    async fn every_listener_dispatches_by_sandbox_port_and_stops_on_shutdown() {
        let (a, b) = (service(1, "one").await, service(2, "two").await);
        let (a_url, b_url) = (
            format!("http://{}/who", a.local_addr()),
            format!("http://{}/who", b.local_addr()),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = Agent::new().service(a).service(b);
        let served = tokio::spawn(agent.serve(async move {
            let _ = stop_rx.await;
        }));

        let client = reqwest::Client::new();
        let get = |url: &str, port: Option<&str>| {
            let mut req = client.get(url);
            if let Some(port) = port {
                req = req.header("E2b-Sandbox-Port", port);
            }
            async move {
                let res = req.send().await.expect("request");
                (res.status().as_u16(), res.text().await.expect("body"))
            }
        };
        assert_eq!(get(&a_url, None).await, (200, "one".into()));
        assert_eq!(get(&b_url, None).await, (200, "two".into()));
        assert_eq!(get(&a_url, Some("2")).await, (200, "two".into()));
        assert_eq!(get(&b_url, Some("not a port")).await, (200, "two".into()));
        let (status, body) = get(&a_url, Some("49983")).await;
        assert_eq!(status, 502);
        assert!(body.contains("port is not open"), "{body}");

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("served");
    }
}
