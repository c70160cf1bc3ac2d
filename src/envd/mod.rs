//! The sandbox API on port 49983, compatible with E2B's envd: what `sbx.files`, `sbx.commands`
//! and `sbx.pty` of the official SDKs call (`../shared/spec/envd-api.md`).
//!
//! - `users`: Linux accounts and how a request's paths resolve for them;
//! - `auth`: the access token; `init`: the control plane's init call and `/envs`;
//!   `metrics`: `/metrics`;
//! - `files`: plain HTTP `GET`/`POST /files` (download, upload, signed URLs);
//! - `error`: Connect error codes and the one place envd errors become HTTP;
//! - `connect`: the Connect RPC protocol (JSON and binary protobuf codecs): unary, server- and
//!   client-stream handlers for axum, envelopes, deadlines, keepalives, the proto3 JSON mapping
//!   for serde messages and the protobuf wire format;
//! - `rpc`: the services' request and response messages, one file per protobuf package;
//! - `filesystem`: the `filesystem.Filesystem` service (stat, list, make, move, remove, watch);
//! - `process`: commands and terminals (`process.Process`).
//!
//! Like `interpreter`, this module does not know who serves it: the agent mounts [`router`] on a
//! listener and hands it the settings a control plane may change at run time.

pub mod auth;
pub mod connect;
pub mod error;
pub mod files;
pub mod filesystem;
pub mod init;
pub mod metrics;
pub mod process;
pub mod rpc;
pub mod users;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;

pub use error::{Code, EnvdError};
pub use users::User;

/// The name prefix of the temporary files that `/files` uploads write next to their target
/// before renaming them into place. Watchers hide these names and report the rename as a write
/// of the target (see `filesystem::watch`).
pub const UPLOAD_TEMP_PREFIX: &str = ".kernelbox-upload-";

/// What a control plane can change on a running agent (envd's `POST /init`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// With a token, every call but `/health` and signed `/files` URLs must carry it.
    pub access_token: Option<String>,
    /// Sandbox-level environment variables, for every command.
    pub env: Vec<(String, String)>,
    /// The user a request without `Authorization: Basic` acts as. `None`: the agent's own user,
    /// whose home is then the workdir (an agent outside a sandbox must not resolve paths into the
    /// real home of whoever started it).
    pub default_user: Option<String>,
    /// Where an empty path points, and the cwd of commands that name none.
    pub workdir: PathBuf,
}

/// Who a request acts as, and the home its paths resolve against.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub home: PathBuf,
    pub workdir: PathBuf,
}

impl Caller {
    /// Resolves a request's path for this caller (see [`users::resolve`]).
    pub fn path(&self, path: &str) -> PathBuf {
        users::resolve(path, &self.home, &self.workdir)
    }
}

/// Called with the sandbox env vars an init call set, so that whoever else runs code (the
/// interpreter's kernels) gets them too. envd does not know who that is; the agent wires it.
pub type EnvHook =
    Arc<dyn Fn(Vec<(String, String)>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The envd service's state.
pub struct Envd {
    settings: RwLock<Settings>,
    /// The user the agent runs as.
    own_user: User,
    env_hook: RwLock<Option<EnvHook>>,
    cpu: metrics::CpuSampler,
    /// Commands and terminals; dropping them kills what still runs.
    processes: process::Processes,
}

impl Envd {
    pub fn new(settings: Settings) -> Result<Arc<Envd>, EnvdError> {
        let own_user = User::current().ok_or_else(|| {
            EnvdError::internal("the agent's own user is not in the user database")
        })?;
        Ok(Arc::new(Envd {
            settings: RwLock::new(settings),
            own_user,
            env_hook: RwLock::default(),
            cpu: metrics::CpuSampler::default(),
            processes: process::Processes::new(process::ProcessOptions::under(
                &crate::config::home(),
            )),
        }))
    }

    /// Sets who else gets the env vars of an init call.
    pub fn on_env_change(&self, hook: EnvHook) {
        *self.env_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn env_hook(&self) -> Option<EnvHook> {
        self.env_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `Ok` when no access token is configured or `headers` carry it.
    pub fn check_token(&self, headers: &HeaderMap) -> Result<(), EnvdError> {
        let token = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access_token
            .clone();
        auth::check(token.as_deref(), headers)
    }

    /// A snapshot of the current settings.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the settings (the init call).
    pub fn update(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.settings.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// The processes started through the sandbox API.
    pub fn processes(&self) -> &process::Processes {
        &self.processes
    }

    /// The caller a request acts as: `username` (from `Authorization: Basic` or `?username=`),
    /// else the default user. An unknown user is `unauthenticated`, as in envd.
    pub fn caller(&self, username: Option<&str>) -> Result<Caller, EnvdError> {
        let settings = self.settings();
        let workdir = settings.workdir.clone();
        let name = username
            .filter(|n| !n.is_empty())
            .or(settings.default_user.as_deref());
        let Some(name) = name else {
            return Ok(Caller {
                user: self.own_user.clone(),
                home: workdir.clone(),
                workdir,
            });
        };
        let user = User::lookup(name).map_err(|e| EnvdError::unauthenticated(e.to_string()))?;
        Ok(Caller {
            home: user.home.clone(),
            user,
            workdir,
        })
    }
}

/// envd's routes: the open ones (`/health`, `/init` which checks the token itself), and the
/// rest behind the access token.
pub fn router(envd: Arc<Envd>) -> Router {
    let protected = Router::new()
        .route("/envs", get(init::envs))
        .route("/metrics", get(metrics::metrics))
        .merge(process::rpc::routes())
        .with_state(envd.clone())
        .merge(filesystem::router(envd.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            envd.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/init", post(init::init))
        .merge(files::routes())
        .with_state(envd)
        .merge(protected)
}

/// `GET /health`: 204, never authenticated; the SDKs' `is_running()`.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}
