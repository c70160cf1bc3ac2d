//! Fan-out of one process's output to any number of subscribers (the `Start` stream and every
//! `Connect` stream), such that **no subscriber can block the process or the other subscribers**
//! (envd's blocking fan-out let one dead consumer wedge them all, E2B#1587).
//!
//! Policy: every subscriber has its own queue bounded in bytes ([`QUEUE_BUDGET`]). Publishing never
//! waits: a chunk that does not fit in a subscriber's queue is **dropped for that subscriber only**,
//! and once its queue has room again the subscriber first gets one notice on the same channel
//! (stderr, or the terminal for a PTY) saying how many bytes it lost. The process keeps running and
//! its pipes keep draining; subscribers that keep up lose nothing. The `end` event is never dropped:
//! it is queued past the budget, so every subscriber's stream ends with exactly one `end`.
//! Dropping a [`Subscription`] unsubscribes it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Bytes of output one subscriber may have queued before new chunks are dropped for it. Large
/// enough that a reader that is merely slower than a burst (a 50 MB `cat` into a Python client)
/// rarely loses anything, small enough that a dead reader costs little memory (chunks are shared
/// between subscribers, so this bounds the memory a subscriber pins).
pub const QUEUE_BUDGET: usize = 16 << 20;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
    End(End),
}

impl Event {
    fn len(&self) -> usize {
        match self {
            Event::Stdout(b) | Event::Stderr(b) | Event::Pty(b) => b.len(),
            Event::End(_) => 0,
        }
    }
}

/// How a process ended, as E2B's envd reports it (Go's `os.ProcessState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The exit code, or -1 when a signal ended the process.
    pub exit_code: i32,
    /// Whether the process exited by itself (not through a signal).
    pub exited: bool,
    /// Go's `ProcessState.String()`: `exit status 1`, `signal: killed`.
    pub status: String,
    /// Go's wait error: the status again when the process did not succeed.
    pub error: Option<String>,
}

impl End {
    /// The `end` of a process with this wait status.
    pub fn from_status(status: std::process::ExitStatus) -> End {
        use std::os::unix::process::ExitStatusExt;
        let (exit_code, exited, text) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, true, format!("exit status {code}")),
            (None, Some(sig)) => {
                let core = if status.core_dumped() {
                    " (core dumped)"
                } else {
                    ""
                };
                (-1, false, format!("signal: {}{core}", signal_name(sig)))
            }
            (None, None) => (-1, false, status.to_string()),
        };
        let error = (!status.success()).then(|| text.clone());
        End {
            exit_code,
            exited,
            status: text,
            error,
        }
    }

    /// The `end` of a process whose status could not be read.
    pub fn wait_failed(err: &std::io::Error) -> End {
        End {
            exit_code: -1,
            exited: false,
            status: String::new(),
            error: Some(format!("wait: {err}")),
        }
    }
}

