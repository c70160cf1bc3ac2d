//! The sandbox API on port 49983, compatible with E2B's envd: what `sbx.files`, `sbx.commands`
//! and `sbx.pty` of the official SDKs call (`../shared/spec/envd-api.md`).
//!
//! - `users`: Linux accounts and how a request's paths resolve for them;
//! - `error`: Connect error codes and the one place envd errors become HTTP;
//! - `files`: plain HTTP `GET`/`POST /files` (download, upload, signed URLs);
//! - `token`: constant-time comparison of access tokens.
//!
//! Like `interpreter`, this module does not know who serves it: the agent mounts [`router`] on a
//! listener and hands it the settings a control plane may change at run time.

pub mod error;
pub mod files;
pub mod token;
pub mod users;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

pub use error::{Code, EnvdError};
pub use users::User;

/// Name prefix of the temporary file an upload streams into before it is renamed over its target
/// (see [`files`]). Directory watchers hide entries with this prefix, so a write shows up as
/// events on the target's name only.
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

/// The envd service's state.
pub struct Envd {
    settings: RwLock<Settings>,
    /// The user the agent runs as.
    own_user: User,
}

impl Envd {
    pub fn new(settings: Settings) -> Result<Arc<Envd>, EnvdError> {
        let own_user = User::current().ok_or_else(|| {
            EnvdError::internal("the agent's own user is not in the user database")
        })?;
        Ok(Arc::new(Envd {
            settings: RwLock::new(settings),
            own_user,
        }))
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

/// envd's routes.
pub fn router(envd: Arc<Envd>) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(files::routes())
        .with_state(envd)
}

/// `GET /health`: 204, never authenticated; the SDKs' `is_running()`.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}
