//! One execution's stream: how kernel messages become events, when an execution is done, and how
//! interrupts, timeouts, client disconnects, restarts and kernel death end it. The context
//! (`context`) decides which kernel runs it and cleans up after it.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::context::ExecuteRequest;
use super::execution::{stream_line, Event, ExecutionError, ExecutionResult};
use crate::jupyter::{wire, Channel, Kernel, Subscription};

/// How long an interrupted cell may take to go idle before the kernel is restarted instead.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// Lines are written at most this long after they are produced...
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// ...or as soon as this much is gathered.
const FLUSH_BYTES: usize = 64 * 1024;

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
    pub(super) fn error(self) -> ExecutionError {
        match self {
            EndReason::Died => ExecutionError::context_restarting(),
            EndReason::Restarted | EndReason::Deleted => ExecutionError::unexpected_end(),
        }
    }
}

/// Where an execution's events go: the HTTP body. A closed receiver means the client left.
pub struct EventSink {
    tx: mpsc::Sender<Bytes>,
    pub(super) keepalive: Duration,
}

impl EventSink {
    pub fn new(tx: mpsc::Sender<Bytes>, keepalive: Duration) -> EventSink {
        EventSink { tx, keepalive }
    }

    /// Sends one event; `false` once the client is gone.
    pub(super) async fn send(&self, event: &Event) -> bool {
        self.send_line(event.to_line()).await
    }

    /// Ends an execution that could not run: one error, then `end_of_execution`.
    pub(super) async fn fail(&self, error: ExecutionError) {
        if self.send(&Event::Error(error)).await {
            self.send(&Event::EndOfExecution).await;
        }
    }

    pub(super) async fn send_line(&self, line: Vec<u8>) -> bool {
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }

    /// Waits for `fut`, writing keepalives every interval of silence so a vanished client is
    /// noticed. `None` if the client left first.
    pub(super) async fn wait<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
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

/// How an execution ended, for the clean-up that follows it.
pub(super) struct Outcome {
    /// The kernel is still the one the execution ran on (env vars can be restored in it).
    pub kernel_alive: bool,
    /// An interrupted cell never went idle: the kernel must be replaced.
    pub needs_restart: bool,
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
pub(super) async fn run_stream(
    kernel: &Kernel,
    mut sub: Subscription,
    end_rx: &mut watch::Receiver<Option<EndReason>>,
    req: &ExecuteRequest,
    sink: &EventSink,
) -> Outcome {
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

    // Interrupts the kernel (for a gone client or the timeout) and starts the bounded wait for
    // the cell to go idle.
    macro_rules! start_interrupt {
        ($why:expr, $log:expr) => {
            tracing::info!($log);
            interrupted = $why;
            interrupt_deadline = Some(tokio::time::Instant::now() + INTERRUPT_GRACE);
            if let Err(e) = kernel.interrupt().await {
                tracing::warn!(error = %e, "interrupt failed");
            }
        };
    }
    // The one error a timed-out execution reports, whatever the kernel said after the interrupt.
    macro_rules! timeout_error {
        () => {
            if interrupted == Interrupted::Timeout {
                emit!(Event::Error(ExecutionError::timeout(
                    req.timeout.unwrap_or_default()
                )));
            }
        };
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
            start_interrupt!(
                Interrupted::Disconnect,
                "client disconnected during execution; interrupting the kernel"
            );
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
                start_interrupt!(Interrupted::Timeout, "execution timed out; interrupting the kernel");
            }
            _ = tokio::time::sleep_until(interrupt_deadline.unwrap_or(far)), if interrupt_deadline.is_some() => {
                timeout_error!();
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
    timeout_error!();
    if let Some(e) = reply_error.filter(|_| !error_sent && interrupted != Interrupted::Timeout) {
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
