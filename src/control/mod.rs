//! The control plane (`kernelbox serve`): E2B's sandbox REST API and the gateway that routes SDK
//! traffic to each sandbox's agent, on one port.
//!
//! Files, top to bottom:
//! - [`server`]: the port: a request that names a sandbox (`E2b-Sandbox-Id`/`-Port` headers or a
//!   `<port>-<id>.<domain>` Host) goes to the [`gateway`], anything else to the [`api`].
//! - [`api`]: E2B's routes (`/sandboxes`, `/v2/sandboxes`, …), `X-API-KEY`, and the one place
//!   where [`ControlError`] becomes an HTTP answer in E2B's error shape.
//! - [`gateway`]: picks the target from headers or Host and streams the request to the agent's
//!   unix socket and the answer back, with E2B's 502 bodies when the sandbox is gone.
//! - [`sandboxes`]: the lifecycle: create from a template, hand the agent its token, env vars and
//!   user through its init call, deadlines (a reaper task), kill with a recorded reason, reclaim
//!   of what a previous run left.
//! - [`pool`]: the warm pool: sandboxes per template started ahead of demand, handed out by an
//!   init call, refilled in the background.
//! - [`db`]: the records in SQLite (`$KERNELBOX_HOME/serve/state.db`): sandboxes, deadlines,
//!   metadata, end reasons; what survives a restart.
//! - [`keys`]: API keys in `$KERNELBOX_HOME/serve/api-keys`, one made on first start.
//! - [`link`]: HTTP/1.1 to an agent over its unix socket (health, init, the gateway's requests).
//!
//! Below it: [`crate::sandbox`] (the backend) and [`crate::template`] (the layers). It never
//! reaches into a sandbox but through the agent's API.

pub mod api;
pub mod db;
pub mod gateway;
pub mod keys;
pub mod link;
pub mod pool;
pub mod sandboxes;
pub mod server;

pub use sandboxes::{Sandboxes, ServeConfig};
pub use server::serve;

use axum::http::StatusCode;

/// Why a control-plane call failed; [`api`] maps each to its status and E2B's error body.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Invalid API key")]
    Unauthorized,
    #[error("sandbox \"{0}\" not found")]
    SandboxNotFound(String),
    #[error("template '{0}' not found")]
    TemplateNotFound(String),
    #[error("failed to create sandbox: {0}")]
    CreateFailed(String),
    #[error("{0}")]
    Internal(String),
    #[error("not found (kernelbox does not serve this route)")]
    NoRoute,
}

impl ControlError {
    pub fn status(&self) -> StatusCode {
        match self {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Unauthorized => StatusCode::UNAUTHORIZED,
            ControlError::SandboxNotFound(_)
            | ControlError::TemplateNotFound(_)
            | ControlError::NoRoute => StatusCode::NOT_FOUND,
            ControlError::CreateFailed(_) | ControlError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}