/// Go's names for signals (`syscall.Signal.String()` on Linux), as envd prints them.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGSYS => "bad system call",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// One subscriber's queue.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// One waiter (the subscription); `notify_one` keeps a permit, so no wake-up is lost.
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Event>,
    /// Bytes of data queued (the `end` counts nothing).
    bytes: usize,
    /// Bytes dropped since the subscriber last got a notice about it.
    lost: u64,
    /// The `end` went in; nothing follows it.
    ended: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event` unless it would exceed the budget (then it is counted as lost). Never waits.
    fn offer(&self, event: &Event, budget: usize) {
        let mut q = self.lock();
        if q.ended {
            return;
        }
        let len = event.len();
        if let Event::End(_) = event {
            q.ended = true;
        } else if q.bytes + len > budget {
            q.lost += len as u64;
            return;
        } else if q.lost > 0 {
            let notice = lost_notice(q.lost, event);
            q.bytes += notice.len();
            q.items.push_back(notice);
            q.lost = 0;
        }
        q.bytes += len;
        q.items.push_back(event.clone());
        drop(q);
        self.ready.notify_one();
    }
}

/// The notice a subscriber gets, on the channel the lost output was on, once it has room again.
fn lost_notice(lost: u64, next: &Event) -> Event {
    let text = format!(
        "\n[kernelbox: {lost} bytes of output were dropped because this client fell behind]\n"
    );
    match next {
        Event::Pty(_) => Event::Pty(Bytes::from(text)),
        _ => Event::Stderr(Bytes::from(text)),
    }
}

/// A process's output: its subscribers, and its end once known.
pub struct Output {
    state: Mutex<OutputState>,
    budget: usize,
}

#[derive(Default)]
struct OutputState {
    next_id: u64,
    subscribers: Vec<(u64, Arc<Queue>)>,
    end: Option<End>,
}

impl Output {
    pub fn new() -> Arc<Output> {
        Self::with_budget(QUEUE_BUDGET)
    }

    /// An output whose subscribers may queue `budget` bytes each (tests use small ones).
    pub fn with_budget(budget: usize) -> Arc<Output> {
        Arc::new(Output {
            state: Mutex::new(OutputState::default()),
            budget,
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber: it gets what is published from now on (no replay), or only the `end` if
    /// the process has already ended.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let queue = Arc::new(Queue::default());
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        match &state.end {
            Some(end) => queue.offer(&Event::End(end.clone()), self.budget),
            None => state.subscribers.push((id, queue.clone())),
        }
        Subscription {
            output: self.clone(),
            id,
            queue,
        }
    }

    /// Hands a chunk to every subscriber; never waits.
    pub fn publish(&self, event: Event) {
        let state = self.lock();
        for (_, queue) in &state.subscribers {
            queue.offer(&event, self.budget);
        }
    }

    /// The process ended: every subscriber gets `end` after what it has queued; later
    /// subscribers get only the `end`.
    pub fn finish(&self, end: End) {
        let mut state = self.lock();
        let event = Event::End(end.clone());
        for (_, queue) in state.subscribers.drain(..) {
            queue.offer(&event, self.budget);
        }
        state.end = Some(end);
    }

    /// How many subscribers are attached.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|(i, _)| *i != id);
    }
}

/// One subscriber's view of a process's output. Dropping it unsubscribes.
pub struct Subscription {
    output: Arc<Output>,
    id: u64,
    queue: Arc<Queue>,
}

impl Subscription {
    /// The next event: data, then exactly one [`Event::End`], then `None`.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            {
                let mut q = self.queue.lock();
                if let Some(event) = q.items.pop_front() {
                    q.bytes -= event.len();
                    return Some(event);
                }
                if q.ended {
                    return None;
                }
            }
            self.queue.ready.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.output.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Event {
        Event::Stdout(Bytes::from(vec![b'x'; n]))
    }

    fn end() -> End {
        End {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None,
        }
    }

    #[tokio::test]
    async fn a_full_subscriber_loses_data_not_the_others() {
        let output = Output::with_budget(100);
        let mut slow = output.subscribe();
        let mut fast = output.subscribe();
        for _ in 0..10 {
            output.publish(data(40));
            assert_eq!(fast.next().await, Some(data(40)));
        }
        output.finish(end());
        assert_eq!(fast.next().await, Some(Event::End(end())));
        assert_eq!(fast.next().await, None);
        // The slow one kept two chunks, lost eight, and still gets the end.
        assert_eq!(slow.next().await, Some(data(40)));
        assert_eq!(slow.next().await, Some(data(40)));
        assert_eq!(slow.next().await, Some(Event::End(end())));
    }

    #[tokio::test]
    async fn a_subscriber_that_catches_up_is_told_what_it_lost() {
        let output = Output::with_budget(50);
        let mut sub = output.subscribe();
        output.publish(data(40));
        output.publish(data(40)); // lost
        assert_eq!(sub.next().await, Some(data(40)));
        output.publish(data(10));
        let Some(Event::Stderr(notice)) = sub.next().await else {
            panic!("expected a notice")
        };
        assert!(String::from_utf8_lossy(&notice).contains("40 bytes"));
        assert_eq!(sub.next().await, Some(data(10)));
    }

    #[tokio::test]
    async fn late_subscribers_get_only_the_end_and_drops_unsubscribe() {
        let output = Output::new();
        let sub = output.subscribe();
        assert_eq!(output.subscribers(), 1);
        drop(sub);
        assert_eq!(output.subscribers(), 0);
        output.finish(end());
        let mut late = output.subscribe();
        assert_eq!(late.next().await, Some(Event::End(end())));
        assert_eq!(late.next().await, None);
    }

    #[test]
    fn statuses_read_like_go() {
        use std::os::unix::process::ExitStatusExt;
        let exited = End::from_status(std::process::ExitStatus::from_raw(1 << 8));
        assert_eq!(
            (exited.exit_code, exited.exited, exited.status.as_str()),
            (1, true, "exit status 1")
        );
        assert_eq!(exited.error.as_deref(), Some("exit status 1"));
        let killed = End::from_status(std::process::ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!(
            (killed.exit_code, killed.exited, killed.status.as_str()),
            (-1, false, "signal: killed")
        );
        let ok = End::from_status(std::process::ExitStatus::from_raw(0));
        assert_eq!((ok.status.as_str(), ok.error), ("exit status 0", None));
    }
}
