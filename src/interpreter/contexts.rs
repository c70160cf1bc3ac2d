//! The registry of contexts: creation, per-language defaults, routing of a request to one context,
//! restart and delete. A language default is only ever an id looked up at request time, so there is
//! exactly one live object, one lock and one env state per kernel (code-interpreter-api.md §10 B3,
//! B6).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::context::Context;
use super::language;
use crate::jupyter::{KernelSpec, KernelSpecError, LaunchOptions};

/// What every context is started with.
#[derive(Debug, Clone)]
pub struct ContextDefaults {
    /// `$KERNELBOX_HOME`.
    pub home: PathBuf,
    /// Where kernelspecs live (`$KERNELBOX_HOME/kernels`).
    pub kernels_dir: PathBuf,
    /// A private folder for connection files.
    pub runtime_dir: PathBuf,
    /// The default cwd.
    pub workdir: PathBuf,
    /// Sandbox-level environment variables, applied to every kernel at every start.
    pub env: Vec<(String, String)>,
}

/// Why the registry could not do what was asked. The API maps these to HTTP (`error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("Context {0} not found")]
    NotFound(String),
    #[error("Only one of context_id or language can be provided")]
    Ambiguous,
    /// The language has no kernel here; the message is the JSON Jupyter Server sends.
    #[error("{0}")]
    NoKernel(String),
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    WorkingDirectory(String),
    #[error("Failed to restart context {id}: {reason}")]
    Restart { id: String, reason: String },
}

#[derive(Default)]
struct Registry {
    /// In creation order.
    contexts: Vec<Arc<Context>>,
    defaults: HashMap<String, String>,
}

pub struct Contexts {
    defaults: ContextDefaults,
    /// Sandbox-level variables for new contexts: `defaults.env` plus what the init call set.
    sandbox_env: Mutex<Vec<(String, String)>>,
    registry: Mutex<Registry>,
    /// One per language, so concurrent first requests create a single default.
    language_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Contexts {
    pub fn new(defaults: ContextDefaults) -> Contexts {
        Contexts {
            sandbox_env: Mutex::new(defaults.env.clone()),
            defaults,
            registry: Mutex::default(),
            language_locks: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &ContextDefaults {
        &self.defaults
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves consistent data (plain inserts/removes).
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<Arc<Context>> {
        self.registry().contexts.clone()
    }

    pub fn get(&self, id: &str) -> Result<Arc<Context>, ContextError> {
        self.registry()
            .contexts
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| ContextError::NotFound(id.to_string()))
    }

    /// Starts a new context. The cwd must be an existing directory.
    pub async fn create(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<Arc<Context>, ContextError> {
        let language = language::normalise(language);
        let cwd = match cwd.filter(|c| !c.is_empty()) {
            Some(c) => PathBuf::from(c),
            None => self.defaults.workdir.clone(),
        };
        check_cwd(&cwd)?;
        let spec = self.spec_for(&language)?;
        let launch = LaunchOptions {
            cwd: cwd.clone(),
            env: self.sandbox_env().clone(),
            home: self.defaults.home.clone(),
            runtime_dir: self.defaults.runtime_dir.clone(),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let ctx = Context::start(id, language.clone(), Arc::new(spec), launch)
            .await
            .map_err(|e| ContextError::Start(e.to_string()))?;
        tracing::info!(id = %ctx.id, %language, cwd = %cwd.display(), "context created");
        self.registry().contexts.push(ctx.clone());
        Ok(ctx)
    }

    fn spec_for(&self, language: &str) -> Result<KernelSpec, ContextError> {
        let kernel = language::kernel(language);
        KernelSpec::load(&self.defaults.kernels_dir, kernel).map_err(|e| match e {
            KernelSpecError::NotFound { .. } => ContextError::NoKernel(json_message(
                &format!(
                    "The '{language}' kernel is not available: there is no kernelspec named \
                     '{kernel}' (`kernelbox setup` installs python3, javascript and bash; r and \
                     java when R and a JDK are present)."
                ),
                language,
            )),
            other => ContextError::Start(other.to_string()),
        })
    }

    /// The language's default context, created on first use (or after it was deleted).
    pub async fn default_for(&self, language: &str) -> Result<Arc<Context>, ContextError> {
        let language = language::normalise(Some(language));
        if let Some(ctx) = self.current_default(&language) {
            return Ok(ctx);
        }
        let lock = {
            let mut locks = self
                .language_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            locks.entry(language.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(ctx) = self.current_default(&language) {
            return Ok(ctx);
        }
        let ctx = self.create(Some(&language), None).await?;
        self.registry()
            .defaults
            .insert(language.clone(), ctx.id.clone());
        Ok(ctx)
    }

    fn current_default(&self, language: &str) -> Option<Arc<Context>> {
        let reg = self.registry();
        let id = reg.defaults.get(language)?;
        reg.contexts.iter().find(|c| &c.id == id).cloned()
    }

    /// Routing for `/execute` (code-interpreter-api.md §3.3).
    pub async fn route(
        &self,
        context_id: Option<&str>,
        language: Option<&str>,
    ) -> Result<Arc<Context>, ContextError> {
        let context_id = context_id.filter(|s| !s.is_empty());
        let language = language.filter(|s| !s.is_empty());
        match (context_id, language) {
            (Some(_), Some(_)) => Err(ContextError::Ambiguous),
            (None, Some(language)) => self.default_for(language).await,
            (Some("default"), None) | (None, None) => self.default_for("python").await,
            (Some(id), None) => self.get(id),
        }
    }

    pub async fn restart(&self, id: &str) -> Result<(), ContextError> {
        let ctx = self.get(id)?;
        ctx.restart().await.map_err(|e| ContextError::Restart {
            id: id.to_string(),
            reason: e.to_string(),
        })
    }

    /// Removes the context and any default pointing to it; the next request for that language
    /// creates a new default.
    pub async fn remove(&self, id: &str) -> Result<(), ContextError> {
        let ctx = {
            let mut reg = self.registry();
            let pos = reg
                .contexts
                .iter()
                .position(|c| c.id == id)
                .ok_or_else(|| ContextError::NotFound(id.to_string()))?;
            let ctx = reg.contexts.remove(pos);
            reg.defaults.retain(|_, v| v != id);
            ctx
        };
        ctx.shutdown().await;
        tracing::info!(%id, "context removed");
        Ok(())
    }

    fn sandbox_env(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.sandbox_env.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets sandbox-level variables for every context, running or to come (the init call). Each
    /// running kernel gets them before its next execution.
    pub async fn set_sandbox_env(&self, vars: &[(String, String)]) {
        crate::sys::env::merge(&mut self.sandbox_env(), vars);
        let all = self.list();
        futures_util::future::join_all(all.iter().map(|c| c.set_sandbox_env(vars))).await;
    }

    /// Stops every kernel (agent shutdown).
    pub async fn shutdown_all(&self) {
        let all: Vec<_> = std::mem::take(&mut self.registry().contexts);
        futures_util::future::join_all(all.iter().map(|c| c.shutdown())).await;
    }
}

fn check_cwd(cwd: &Path) -> Result<(), ContextError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ContextError::WorkingDirectory(format!(
            "{} is not a directory",
            cwd.display()
        ))),
        Err(e) => Err(ContextError::WorkingDirectory(format!(
            "{}: {e}",
            cwd.display()
        ))),
    }
}

/// The message shape Jupyter Server uses, which E2B's server passes through.
fn json_message(message: &str, language: &str) -> String {
    serde_json::json!({"message": message, "short_message": format!("{language} not found")})
        .to_string()
}
