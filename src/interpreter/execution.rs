//! What an execution produces: the events streamed from `POST /execute`, how kernel output maps to
//! them, and the [`Execution`] the SDKs (and our client) fold the stream into.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ndjson;

/// One rich output: a kernel MIME bundle mapped to E2B's fixed fields (code-interpreter-api.md
/// §5.1). Field order is the wire order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub javascript: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Value>,
    /// MIME types without a field of their own; always present, `{}` when empty.
    #[serde(default)]
    pub extra: Map<String, Value>,
    #[serde(default)]
    pub is_main_result: bool,
}

impl ExecutionResult {
    /// Maps a kernel MIME bundle (`display_data` or `execute_result` `data`).
    pub fn from_bundle(bundle: &Value, is_main_result: bool) -> ExecutionResult {
        let mut r = ExecutionResult {
            is_main_result,
            ..Default::default()
        };
        let Some(map) = bundle.as_object() else {
            return r;
        };
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            // Some kernels send multi-line strings as lists of lines.
            Value::Array(parts) => Some(parts.iter().filter_map(Value::as_str).collect()),
            other => Some(other.to_string()),
        };
        for (mime, v) in map {
            match mime.as_str() {
                "text/plain" => r.text = text(v).map(|s| strip_quotes(&s)),
                "text/html" => r.html = text(v),
                "text/markdown" => r.markdown = text(v),
                "image/svg+xml" => r.svg = text(v),
                "image/png" => r.png = text(v).map(|s| s.trim_end().to_string()),
                "image/jpeg" => r.jpeg = text(v).map(|s| s.trim_end().to_string()),
                "application/pdf" => r.pdf = text(v),
                "text/latex" => r.latex = text(v),
                "application/json" => r.json = Some(v.clone()),
                "application/javascript" => r.javascript = text(v),
                "e2b/data" => r.data = Some(v.clone()),
                "e2b/chart" => r.chart = Some(v.clone()),
                _ => {
                    r.extra.insert(mime.clone(), v.clone());
                }
            }
        }
        r
    }
}

/// E2B strips one pair of surrounding quotes from `text/plain` (`'quoted'` → `quoted`).
fn strip_quotes(s: &str) -> String {
    let b = s.as_bytes();
    let quoted = |q: u8| b.first() == Some(&q) && b.last() == Some(&q);
    if quoted(b'\'') || quoted(b'"') {
        if s.len() >= 2 {
            s[1..s.len() - 1].to_string()
        } else {
            String::new()
        }
    } else {
        s.to_string()
    }
}

/// An error in an execution: the kernel's own, or one of the synthetic ones below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionError {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub traceback: String,
}

impl ExecutionError {
    pub fn new(name: &str, value: impl Into<String>) -> ExecutionError {
        ExecutionError {
            name: name.to_string(),
            value: value.into(),
            traceback: String::new(),
        }
    }

    /// The kernel died and came back with a fresh kernel (same id, same cwd).
    pub fn context_restarting() -> ExecutionError {
        Self::new("ContextRestarting", "Context was restarted")
    }

    /// The context was restarted or deleted under a running execution.
    pub fn unexpected_end() -> ExecutionError {
        Self::new(
            "UnexpectedEndOfExecution",
            "Connection to the execution was closed before the execution was finished",
        )
    }

    pub fn aborted() -> ExecutionError {
        Self::new("ExecutionAborted", "Execution was aborted")
    }

    /// kernelbox's `timeout` extension fired.
    pub fn timeout(secs: f64) -> ExecutionError {
        Self::new(
            "TimeoutError",
            format!("Execution timed out after {} s", seconds(secs)),
        )
    }

    /// The `timeout` fired and the interrupted cell did not stop, so its kernel was replaced.
    pub fn timeout_state_lost(secs: f64) -> ExecutionError {
        Self::new(
            "TimeoutError",
            format!(
                "Execution timed out after {} s and did not stop when interrupted: the context \
                 was restarted and its state (variables, imports) was lost",
                seconds(secs)
            ),
        )
    }

    /// An interrupted cell did not stop, so its kernel was replaced.
    pub fn interrupt_state_lost() -> ExecutionError {
        Self::new(
            "ContextRestarting",
            "The interrupted execution did not stop: the context was restarted and its state \
             (variables, imports) was lost",
        )
    }
}

