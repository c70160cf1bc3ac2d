//! A context: one kernel behind one lock, with its language and cwd. It runs one execution at a
//! time (the stream itself is `stream`), applies and restores per-request env vars around it, and
//! replaces its kernel on restart, on death and when an interrupt does not take.
//!
//! A context outlives its kernels: restart and crash recovery swap in a fresh kernel under the same
//! id, in the same cwd, with the same sandbox-level environment.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{watch, Mutex, RwLock};
use tracing::Instrument;

use super::env;
use super::execution::ExecutionError;
use super::language;
use super::stream::{EndReason, EventSink, ExecutionStream};
use crate::jupyter::process::wait_silent;
use crate::jupyter::{Kernel, KernelError, KernelSpec, LaunchOptions, Subscription};

/// Bound on internal silent cells (env set/restore).
const SILENT_CELL_TIMEOUT: Duration = Duration::from_secs(30);

/// One kernel process in the life of a context.
struct Generation {
    kernel: Kernel,
    end: watch::Sender<Option<EndReason>>,
}

/// What a client asked to run.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    pub code: String,
    pub env_vars: Vec<(String, String)>,
    /// kernelbox extension: interrupt after this many seconds and report `TimeoutError`.
    pub timeout: Option<f64>,
}

pub struct Context {
    pub id: String,
    /// The normalised language the context was created for (`typescript` runs on the
    /// `javascript` kernel but keeps its label).
    pub language: String,
    pub cwd: PathBuf,
    spec: Arc<KernelSpec>,
    /// How its kernels start; sandbox-level variables change with the init call.
    launch: std::sync::RwLock<LaunchOptions>,
    /// The live kernel. Restart holds the write lock while the new kernel starts, so executions
    /// that arrive meanwhile wait for it instead of racing the old one.
    current: RwLock<Arc<Generation>>,
    /// Serialises executions: one at a time per kernel.
    exec_lock: Mutex<()>,
    /// Ticks for every `POST /contexts/{id}/interrupt`; the running execution (if any) watches
    /// it and runs the interrupt with the same bounded escalation as a timeout or disconnect.
    interrupts: watch::Sender<u64>,
    deleted: std::sync::atomic::AtomicBool,
}

impl Context {
    /// Starts a kernel for a new context.
    pub async fn start(
        id: String,
        language: String,
        spec: Arc<KernelSpec>,
        launch: LaunchOptions,
    ) -> Result<Arc<Context>, KernelError> {
        let generation = Self::launch_generation(&spec, &launch).await?;
        let ctx = Arc::new(Context {
            id,
            language,
            cwd: launch.cwd.clone(),
            spec,
            launch: std::sync::RwLock::new(launch),
            current: RwLock::new(generation.clone()),
            exec_lock: Mutex::new(()),
            interrupts: watch::Sender::new(0),
            deleted: Default::default(),
        });
        ctx.supervise(generation);
        Ok(ctx)
    }

    async fn launch_generation(
        spec: &Arc<KernelSpec>,
        launch: &LaunchOptions,
    ) -> Result<Arc<Generation>, KernelError> {
        let kernel = Kernel::launch(spec.clone(), launch).await?;
        let (end, _) = watch::channel(None);
        Ok(Arc::new(Generation { kernel, end }))
    }

