//! One `/execute` stream as it arrives, read line by line with a silence bound and a deadline, so
//! the runner can inject a fault at a chosen moment and tell a hung stream from a slow one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use kernelbox::client::Client;

/// What a stream delivered, for the checker.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// `(name, value)` of every `error` line, in order.
    pub errors: Vec<(String, String)>,
    /// `end_of_execution` arrived.
    pub ended: bool,
    /// Why the stream counts as hung, if it does.
    pub hung: Option<String>,
    /// The client dropped the response on purpose (a disconnect fault).
    pub cut: bool,
    /// Lines that were not valid JSON, or came after `end_of_execution`.
    pub bad_lines: usize,
    /// The request itself failed (no stream at all).
    pub failed: Option<String>,
    /// Newlines seen so far in stdout: how far a cell's printing has come.
    pub stdout_lines: usize,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The condition the caller waited for is met.
    Met,
    /// `end_of_execution` arrived.
    End,
    /// The body closed without `end_of_execution`.
    Closed,
    /// The deadline passed (the caller decides whether that is a hang).
    Deadline,
    /// No line at all, not even a keepalive, for the silence bound: hung.
    Silent,
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct Live {
    body: Body,
    partial: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
    last_line: Instant,
    silence: Duration,
    pub out: Outcome,
}

impl Live {
    /// Sends `POST /execute`; `Err` when the request fails before the stream starts.
    pub async fn start(
        client: &Client,
        context_id: &str,
        code: &str,
        timeout: Option<f64>,
        silence: Duration,
    ) -> Result<Live, String> {
        let mut body = json!({"code": code, "context_id": context_id});
        if let Some(t) = timeout {
            body["timeout"] = json!(t);
        }
        let res = tokio::time::timeout(silence, client.execute_raw(&body))
            .await
            .map_err(|_| format!("no response headers within {silence:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(Live {
            body: Box::pin(res.bytes_stream()),
            partial: Vec::new(),
            ready: VecDeque::new(),
            last_line: Instant::now(),
            silence,
            out: Outcome::default(),
        })
    }

    /// Reads until `done` holds, the stream ends, or `deadline` or the silence bound passes.
    pub async fn until(&mut self, deadline: Instant, done: impl Fn(&Outcome) -> bool) -> Step {
        loop {
            if done(&self.out) {
                return Step::Met;
            }
            if self.out.ended {
                return Step::End;
            }
            if let Some(line) = self.ready.pop_front() {
                self.apply(&line);
                continue;
            }
            if let Some(step) = self.fill(deadline).await {
                return step;
            }
        }
    }

    /// Reads to the end; a stream that does not end by `deadline`, or goes silent, is hung.
    pub async fn finish(mut self, deadline: Instant) -> Outcome {
        let step = self.until(deadline, |_| false).await;
        self.conclude(step)
    }

    /// The outcome after a read stopped with `step`: a met condition means the client leaves
    /// now (a disconnect fault); a passed deadline or a silent stream means hung.
    pub fn conclude(mut self, step: Step) -> Outcome {
        match step {
            Step::Met => return self.cut(),
            Step::Deadline => {
                self.out.hung = Some(format!(
                    "no end_of_execution by its deadline (last line {:.1} s before)",
                    self.last_line.elapsed().as_secs_f64()
                ))
            }
            Step::Silent => self.out.hung = Some(format!("silent for {:?}", self.silence)),
            Step::End | Step::Closed => {}
        }
        self.out
    }

    /// Drops the response mid-stream: the client disconnects.
    pub fn cut(mut self) -> Outcome {
        self.out.cut = true;
        self.out
    }

    /// Waits for the next chunk and splits it into lines. `Some` when reading must stop.
    async fn fill(&mut self, deadline: Instant) -> Option<Step> {
        let silent_at = self.last_line + self.silence;
        let chunk = match tokio::time::timeout_at(deadline.min(silent_at), self.body.next()).await {
            Err(_) if deadline <= silent_at => return Some(Step::Deadline),
            Err(_) => return Some(Step::Silent),
            Ok(None) | Ok(Some(Err(_))) => return Some(Step::Closed),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let mut rest = &chunk[..];
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..pos]);
            self.ready.push_back(line);
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        None
    }

    /// Folds one line into the outcome.
    fn apply(&mut self, line: &[u8]) {
        self.last_line = Instant::now();
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            self.out.bad_lines += 1;
            return;
        };
        if self.out.ended {
            self.out.bad_lines += 1;
            return;
        }
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "stdout" => {
                let t = text("text");
                self.out.stdout_lines += memchr::memchr_iter(b'\n', t.as_bytes()).count();
                self.out.stdout.push_str(&t);
            }
            "stderr" => self.out.stderr.push_str(&text("text")),
            "error" => self.out.errors.push((text("name"), text("value"))),
            "end_of_execution" => self.out.ended = true,
            _ => {}
        }
    }
}