/// Seconds as the user wrote them: `1`, not `1.0`.
fn seconds(secs: f64) -> String {
    if secs.fract() == 0.0 && secs < 1e15 {
        format!("{}", secs as i64)
    } else {
        format!("{secs}")
    }
}

/// One line of the `/execute` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    NumberOfExecutions {
        execution_count: i64,
    },
    Stdout {
        text: String,
        #[serde(default)]
        timestamp: String,
    },
    Stderr {
        text: String,
        #[serde(default)]
        timestamp: String,
    },
    Result(Box<ExecutionResult>),
    Error(ExecutionError),
    Keepalive,
    EndOfExecution,
}

/// The wire line of a `stdout`/`stderr` event. `text_json` is the text as a JSON string literal,
/// re-encoded without unescaping: output can be tens of megabytes and is never copied into an
/// [`Event`] or a `Value` on the server.
pub fn stream_line(kind: &str, text_json: &str, timestamp: &str) -> Vec<u8> {
    write_stream_line(kind, text_json.len(), timestamp, |out| {
        ndjson::write_raw_json_str(out, text_json)
    })
}

/// `{"type": KIND, "text": …, "timestamp": …}` with the text written by `write_text`.
fn write_stream_line(
    kind: &str,
    text_len: usize,
    timestamp: &str,
    write_text: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(text_len + 96);
    out.extend_from_slice(b"{\"type\": \"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\", \"text\": ");
    write_text(&mut out);
    out.extend_from_slice(b", \"timestamp\": ");
    ndjson::write_str(&mut out, timestamp);
    out.extend_from_slice(b"}\n");
    out
}

impl Event {
    /// The wire line, newline included, written like Python's `json.dumps`.
    ///
    /// An event that cannot be serialised (not expected: every field is a string or JSON) is
    /// logged and written as an `error` event in its place, so the client learns that output was
    /// lost instead of reading a keepalive.
    pub fn to_line(&self) -> Vec<u8> {
        self.try_to_line().unwrap_or_else(|e| {
            tracing::error!(event = self.kind(), error = %e, "could not serialise an execution event");
            error_line(&ExecutionError::new(
                "SerializationError",
                format!("kernelbox could not serialise a {} event: {e}", self.kind()),
            ))
        })
    }

    /// The wire line, or why the event could not be serialised.
    pub fn try_to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        match self {
            // Written by hand: output can be tens of megabytes and must not be copied into a
            // `Value` first.
            Event::Stdout { text, timestamp } | Event::Stderr { text, timestamp } => {
                return Ok(write_stream_line(
                    self.kind(),
                    text.len(),
                    timestamp,
                    |out| ndjson::write_str(out, text),
                ));
            }
            Event::Keepalive => out.extend_from_slice(br#"{"type": "keepalive"}"#),
            Event::EndOfExecution => out.extend_from_slice(br#"{"type": "end_of_execution"}"#),
            other => ndjson::write_value(&mut out, &serde_json::to_value(other)?),
        }
        out.push(b'\n');
        Ok(out)
    }

    /// The event's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::NumberOfExecutions { .. } => "number_of_executions",
            Event::Stdout { .. } => "stdout",
            Event::Stderr { .. } => "stderr",
            Event::Result(_) => "result",
            Event::Error(_) => "error",
            Event::Keepalive => "keepalive",
            Event::EndOfExecution => "end_of_execution",
        }
    }
}

/// An `error` line written by hand (the same bytes serde writes), so it cannot fail itself.
fn error_line(error: &ExecutionError) -> Vec<u8> {
    let mut out = Vec::from(&b"{\"type\": \"error\", \"name\": "[..]);
    ndjson::write_str(&mut out, &error.name);
    out.extend_from_slice(b", \"value\": ");
    ndjson::write_str(&mut out, &error.value);
    out.extend_from_slice(b", \"traceback\": ");
    ndjson::write_str(&mut out, &error.traceback);
    out.extend_from_slice(b"}\n");
    out
}

