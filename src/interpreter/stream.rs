//! One execution's stream: how kernel messages become events, when an execution is done, and how
//! interrupts, timeouts, client disconnects, restarts and kernel death end it. The context
//! (`context`) decides which kernel runs it and cleans up after it; this module knows nothing of
//! contexts.
//!
//! Every way an execution is cut short goes through one bounded escalation: the kernel is
//! interrupted (for Deno first with the prelude's signal, which abandons what a cell awaits, then
//! with Jupyter's interrupt for a cell that is busy), and a cell that has still not ended after
//! [`INTERRUPT_GRACE`] costs the context its kernel, with an error that says the state was lost.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::execution::{stream_line, Event, ExecutionError, ExecutionResult};
use crate::jupyter::{wire, Channel, Incoming, Kernel, Subscription};

/// How long an interrupted cell may take to end before its kernel is replaced. Kernels answer an
/// interrupt in milliseconds when it takes; waiting longer only keeps the user waiting.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(1500);
/// Bound on Jupyter's `interrupt_request` round trip, so a kernel that never answers it cannot
/// stall the stream's loop past the grace period.
const INTERRUPT_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a dying kernel's generation has to say why it ended.
const END_REASON_WAIT: Duration = Duration::from_secs(5);
/// How long a cell whose kernel promised an end-of-output marker may stay silent before the
/// marker is given up on (a cell that replaced its process's stdout, say). Output that keeps
/// coming keeps the wait going.
const MARKER_QUIET: Duration = Duration::from_secs(2);
/// After the reply, how long the kernel may stay silent without sending `idle` before the
/// execution ends without it. A kernel publishes `idle` right after its reply; one that never
/// comes was dropped on the way (a PUB socket drops for a reader that falls behind), and waiting
/// for it would hang the stream and every execution queued behind it.
const IDLE_LOST_AFTER: Duration = Duration::from_secs(10);
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
    /// An interrupted cell never ended: the kernel must be replaced.
    pub needs_restart: bool,
    /// The kernel was interrupted during this execution.
    pub interrupted: bool,
}

/// Why an execution is being interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The client went away mid-stream.
    Disconnect,
    /// kernelbox's `timeout` field.
    Timeout,
    /// `POST /contexts/{id}/interrupt`.
    Endpoint,
}

/// An interrupt under way: its cause and the times of its next steps.
struct Interrupt {
    cause: Cause,
    /// When to follow the kernel's await-interrupt signal with Jupyter's interrupt.
    escalate_at: Option<Instant>,
    /// When to give up on the cell and replace the kernel.
    give_up_at: Instant,
}

/// The response body as it is being written: lines are gathered for up to FLUSH_DELAY (or
/// FLUSH_BYTES) and written as one chunk, and at once when the execution ends, so a quick cell
/// costs the client one wake-up instead of one per line while output still streams within
/// milliseconds.
struct Output<'a> {
    sink: &'a EventSink,
    /// False once the client is gone; nothing is gathered after that.
    client: bool,
    pending: Vec<u8>,
    flush_at: Option<Instant>,
    last_write: Instant,
}

impl Output<'_> {
    fn queue(&mut self, line: &[u8]) -> bool {
        if !self.client {
            return false;
        }
        self.pending.extend_from_slice(line);
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + FLUSH_DELAY);
        }
        self.pending.len() >= FLUSH_BYTES
    }

    /// Queues one line, writing at once when enough has gathered.
    async fn line(&mut self, line: Vec<u8>) {
        if self.client && self.pending.is_empty() && line.len() >= FLUSH_BYTES {
            // Large output goes out as it is, without another copy.
            self.pending = line;
            self.flush().await;
        } else if self.queue(&line) {
            self.flush().await;
        }
    }

    async fn emit(&mut self, event: &Event) {
        self.line(event.to_line()).await
    }

    async fn flush(&mut self) {
        self.flush_at = None;
        if self.client && !self.pending.is_empty() {
            if self.sink.send_line(std::mem::take(&mut self.pending)).await {
                self.last_write = Instant::now();
            } else {
                self.client = false;
            }
        }
        self.pending.clear();
    }

    fn keepalive_at(&self) -> Instant {
        self.last_write + self.sink.keepalive
    }
}

