//! A context: one kernel behind one lock, with its language, cwd and the policy of an execution —
//! when it is done, how interrupts, timeouts, disconnects, restarts and kernel death end it.
//!
//! A context outlives its kernels: restart and crash recovery swap in a fresh kernel under the same
//! id, in the same cwd, with the same sandbox-level environment.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Mutex, RwLock};
use tracing::Instrument;

use super::env::{self, Syntax};
use super::execution::{stream_line, Event, ExecutionError, ExecutionResult};
use crate::jupyter::{wire, Channel, Kernel, KernelError, KernelSpec, LaunchOptions};

/// How long an interrupted cell may take to go idle before the kernel is restarted instead.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// Lines are written at most this long after they are produced...
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// ...or as soon as this much is gathered.
const FLUSH_BYTES: usize = 64 * 1024;
/// Bound on internal silent cells (env set/restore).
const SILENT_CELL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a kernel generation ended while executions may still be waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The process died; a fresh kernel is on its way.
    Died,
    /// `POST /contexts/{id}/restart`.
    Restarted,
    /// `DELETE /contexts/{id}` or agent shutdown.
    Deleted,
}

impl EndReason {
    fn error(self) -> ExecutionError {
        match self {
            EndReason::Died => ExecutionError::context_restarting(),
            EndReason::Restarted | EndReason::Deleted => ExecutionError::unexpected_end(),
        }
    }
}

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

/// Where an execution's events go: the HTTP body. A closed receiver means the client left.
pub struct EventSink {
    tx: mpsc::Sender<Bytes>,
    keepalive: Duration,
}

impl EventSink {
    pub fn new(tx: mpsc::Sender<Bytes>, keepalive: Duration) -> EventSink {
        EventSink { tx, keepalive }
    }

    /// Sends one event; `false` once the client is gone.
    async fn send(&self, event: &Event) -> bool {
        self.send_line(event.to_line()).await
    }

    /// Ends an execution that could not run: one error, then `end_of_execution`.
    async fn fail(&self, error: ExecutionError) {
        if self.send(&Event::Error(error)).await {
            self.send(&Event::EndOfExecution).await;
        }
    }

    async fn send_line(&self, line: Vec<u8>) -> bool {
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn closed(&self) {
        self.tx.closed().await
    }

    /// Waits for `fut`, writing keepalives every interval of silence so a vanished client is
    /// noticed. `None` if the client left first.
    async fn wait<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                v = &mut fut => return Some(v),
                _ = self.closed() => return None,
                _ = tokio::time::sleep(self.keepalive) => {
                    if !self.send(&Event::Keepalive).await {
                        return None;
                    }
                }
            }
        }
    }
}

