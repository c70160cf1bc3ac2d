//! The interpreter as a whole: what it starts with, its start-up (kernelspecs, the default
//! contexts) and its shutdown. Whoever serves it (the agent today) only mounts [`super::router`]
//! and calls [`Interpreter::shutdown`] on the way out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::contexts::{ContextDefaults, Contexts};

/// The one language whose default context must start: the SDKs' `run_code` without a language is
/// Python, so an agent without it is of no use.
const REQUIRED_LANGUAGE: &str = "python";

/// Everything the interpreter starts with.
#[derive(Debug, Clone)]
pub struct InterpreterOptions {
    /// `$KERNELBOX_HOME`.
    pub home: PathBuf,
    /// Where kernelspecs are read from (`$KERNELBOX_HOME/kernels` unless set).
    pub kernels_dir: Option<PathBuf>,
    /// A private (0700) folder for connection files, owned by the caller.
    pub runtime_dir: PathBuf,
    /// The default cwd of contexts.
    pub workdir: PathBuf,
    /// Sandbox-level environment variables, for every context.
    pub env: Vec<(String, String)>,
    /// Languages whose contexts exist from start-up.
    pub default_languages: Vec<String>,
    /// Silence after which an execution writes a `keepalive` line.
    pub keepalive: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the default {language} context did not start: {reason}")]
    DefaultContext { language: String, reason: String },
}

/// Shared state of the interpreter API.
pub struct Interpreter {
    pub contexts: Contexts,
    /// Silence after which a `keepalive` line is written (5 s in E2B's server).
    pub keepalive: Duration,
}

impl Interpreter {
    /// Starts the default contexts in parallel. Python is required; the others are best effort
    /// (they are created again lazily on first use).
    pub async fn start(options: InterpreterOptions) -> Result<Arc<Interpreter>, StartError> {
        let interpreter = Arc::new(Interpreter {
            contexts: Contexts::new(ContextDefaults {
                kernels_dir: options
                    .kernels_dir
                    .unwrap_or_else(|| options.home.join("kernels")),
                home: options.home,
                runtime_dir: options.runtime_dir,
                workdir: options.workdir,
                env: options.env,
            }),
            keepalive: options.keepalive,
        });
        interpreter
            .start_defaults(&options.default_languages)
            .await?;
        Ok(interpreter)
    }

    async fn start_defaults(&self, languages: &[String]) -> Result<(), StartError> {
        let starts = languages
            .iter()
            .map(|language| async move { (language, self.contexts.default_for(language).await) });
        for (language, result) in futures_util::future::join_all(starts).await {
            match result {
                Ok(ctx) => tracing::info!(%language, id = %ctx.id, "default context ready"),
                Err(e) if language == REQUIRED_LANGUAGE => {
                    self.shutdown().await;
                    return Err(StartError::DefaultContext {
                        language: language.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(%language, error = %e, "default context did not start; it will be created on first use")
                }
            }
        }
        Ok(())
    }

    /// Sets sandbox-level environment variables in every context, running or to come.
    pub async fn set_sandbox_env(&self, vars: &[(String, String)]) {
        self.contexts.set_sandbox_env(vars).await;
    }

    /// Shuts every kernel down. Running executions end with an error line, so a server waiting
    /// for its responses to finish does not wait on streams that could run forever.
    pub async fn shutdown(&self) {
        self.contexts.shutdown_all().await;
    }
}