    /// Watches the kernel process; on an unexpected exit, ends pending executions with
    /// `ContextRestarting` and brings up a fresh kernel under the same id and cwd.
    fn supervise(self: &Arc<Self>, generation: Arc<Generation>) {
        let weak: Weak<Context> = Arc::downgrade(self);
        let mut exited = generation.kernel.exited();
        let span = tracing::info_span!("context", id = %self.id);
        tokio::spawn(
            async move {
                while exited.borrow_and_update().is_none() {
                    if exited.changed().await.is_err() {
                        return;
                    }
                }
                let status = exited.borrow().clone().unwrap_or_default();
                let Some(ctx) = weak.upgrade() else { return };
                if generation.end.borrow().is_some()
                    || ctx.deleted.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return; // A deliberate stop.
                }
                tracing::warn!(%status, "kernel died; restarting it");
                if let Err(e) = ctx.replace_kernel(EndReason::Died, Some(&generation)).await {
                    tracing::error!(error = %e, "could not restart the kernel after it died");
                }
            }
            .instrument(span),
        );
    }

    /// Ends the current generation with `reason` and starts a new kernel. With `only_if`, does
    /// nothing when the current generation is already another one (a restart won the race).
    async fn replace_kernel(
        self: &Arc<Self>,
        reason: EndReason,
        only_if: Option<&Arc<Generation>>,
    ) -> Result<(), KernelError> {
        let mut slot = self.current.write().await;
        if let Some(expected) = only_if {
            if !Arc::ptr_eq(&slot, expected) {
                return Ok(());
            }
        }
        let old = slot.clone();
        old.end.send_replace(Some(reason));
        let launch = self.launch_options();
        let new = Self::launch_generation(&self.spec, &launch).await?;
        *slot = new.clone();
        drop(slot);
        self.supervise(new);
        tokio::spawn(async move { old.kernel.shutdown().await });
        Ok(())
    }

    fn launch_options(&self) -> LaunchOptions {
        self.launch
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets sandbox-level variables: in the running kernel (after whatever runs now, before
    /// whatever is queued later) and in every kernel this context starts from now on.
    pub async fn set_sandbox_env(&self, vars: &[(String, String)]) {
        {
            let mut launch = self.launch.write().unwrap_or_else(|e| e.into_inner());
            crate::sys::env::merge(&mut launch.env, vars);
        }
        let _turn = self.exec_lock.lock().await;
        let generation = self.current.read().await.clone();
        let syntax = language::syntax(&self.language);
        if let Some(code) = env::set_code(syntax, vars) {
            if let Err(e) = generation
                .kernel
                .run_silent(&code, SILENT_CELL_TIMEOUT)
                .await
            {
                tracing::warn!(context = %self.id, error = %e, "setting sandbox env vars failed");
            }
        }
    }

    /// Restarts the kernel: variables are gone, the id and cwd stay.
    pub async fn restart(self: &Arc<Self>) -> Result<(), KernelError> {
        self.replace_kernel(EndReason::Restarted, None).await
    }

    /// Interrupts the running execution, if any. Nothing is sent to an idle kernel: Deno's
    /// interrupt would stop the *next* cell instead.
    pub fn interrupt(&self) {
        self.interrupts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops the kernel for good; running executions end with `UnexpectedEndOfExecution`.
    pub async fn shutdown(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let generation = self.current.read().await.clone();
        generation.end.send_replace(Some(EndReason::Deleted));
        generation.kernel.shutdown().await;
    }

    /// Runs one request, streaming its events into `sink`. Always ends with `end_of_execution`
    /// unless the client has gone; always restores per-request env vars before the next
    /// execution on this context can start.
    pub async fn execute(self: Arc<Self>, req: ExecuteRequest, sink: EventSink) {
        let span = tracing::info_span!("execution", context = %self.id, language = %self.language);
        self.execute_inner(req, sink).instrument(span).await
    }

    async fn execute_inner(self: Arc<Self>, req: ExecuteRequest, sink: EventSink) {
        // Wait for our turn; a client that leaves while waiting never runs.
        let Some(_turn) = sink.wait(self.exec_lock.lock()).await else {
            tracing::info!("client left while waiting for the context; not running");
            return;
        };
        // Interrupts from here on are for this execution.
        let interrupts = self.interrupts.subscribe();
        let Some(mut generation) = sink.wait(async { self.current.read().await.clone() }).await
        else {
            return;
        };
        if *generation.end.borrow() == Some(EndReason::Died) {
            // The kernel died and bringing up its successor failed; try again now.
            tracing::info!("retrying the restart of a dead kernel");
            match sink
                .wait(self.replace_kernel(EndReason::Died, Some(&generation)))
                .await
            {
                None => return,
                Some(Ok(())) => generation = self.current.read().await.clone(),
                Some(Err(e)) => {
                    let value = format!("Context was restarted, but its kernel did not start: {e}");
                    sink.fail(ExecutionError::new("ContextRestarting", value))
                        .await;
                    return;
                }
            }
        }
        let mut end_rx = generation.end.subscribe();
        let already_ended = *end_rx.borrow_and_update();
        if let Some(reason) = already_ended {
            // Deleted while this request waited for its turn.
            sink.fail(reason.error()).await;
            return;
        }
        let kernel = &generation.kernel;
        let syntax = language::syntax(&self.language);

        // Pipelined: the env cell and the user's cell go out back to back.
        let env_sub = match env::set_code(syntax, &req.env_vars) {
            Some(code) => match kernel.conn.execute(&code, true).await {
                Ok(sub) => Some(sub),
                Err(e) => {
                    tracing::warn!(error = %e, "could not send the env cell");
                    None
                }
            },
            None => None,
        };
        let sub = match kernel.conn.execute(&req.code, false).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "could not send the execute request");
                let value = format!("Failed to send execution request: {e}");
                sink.fail(ExecutionError::new("ExecutionError", value))
                    .await;
                return;
            }
        };
        if let Some(env_sub) = env_sub {
            check_silent("env", env_sub, kernel);
        }

        let outcome = ExecutionStream::new(kernel, req.timeout, &sink)
            .run(sub, &mut end_rx, interrupts)
            .await;
        // The response ends here; clean-up below still holds the context's lock, so the next
        // execution waits for it, but this client does not.
        drop(sink);
        if outcome.needs_restart {
            tracing::warn!("the interrupted cell did not stop; restarting the kernel");
            if let Err(e) = self
                .replace_kernel(EndReason::Died, Some(&generation))
                .await
            {
                tracing::error!(error = %e, "restart after a stuck interrupt failed");
            }
            return;
        }
        if outcome.kernel_alive && outcome.interrupted {
            if let Some(code) = &kernel.spec.after_interrupt {
                if let Err(e) = kernel.run_silent(code, SILENT_CELL_TIMEOUT).await {
                    tracing::error!(error = %e, "the after-interrupt cell failed");
                }
            }
        }
        if outcome.kernel_alive && !req.env_vars.is_empty() {
            if let Some(code) = env::restore_code(syntax, &req.env_vars) {
                if let Err(e) = kernel.run_silent(&code, SILENT_CELL_TIMEOUT).await {
                    tracing::error!(error = %e, "restoring per-request env vars failed");
                }
            }
        }
    }
}

/// Logs the outcome of an internal silent cell without blocking the caller.
fn check_silent(what: &'static str, sub: Subscription, kernel: &Kernel) {
    let exited = kernel.exited();
    tokio::spawn(async move {
        if let Err(e) = wait_silent(sub, exited, SILENT_CELL_TIMEOUT).await {
            tracing::error!(cell = what, error = %e, "internal cell failed");
        }
    });
}