pub struct Context {
    pub id: String,
    /// The normalised language the context was created for (`typescript` runs on the
    /// `javascript` kernel but keeps its label).
    pub language: String,
    pub cwd: PathBuf,
    spec: Arc<KernelSpec>,
    launch: LaunchOptions,
    /// The live kernel. Restart holds the write lock while the new kernel starts, so executions
    /// that arrive meanwhile wait for it instead of racing the old one.
    current: RwLock<Arc<Generation>>,
    /// Serialises executions: one at a time per kernel.
    exec_lock: Mutex<()>,
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
            launch,
            current: RwLock::new(generation.clone()),
            exec_lock: Mutex::new(()),
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
        let new = Self::launch_generation(&self.spec, &self.launch).await?;
        *slot = new.clone();
        drop(slot);
        self.supervise(new);
        tokio::spawn(async move { old.kernel.shutdown().await });
        Ok(())
    }

    /// Restarts the kernel: variables are gone, the id and cwd stay.
    pub async fn restart(self: &Arc<Self>) -> Result<(), KernelError> {
        self.replace_kernel(EndReason::Restarted, None).await
    }

    /// Interrupts whatever is running.
    pub async fn interrupt(&self) -> Result<(), KernelError> {
        let generation = self.current.read().await.clone();
        generation.kernel.interrupt().await
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
        let syntax = Syntax::for_language(&self.language);

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

        let outcome = run_stream(&generation, sub, &mut end_rx, &req, &sink).await;
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
fn check_silent(what: &'static str, mut sub: crate::jupyter::Subscription, kernel: &Kernel) {
    let mut exited = kernel.exited();
    tokio::spawn(async move {
        let work = async {
            while let Some(incoming) = sub.recv().await {
                if incoming.channel == Channel::Shell && incoming.msg.msg_type() == "execute_reply"
                {
                    let status = incoming.msg.content_str("status");
                    if status != "ok" {
                        tracing::error!(
                            cell = what,
                            status,
                            ename = incoming.msg.content_str("ename"),
                            evalue = incoming.msg.content_str("evalue"),
                            "internal cell failed"
                        );
                    }
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(SILENT_CELL_TIMEOUT, work) => {}
            _ = exited.changed() => {}
        }
    });
}

struct Outcome {
    kernel_alive: bool,
    needs_restart: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    No,
    Disconnect,
    Timeout,
}

// `emit!` records the last write time even on the final emits, where nothing reads it again.
#[allow(unused_assignments)]
/// The heart of an execution: maps kernel messages to events until both `execute_reply` and
/// `status: idle` have arrived (they come on different sockets in either order, and output can
/// follow the reply), or something ends it early.
async fn run_stream(
    generation: &Generation,
    mut sub: crate::jupyter::Subscription,
    end_rx: &mut watch::Receiver<Option<EndReason>>,
    req: &ExecuteRequest,
    sink: &EventSink,
) -> Outcome {
    let kernel = &generation.kernel;
    let mut client = true;
    let mut replied = false;
    let mut idle = false;
    let mut error_sent = false;
    let mut reply_error: Option<ExecutionError> = None;
    let mut interrupted = Interrupted::No;
    let mut interrupt_deadline: Option<tokio::time::Instant> = None;
    let timeout_at = req
        .timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t.min(1e9)));
    let mut last_write = tokio::time::Instant::now();

    // Lines are gathered for up to FLUSH_DELAY (or FLUSH_BYTES) and written as one chunk, and at
    // once when the execution ends: a quick cell costs the client one wake-up instead of one per
    // line, while output still streams within milliseconds.
    let mut pending: Vec<u8> = Vec::new();
    let mut flush_at: Option<tokio::time::Instant> = None;
    macro_rules! flush {
        () => {
            flush_at = None;
            if client && !pending.is_empty() {
                if sink.send_line(std::mem::take(&mut pending)).await {
                    last_write = tokio::time::Instant::now();
                } else {
                    client = false;
                }
            }
            pending.clear();
        };
    }
    macro_rules! queue_line {
        ($line:expr) => {
            if client {
                pending.extend_from_slice(&$line);
                if pending.len() >= FLUSH_BYTES {
                    flush!();
                } else if flush_at.is_none() {
                    flush_at = Some(tokio::time::Instant::now() + FLUSH_DELAY);
                }
            }
        };
    }
    macro_rules! emit {
        ($ev:expr) => {
            queue_line!($ev.to_line())
        };
    }
    // Every way out: the closing line, then whatever is gathered, in one write.
    macro_rules! finish {
        ($kernel_alive:expr, $needs_restart:expr) => {{
            emit!(Event::EndOfExecution);
            flush!();
            return Outcome {
                kernel_alive: $kernel_alive,
                needs_restart: $needs_restart,
            };
        }};
    }

    let grace = kernel.spec.output_grace;
    // After idle and the reply: how long to wait for late output (zero for most kernels).
    let mut grace_until: Option<tokio::time::Instant> = None;
    loop {
        if replied && idle {
            let now = tokio::time::Instant::now();
            match grace_until {
                _ if grace.is_zero() => break,
                Some(t) if now >= t => break,
                Some(_) => {}
                None => grace_until = Some(now + grace),
            }
        }
        if !client && interrupted == Interrupted::No {
            tracing::info!("client disconnected during execution; interrupting the kernel");
            interrupted = Interrupted::Disconnect;
            interrupt_deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
            if let Err(e) = kernel.interrupt().await {
                tracing::warn!(error = %e, "interrupt failed");
            }
        }
        let keepalive_at = last_write + sink.keepalive;
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        tokio::select! {
            biased;
            incoming = sub.recv() => {
                let Some(incoming) = incoming else {
                    // The connection's readers are gone: the kernel is dying. Its generation's
                    // end signal says why; wait for it briefly.
                    let reason = tokio::time::timeout(Duration::from_secs(5), async {
                        loop {
                            let current = *end_rx.borrow_and_update();
                            if let Some(r) = current { return r; }
                            if end_rx.changed().await.is_err() { return EndReason::Deleted; }
                        }
                    }).await.unwrap_or(EndReason::Died);
                    if !error_sent { emit!(Event::Error(reason.error())); }
                    finish!(false, false);
                };
                if grace_until.is_some() {
                    grace_until = Some(tokio::time::Instant::now() + grace);
                }
                let msg = &incoming.msg;
                match (incoming.channel, msg.msg_type()) {
                    (Channel::IoPub, "execute_input") => {
                        let n = msg.content.get("execution_count").and_then(Value::as_i64).unwrap_or(0);
                        emit!(Event::NumberOfExecutions { execution_count: n });
                    }
                    (Channel::IoPub, "stream") => {
                        let kind = if msg.content_str("name") == "stderr" { "stderr" } else { "stdout" };
                        let timestamp = wire::timestamp_from_kernel(msg.date());
                        if client {
                            let line = stream_line(kind, &msg.stream_text_json(), &timestamp);
                            if pending.is_empty() && line.len() >= FLUSH_BYTES {
                                // Large output goes out as it is, without another copy.
                                pending = line;
                                flush!();
                            } else {
                                queue_line!(line);
                            }
                        }
                    }
                    (Channel::IoPub, kind @ ("display_data" | "execute_result")) => {
                        let data = msg.content.get("data").cloned().unwrap_or(Value::Null);
                        emit!(Event::Result(Box::new(ExecutionResult::from_bundle(&data, kind == "execute_result"))));
                    }
                    (Channel::IoPub, "error") if !error_sent && interrupted != Interrupted::Timeout => {
                        error_sent = true;
                        emit!(Event::Error(kernel_error(&msg.content)));
                    }
                    (Channel::IoPub, "status") => match msg.content_str("execution_state") {
                        "idle" => idle = true,
                        "error" => {
                            if !error_sent {
                                error_sent = true;
                                emit!(Event::Error(ExecutionError::new("KernelError", "The kernel reported an error state")));
                            }
                            idle = true;
                            replied = true;
                        }
                        _ => {}
                    },
                    (Channel::Shell, "execute_reply") => {
                        replied = true;
                        match msg.content_str("status") {
                            // Held until idle: the reply overtakes iopub (it is another
                            // socket), and an iopub `error` for the same cell says more.
                            "error" if !error_sent && interrupted != Interrupted::Timeout => {
                                reply_error = Some(kernel_error(&msg.content));
                            }
                            "abort" | "aborted" => {
                                if !error_sent {
                                    error_sent = true;
                                    emit!(Event::Error(ExecutionError::aborted()));
                                }
                                // An aborted request gets no more output; don't wait for idle.
                                idle = true;
                            }
                            _ => {}
                        }
                    }
                    // update_display_data, clear_output, comms, input requests: the SDKs have no
                    // event for them; dropping them must not stall anything.
                    _ => {}
                }
            }
            changed = end_rx.changed() => {
                let reason = if changed.is_ok() { let r = *end_rx.borrow_and_update(); r } else { Some(EndReason::Deleted) };
                if let Some(reason) = reason {
                    if !error_sent { emit!(Event::Error(reason.error())); }
                    finish!(false, false);
                }
            }
            _ = sink.closed(), if client => {
                client = false;
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)), if interrupted == Interrupted::No && timeout_at.is_some() => {
                tracing::info!("execution timed out; interrupting the kernel");
                interrupted = Interrupted::Timeout;
                interrupt_deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
                if let Err(e) = kernel.interrupt().await {
                    tracing::warn!(error = %e, "interrupt failed");
                }
            }
            _ = tokio::time::sleep_until(interrupt_deadline.unwrap_or(far)), if interrupt_deadline.is_some() => {
                if interrupted == Interrupted::Timeout {
                    emit!(Event::Error(ExecutionError::timeout(req.timeout.unwrap_or_default())));
                }
                finish!(true, true);
            }
            _ = tokio::time::sleep_until(grace_until.unwrap_or(far)), if grace_until.is_some() => {
                // Quiet for the whole grace period: the loop's check ends the execution.
            }
            _ = tokio::time::sleep_until(flush_at.unwrap_or(far)), if flush_at.is_some() => {
                flush!();
            }
            _ = tokio::time::sleep_until(keepalive_at), if client && pending.is_empty() => {
                emit!(Event::Keepalive);
                flush!();
            }
        }
    }
    if interrupted == Interrupted::Timeout {
        emit!(Event::Error(ExecutionError::timeout(
            req.timeout.unwrap_or_default()
        )));
    } else if let Some(e) = reply_error.filter(|_| !error_sent) {
        emit!(Event::Error(e));
    }
    finish!(true, false)
}

/// An error from the kernel's `error` message or `execute_reply`, traceback joined with `""`.
fn kernel_error(content: &Value) -> ExecutionError {
    let s = |k: &str| {
        content
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let traceback = match content.get("traceback") {
        Some(Value::Array(lines)) => lines.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    ExecutionError {
        name: s("ename"),
        value: s("evalue"),
        traceback,
    }
}