/// The state of one execution between its request and its `end_of_execution`.
pub(super) struct ExecutionStream<'a> {
    kernel: &'a Kernel,
    /// The `timeout` field, in seconds.
    timeout: Option<f64>,
    timeout_at: Option<Instant>,
    out: Output<'a>,
    /// The kernel said it started this cell (`execute_input`): an interrupt sent before that
    /// could land before the cell runs and be lost, so causes wait for it.
    started: bool,
    replied: bool,
    /// The reply said `ok`: a kernel with an end-of-output marker will send one.
    reply_ok: bool,
    idle: bool,
    /// The kernel's end-of-output marker arrived: nothing more will come.
    output_complete: bool,
    /// An execution reports at most one error.
    error_sent: bool,
    /// An error from `execute_reply`, held until idle: the reply overtakes iopub (another
    /// socket), and an iopub `error` for the same cell says more.
    reply_error: Option<ExecutionError>,
    /// A cause that arrived before the cell started.
    deferred: Option<Cause>,
    interrupt: Option<Interrupt>,
    /// After idle and the reply: until when to keep listening for late output.
    grace_until: Option<Instant>,
}

/// When the next timed steps are due (see [`ExecutionStream::deadlines`]).
struct Deadlines {
    timeout: Option<Instant>,
    escalate: Option<Instant>,
    give_up: Option<Instant>,
}

/// What ended the wait of one turn of the loop.
enum Step {
    Message(Option<Box<Incoming>>),
    Ended(Option<EndReason>),
    ClientGone,
    InterruptRequested,
    InterruptsClosed,
    TimedOut,
    Escalate,
    GiveUp,
    Wake,
    Flush,
    Keepalive,
}

impl<'a> ExecutionStream<'a> {
    pub(super) fn new(kernel: &'a Kernel, timeout: Option<f64>, sink: &'a EventSink) -> Self {
        let now = Instant::now();
        let timeout = timeout.filter(|t| t.is_finite() && *t > 0.0);
        ExecutionStream {
            kernel,
            timeout,
            timeout_at: timeout.map(|t| now + Duration::from_secs_f64(t.min(1e9))),
            out: Output {
                sink,
                client: true,
                pending: Vec::new(),
                flush_at: None,
                last_write: now,
            },
            started: false,
            replied: false,
            reply_ok: false,
            idle: false,
            output_complete: false,
            error_sent: false,
            reply_error: None,
            deferred: None,
            interrupt: None,
            grace_until: None,
        }
    }

    /// Maps kernel messages to events until both `execute_reply` and `status: idle` have arrived
    /// (they come on different sockets in either order, and output can follow the reply), or
    /// something ends the execution early. `interrupts` ticks for every interrupt request.
    pub(super) async fn run(
        mut self,
        mut sub: Subscription,
        end_rx: &mut watch::Receiver<Option<EndReason>>,
        mut interrupts: watch::Receiver<u64>,
    ) -> Outcome {
        let mut interrupts_open = true;
        loop {
            if self.done() {
                return self.finish_normally().await;
            }
            if !self.out.client {
                self.request_interrupt(Cause::Disconnect).await;
            }
            let step = match self.overdue() {
                Some(step) => step,
                None => {
                    self.next_step(&mut sub, end_rx, &mut interrupts, interrupts_open)
                        .await
                }
            };
            match step {
                Step::Message(Some(incoming)) => self.on_message(*incoming).await,
                Step::Message(None) => {
                    // The connection's readers are gone: the kernel is dying. Its generation's
                    // end signal says why.
                    let reason = wait_end_reason(end_rx).await;
                    return self.finish_ended(reason).await;
                }
                Step::Ended(Some(reason)) => return self.finish_ended(reason).await,
                Step::Ended(None) | Step::Wake => {}
                Step::ClientGone => self.out.client = false,
                Step::InterruptRequested => self.request_interrupt(Cause::Endpoint).await,
                Step::InterruptsClosed => interrupts_open = false,
                Step::TimedOut => self.request_interrupt(Cause::Timeout).await,
                Step::Escalate => self.escalate().await,
                Step::GiveUp => {
                    if !self.replied_behind_backlog(&mut sub).await {
                        return self.finish_stuck().await;
                    }
                }
                Step::Flush => self.out.flush().await,
                Step::Keepalive => {
                    self.out.emit(&Event::Keepalive).await;
                    self.out.flush().await;
                }
            }
        }
    }

    /// No interrupt is under way or waiting for the cell to start.
    fn waiting(&self) -> bool {
        self.interrupt.is_none() && self.deferred.is_none()
    }

