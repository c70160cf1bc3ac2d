//! `POST /init` and `GET /envs`: how a control plane sets up a running agent (envd's
//! orchestrator call). Init is repeatable: a pooled sandbox is started with one configuration and
//! handed to a caller with another (token, env vars, default user and workdir).
//!
//! Init itself is authenticated by the token already in force, if any: the first init of an agent
//! started without a token sets one, and from then on only its holder can change it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{Envd, EnvdError, User};

/// envd's init body; fields it has that kernelbox has no use for (volume mounts, lifecycle ids)
/// are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InitRequest {
    pub access_token: Option<String>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
}

pub async fn init(
    State(envd): State<Arc<Envd>>,
    headers: HeaderMap,
    body: Option<Json<InitRequest>>,
) -> Response {
    let Json(request) = body.unwrap_or_default();
    match envd.init(&headers, request).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn envs(State(envd): State<Arc<Envd>>) -> Json<BTreeMap<String, String>> {
    Json(envd.settings().env.into_iter().collect())
}

impl Envd {
    /// Applies an init call: checks it against the token in force, validates everything, then
    /// changes the settings and tells whoever listens about new env vars.
    pub async fn init(&self, headers: &HeaderMap, request: InitRequest) -> Result<(), EnvdError> {
        self.check_token(headers)?;
        if let Some(user) = request.default_user.as_deref().filter(|u| !u.is_empty()) {
            User::lookup(user).map_err(|e| EnvdError::invalid_argument(e.to_string()))?;
        }
        let workdir = request
            .default_workdir
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
        if let Some(dir) = &workdir {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(EnvdError::invalid_argument(format!(
                    "default workdir {} is not an existing absolute directory",
                    dir.display()
                )));
            }
        }
        let vars: Vec<(String, String)> =
            request.env_vars.unwrap_or_default().into_iter().collect();
        if let Some(bad) = vars.iter().find(|(k, _)| !crate::sys::env::valid_name(k)) {
            return Err(EnvdError::invalid_argument(format!(
                "invalid env var name '{}'",
                bad.0
            )));
        }
        self.update(|s| {
            if let Some(token) = request.access_token.filter(|t| !t.is_empty()) {
                s.access_token = Some(token);
            }
            if let Some(user) = request.default_user.filter(|u| !u.is_empty()) {
                s.default_user = Some(user);
            }
            if let Some(dir) = workdir {
                s.workdir = dir;
            }
            crate::sys::env::merge(&mut s.env, &vars);
        });
        if !vars.is_empty() {
            if let Some(hook) = self.env_hook() {
                hook(vars).await;
            }
        }
        Ok(())
    }
}