impl Event {
    /// Parses one wire line. Unknown event types are `Ok(None)` (the SDKs ignore them).
    ///
    /// Goes through one `Value` and moves strings out of it: serde's internally tagged enums
    /// buffer every field first, which copies a 50 MB stdout line twice.
    pub fn from_line(line: &[u8]) -> Result<Option<Event>, serde_json::Error> {
        if let Some(event) = Self::stream_fast_path(line) {
            return Ok(Some(event));
        }
        let mut v: Value = serde_json::from_slice(line)?;
        let mut take_str = |key: &str| match v.get_mut(key).map(Value::take) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let kind = take_str("type");
        Ok(Some(match kind.as_str() {
            "stdout" => Event::Stdout {
                text: take_str("text"),
                timestamp: take_str("timestamp"),
            },
            "stderr" => Event::Stderr {
                text: take_str("text"),
                timestamp: take_str("timestamp"),
            },
            "number_of_executions" => Event::NumberOfExecutions {
                execution_count: v
                    .get("execution_count")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
            },
            "result" => Event::Result(Box::new(serde_json::from_value(v)?)),
            "error" => Event::Error(serde_json::from_value(v)?),
            "keepalive" => Event::Keepalive,
            "end_of_execution" => Event::EndOfExecution,
            _ => return Ok(None),
        }))
    }
}

impl Event {
    /// `stdout`/`stderr` lines exactly as `stream_line` writes them, decoded in one pass (see
    /// `ndjson::read_str`); anything else, or anything odd, goes the generic way.
    fn stream_fast_path(line: &[u8]) -> Option<Event> {
        let (stdout, rest) = if let Some(r) = line.strip_prefix(br#"{"type": "stdout", "text": "#) {
            (true, r)
        } else {
            (false, line.strip_prefix(br#"{"type": "stderr", "text": "#)?)
        };
        let (text, used) = ndjson::read_str(rest)?;
        let tail = rest[used..].strip_prefix(br#", "timestamp": "#)?;
        let (timestamp, used) = ndjson::read_str(tail)?;
        if tail[used..].trim_ascii() != b"}" {
            return None;
        }
        Some(if stdout {
            Event::Stdout { text, timestamp }
        } else {
            Event::Stderr { text, timestamp }
        })
    }
}

/// Stdout and stderr chunks, one per event (not split into lines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// The outcome of one `/execute`, folded the way the official SDKs fold the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub results: Vec<ExecutionResult>,
    pub logs: Logs,
    /// The last error wins, as in the SDKs.
    pub error: Option<ExecutionError>,
    pub execution_count: Option<i64>,
}

impl Execution {
    /// Folds one event in.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::NumberOfExecutions { execution_count } => {
                self.execution_count = Some(execution_count)
            }
            Event::Stdout { text, .. } => self.logs.stdout.push(text),
            Event::Stderr { text, .. } => self.logs.stderr.push(text),
            Event::Result(r) => self.results.push(*r),
            Event::Error(e) => self.error = Some(e),
            Event::Keepalive | Event::EndOfExecution => {}
        }
    }

    /// The `text` of the main result, like the SDKs' `Execution.text`.
    pub fn text(&self) -> Option<&str> {
        self.results
            .iter()
            .find(|r| r.is_main_result)
            .and_then(|r| r.text.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_mapping_and_order() {
        let r = ExecutionResult::from_bundle(
            &json!({"text/plain": "'hi'", "application/x-custom": "zz", "text/html": "<b>"}),
            true,
        );
        let line = String::from_utf8(Event::Result(Box::new(r)).to_line()).unwrap();
        assert_eq!(
            line,
            "{\"type\": \"result\", \"text\": \"hi\", \"html\": \"<b>\", \"extra\": {\"application/x-custom\": \"zz\"}, \"is_main_result\": true}\n"
        );
        assert_eq!(strip_quotes("'"), "");
        assert_eq!(strip_quotes("\"a\""), "a");
        assert_eq!(strip_quotes("a'"), "a'");
    }

    #[test]
    fn lines_round_trip() {
        for ev in [
            Event::NumberOfExecutions { execution_count: 3 },
            Event::Stdout {
                text: "é\n".into(),
                timestamp: "t".into(),
            },
            Event::Error(ExecutionError::timeout(2.5)),
            Event::EndOfExecution,
        ] {
            let line = ev.to_line();
            assert!(line.is_ascii());
            let back: Event = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, ev);
            assert_eq!(Event::from_line(&line).unwrap(), Some(ev));
        }
        assert_eq!(
            ExecutionError::timeout(3.0).value,
            "Execution timed out after 3 s"
        );
    }

    #[test]
    fn the_fallback_error_line_is_what_serde_writes() {
        let error = ExecutionError {
            name: "E".into(),
            value: "é \"v\"".into(),
            traceback: "t\n".into(),
        };
        assert_eq!(error_line(&error), Event::Error(error).to_line());
    }
}