    /// The deadlines that apply now: the `timeout` field while nothing interrupts the cell, and an
    /// interrupt's escalation and giving up, until the kernel has replied. After the reply the
    /// cell has stopped (only its output is still draining), and a late interrupt would land on
    /// whatever the kernel runs next.
    fn deadlines(&self) -> Deadlines {
        let interrupt = self.interrupt.as_ref();
        Deadlines {
            timeout: self.timeout_at.filter(|_| self.waiting()),
            escalate: interrupt
                .filter(|_| !self.replied)
                .and_then(|i| i.escalate_at),
            give_up: interrupt.filter(|_| !self.replied).map(|i| i.give_up_at),
        }
    }

    /// A deadline that has passed, read from the clock. The timers in `next_step` alone are not
    /// enough: while a kernel floods the agent with messages (JJava sends one per line), the
    /// runtime's timer wheel can lag the clock by many seconds, and the timeout with it.
    fn overdue(&self) -> Option<Step> {
        let now = Instant::now();
        let past = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let due = self.deadlines();
        if past(due.timeout) {
            Some(Step::TimedOut)
        } else if past(due.escalate) {
            Some(Step::Escalate)
        } else if past(due.give_up) {
            Some(Step::GiveUp)
        } else {
            None
        }
    }

    /// Waits for whatever happens next.
    async fn next_step(
        &self,
        sub: &mut Subscription,
        end_rx: &mut watch::Receiver<Option<EndReason>>,
        interrupts: &mut watch::Receiver<u64>,
        interrupts_open: bool,
    ) -> Step {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let at = |t: Option<Instant>| t.unwrap_or(far);
        let waiting = self.waiting();
        let due = self.deadlines();
        let sink = self.out.sink;
        // Biased, deadlines first: a kernel that publishes faster than we forward (JJava sends a
        // message per line) would otherwise starve the timeout and the escalation for as long as
        // it floods. Messages still come before the end signal (the last output of a dying
        // kernel is kept) and before the quiet-period wake-up (which only counts silence).
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(at(due.timeout)), if due.timeout.is_some() => Step::TimedOut,
            _ = tokio::time::sleep_until(at(due.escalate)), if due.escalate.is_some() => Step::Escalate,
            _ = tokio::time::sleep_until(at(due.give_up)), if due.give_up.is_some() => Step::GiveUp,
            _ = sink.closed(), if self.out.client => Step::ClientGone,
            changed = interrupts.changed(), if interrupts_open && waiting => match changed {
                Ok(()) => Step::InterruptRequested,
                Err(_) => Step::InterruptsClosed,
            },
            _ = tokio::time::sleep_until(at(self.out.flush_at)), if self.out.flush_at.is_some() => Step::Flush,
            incoming = sub.recv() => Step::Message(incoming.map(Box::new)),
            changed = end_rx.changed() => Step::Ended(match changed {
                Ok(()) => *end_rx.borrow_and_update(),
                Err(_) => Some(EndReason::Deleted),
            }),
            _ = tokio::time::sleep_until(at(self.grace_until)), if self.grace_until.is_some() => Step::Wake,
            _ = tokio::time::sleep_until(self.out.keepalive_at()), if self.out.client && self.out.pending.is_empty() => Step::Keepalive,
        }
    }

    /// True once the reply and idle have arrived and either the kernel's end-of-output marker or
    /// a quiet period has; or the reply and a long silence without idle.
    fn done(&mut self) -> bool {
        if !self.replied {
            return false;
        }
        if self.idle && self.output_complete {
            return true;
        }
        let grace = self.quiet_period();
        let now = Instant::now();
        match self.grace_until {
            _ if grace.is_zero() => true,
            Some(t) => now >= t,
            None => {
                self.grace_until = Some(now + grace);
                false
            }
        }
    }

    /// How long to listen for late output after the reply (and idle).
    fn quiet_period(&self) -> Duration {
        if !self.idle {
            IDLE_LOST_AFTER
        } else if self.kernel.spec.output_marker.is_some() && self.reply_ok {
            MARKER_QUIET
        } else {
            self.kernel.spec.output_grace
        }
    }

    async fn on_message(&mut self, incoming: Incoming) {
        let quiet = self.quiet_period();
        if let Some(until) = self.grace_until.as_mut() {
            *until = Instant::now() + quiet;
        }
        let msg = &incoming.msg;
        match (incoming.channel, msg.msg_type()) {
            (Channel::IoPub, "execute_input") => {
                let n = msg
                    .content
                    .get("execution_count")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                self.out
                    .emit(&Event::NumberOfExecutions { execution_count: n })
                    .await;
                self.started = true;
                if let Some(cause) = self.deferred.take() {
                    self.start_interrupt(cause).await;
                }
            }
            (Channel::IoPub, "stream") => self.on_stream(msg).await,
            (Channel::IoPub, kind @ ("display_data" | "execute_result")) => {
                let data = msg.content.get("data").cloned().unwrap_or(Value::Null);
                let result = ExecutionResult::from_bundle(&data, kind == "execute_result");
                self.out.emit(&Event::Result(Box::new(result))).await;
            }
            (Channel::IoPub, "error") => self.report(kernel_error(&msg.content)).await,
            (Channel::IoPub, "status") => match msg.content_str("execution_state") {
                "idle" => {
                    self.idle = true;
                    // The quiet period after idle is another one than before it.
                    self.grace_until = None;
                }
                "error" => {
                    let e =
                        ExecutionError::new("KernelError", "The kernel reported an error state");
                    self.report(e).await;
                    self.idle = true;
                    self.replied = true;
                }
                _ => {}
            },
            (Channel::Shell, "execute_reply") => {
                self.replied = true;
                self.reply_ok = msg.content_str("status") == "ok";
                match msg.content_str("status") {
                    "error" if self.reply_error.is_none() => {
                        self.reply_error = Some(kernel_error(&msg.content));
                    }
                    "abort" | "aborted" => {
                        self.report(ExecutionError::aborted()).await;
                        // A request aborted while queued gets nothing more, so don't wait for
                        // idle. One that ran still gets idle, and only then is the kernel ready:
                        // IRkernel aborts whatever is queued *after* its reply to an interrupted
                        // cell, so a follow-up sent on the reply alone would be aborted too.
                        if !self.started {
                            self.idle = true;
                        }
                    }
                    _ => {}
                }
            }
            // update_display_data, clear_output, comms, input requests: the SDKs have no event
            // for them; dropping them must not stall anything.
            _ => {}
        }
    }

    /// Output, minus the kernel's end-of-output marker (which completes the output).
    async fn on_stream(&mut self, msg: &crate::jupyter::Message) {
        let kind = if msg.content_str("name") == "stderr" {
            "stderr"
        } else {
            "stdout"
        };
        let text_json = msg.stream_text_json();
        let marked = self
            .kernel
            .spec
            .output_marker
            .as_deref()
            .and_then(|marker| strip_marker(&text_json, marker));
        let timestamp = wire::timestamp_from_kernel(msg.date());
        let line = match marked {
            Some(rest) => {
                self.output_complete = true;
                if rest.is_empty() {
                    return;
                }
                stream_line(kind, &Value::String(rest).to_string(), &timestamp)
            }
            None => stream_line(kind, &text_json, &timestamp),
        };
        if self.out.client {
            self.out.line(line).await;
        }
    }

    /// Reports an error unless one was already reported. A timed-out execution reports only its
    /// `TimeoutError` (at the end), whatever the kernel says about the interrupt.
    async fn report(&mut self, error: ExecutionError) {
        if self.error_sent || self.cause() == Some(Cause::Timeout) {
            return;
        }
        self.error_sent = true;
        self.out.emit(&Event::Error(error)).await;
    }

    fn cause(&self) -> Option<Cause> {
        self.interrupt.as_ref().map(|i| i.cause)
    }

    /// The first cause wins; a cause that arrives before the cell started waits for it.
    async fn request_interrupt(&mut self, cause: Cause) {
        if self.interrupt.is_some() || self.deferred.is_some() {
            return;
        }
        if self.started {
            self.start_interrupt(cause).await;
        } else {
            self.deferred = Some(cause);
        }
    }

    async fn start_interrupt(&mut self, cause: Cause) {
        tracing::info!(?cause, "interrupting the kernel");
        let now = Instant::now();
        let escalate_at = self
            .kernel
            .spec
            .await_interrupt
            .map(|step| now + step.escalate_after);
        self.interrupt = Some(Interrupt {
            cause,
            escalate_at,
            give_up_at: now + INTERRUPT_GRACE,
        });
        if let Err(e) = self.kernel.interrupt().await {
            tracing::warn!(error = %e, "interrupt failed");
        }
    }

    /// The await-interrupt signal did not end the cell: it is busy, so interrupt it the
    /// standard way too.
    async fn escalate(&mut self) {
        if let Some(interrupt) = self.interrupt.as_mut() {
            interrupt.escalate_at = None;
        }
        tracing::info!("cell still running; sending the kernel's standard interrupt");
        let sent =
            tokio::time::timeout(INTERRUPT_REQUEST_TIMEOUT, self.kernel.interrupt_standard()).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "interrupt failed"),
            Err(_) => tracing::warn!("the kernel did not answer the interrupt request"),
        }
    }

    /// Every way out: a timed-out execution's one error if it has none yet, the closing line,
    /// then whatever is gathered, in one write.
    async fn finish(mut self, kernel_alive: bool, needs_restart: bool) -> Outcome {
        if self.cause() == Some(Cause::Timeout) && !self.error_sent {
            let error = ExecutionError::timeout(self.timeout.unwrap_or_default());
            self.out.emit(&Event::Error(error)).await;
        }
        self.out.emit(&Event::EndOfExecution).await;
        self.out.flush().await;
        Outcome {
            kernel_alive,
            needs_restart,
            interrupted: self.interrupt.is_some(),
        }
    }

    async fn finish_normally(mut self) -> Outcome {
        if !self.idle {
            tracing::warn!("the kernel's idle status never came; ending the execution without it");
        }
        if let Some(error) = self.reply_error.take() {
            self.report(error).await;
        }
        self.finish(true, false).await
    }

    async fn finish_ended(mut self, reason: EndReason) -> Outcome {
        self.report(reason.error()).await;
        self.finish(false, false).await
    }

    /// The interrupted cell did not end: its kernel will be replaced, and the error says so.
    /// Before giving up on an interrupted cell: a kernel that publishes a message per line
    /// (JJava) outpaces the agent, and its reply can be queued behind output not yet forwarded.
    /// Works through what is queued, for at most another grace period, and says whether the
    /// reply was among it. A cell that still floods never gets there.
    async fn replied_behind_backlog(&mut self, sub: &mut Subscription) -> bool {
        let until = Instant::now() + INTERRUPT_GRACE;
        while !self.replied && Instant::now() < until {
            match sub.try_recv() {
                Some(incoming) => self.on_message(incoming).await,
                None => break,
            }
        }
        self.replied
    }

    async fn finish_stuck(mut self) -> Outcome {
        tracing::warn!("the interrupted cell did not stop; its kernel will be replaced");
        if !self.error_sent {
            let error = match self.cause() {
                Some(Cause::Timeout) => {
                    ExecutionError::timeout_state_lost(self.timeout.unwrap_or_default())
                }
                _ => ExecutionError::interrupt_state_lost(),
            };
            self.error_sent = true;
            self.out.emit(&Event::Error(error)).await;
        }
        self.finish(true, true).await
    }
}

/// The text before `marker` when the stream text (as a JSON string literal) ends with it. Stream
/// text stays JSON on the hot path; only a text that names the marker is decoded.
fn strip_marker(text_json: &str, marker: &str) -> Option<String> {
    let core = marker.trim_matches(|c: char| c.is_control());
    if core.is_empty() || !text_json.contains(core) {
        return None;
    }
    let text: String = serde_json::from_str(text_json).ok()?;
    text.strip_suffix(marker).map(str::to_string)
}

/// Why the kernel's generation ended, once it says; `Died` if it does not say in time.
async fn wait_end_reason(end_rx: &mut watch::Receiver<Option<EndReason>>) -> EndReason {
    let wait = async {
        loop {
            let current = *end_rx.borrow_and_update();
            if let Some(reason) = current {
                return reason;
            }
            if end_rx.changed().await.is_err() {
                return EndReason::Deleted;
            }
        }
    };
    tokio::time::timeout(END_REASON_WAIT, wait)
        .await
        .unwrap_or(EndReason::Died)
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

#[cfg(test)]
mod tests {
    use super::strip_marker;

    #[test]
    fn the_end_of_output_marker_is_found_and_stripped() {
        let marker = "\u{0}done\u{0}\n";
        assert_eq!(
            strip_marker(r#""\u0000done\u0000\n""#, marker),
            Some(String::new())
        );
        assert_eq!(
            strip_marker(r#""last line\n\u0000done\u0000\n""#, marker),
            Some("last line\n".to_string())
        );
        assert_eq!(
            strip_marker(r#""done, but not the marker\n""#, marker),
            None
        );
        assert_eq!(strip_marker(r#""plain\n""#, marker), None);
    }
}
