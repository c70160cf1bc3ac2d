//! A Rust client for the interpreter API, used by the tests, the benchmark and users. It folds the
//! NDJSON stream into an [`Execution`] exactly as the official SDKs do (last error wins, output
//! kept as chunks), calling back for each event as it arrives.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::interpreter::{Event, Execution, ExecutionError, ExecutionResult};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("bad line in the execution stream: {0}")]
    BadLine(String),
    /// A sandbox API call failed with a Connect error (`not_found: ...`), or its stream was cut.
    #[error("{0}")]
    Rpc(String),
}

/// What a command did, from its `Process.Start` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// -1 when a signal ended it.
    pub exit_code: i32,
    /// `exit status 0`, `signal: killed`.
    pub status: String,
    pub error: Option<String>,
}

/// A context as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// Options of one `run_code`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub language: Option<String>,
    pub context_id: Option<String>,
    pub env_vars: Vec<(String, String)>,
    /// Server-side timeout in seconds (kernelbox extension).
    pub timeout: Option<f64>,
}

/// A callback for one kind of event.
pub type Callback<'a, T> = Option<Box<dyn FnMut(&T) + Send + 'a>>;

/// Callbacks for the events of one execution, as the SDKs' `on_stdout` and friends.
#[derive(Default)]
pub struct Callbacks<'a> {
    pub on_stdout: Callback<'a, str>,
    pub on_stderr: Callback<'a, str>,
    pub on_result: Callback<'a, ExecutionResult>,
    pub on_error: Callback<'a, ExecutionError>,
}

impl Callbacks<'_> {
    fn call(&mut self, event: &Event) {
        match event {
            Event::Stdout { text, .. } => {
                if let Some(f) = &mut self.on_stdout {
                    f(text)
                }
            }
            Event::Stderr { text, .. } => {
                if let Some(f) = &mut self.on_stderr {
                    f(text)
                }
            }
            Event::Result(r) => {
                if let Some(f) = &mut self.on_result {
                    f(r)
                }
            }
            Event::Error(e) => {
                if let Some(f) = &mut self.on_error {
                    f(e)
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the interpreter at `base` (e.g. `http://127.0.0.1:49999`).
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn check(res: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if res.status().is_success() {
            Ok(res)
        } else {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            Err(ClientError::Status { status, body })
        }
    }

    pub async fn health(&self) -> Result<(), ClientError> {
        Self::check(self.http.get(self.url("/health")).send().await?).await?;
        Ok(())
    }

    /// Runs a command through the sandbox API (`Process.Start`, reached through this URL with
    /// `E2b-Sandbox-Port: 49983`) and waits for its end. `timeout` bounds the command's life.
    pub async fn run_command(
        &self,
        cmd: &str,
        args: &[&str],
        timeout: Option<std::time::Duration>,
    ) -> Result<CommandOutput, ClientError> {
        let message = json!({"process": {"cmd": cmd, "args": args}, "stdin": false}).to_string();
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message.as_bytes());
        let mut req = self
            .http
            .post(self.url("/process.Process/Start"))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .header("e2b-sandbox-port", "49983")
            .body(body);
        if let Some(t) = timeout {
            req = req.header("connect-timeout-ms", t.as_millis().to_string());
        }
        let bytes = Self::check(req.send().await?).await?.bytes().await?;
        fold_command(&bytes)
    }

    /// Starts `/execute` and returns the streaming response (for callers that want raw lines).
    pub async fn execute_raw(&self, body: &Value) -> Result<reqwest::Response, ClientError> {
        let res = self
            .http
            .post(self.url("/execute"))
            .json(body)
            .send()
            .await?;
        Self::check(res).await
    }

    /// Runs code and folds the stream into an [`Execution`].
    pub async fn run_code(&self, code: &str, opts: &RunOptions) -> Result<Execution, ClientError> {
        self.run_code_with(code, opts, &mut Callbacks::default(), |_| {})
            .await
    }

    /// Runs code, calling `callbacks` and `on_event` for every event as it arrives.
    pub async fn run_code_with(
        &self,
        code: &str,
        opts: &RunOptions,
        callbacks: &mut Callbacks<'_>,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Execution, ClientError> {
        let mut body = json!({"code": code});
        if let Some(l) = &opts.language {
            body["language"] = json!(l);
        }
        if let Some(c) = &opts.context_id {
            body["context_id"] = json!(c);
        }
        if !opts.env_vars.is_empty() {
            let map: Map<String, Value> = opts
                .env_vars
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            body["env_vars"] = Value::Object(map);
        }
        if let Some(t) = opts.timeout {
            body["timeout"] = json!(t);
        }
        let res = self.execute_raw(&body).await?;
        let mut execution = Execution::default();
        let mut stream = res.bytes_stream();
        // The unfinished line: chunks kept as they came and joined once, at its newline.
        let mut pending: Vec<bytes::Bytes> = Vec::new();
        let mut pending_len = 0;
        let mut handle = |line: &[u8], execution: &mut Execution| -> Result<(), ClientError> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let event = match Event::from_line(line) {
                Ok(Some(e)) => e,
                // Event types we do not know are ignored, as the SDKs do.
                Ok(None) => return Ok(()),
                Err(_) => {
                    return Err(ClientError::BadLine(
                        String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
                    ))
                }
            };
            callbacks.call(&event);
            on_event(&event);
            execution.apply(event);
            Ok(())
        };
        while let Some(chunk) = stream.next().await {
            let mut rest = chunk?;
            while let Some(pos) = memchr::memchr(b'\n', &rest) {
                let head = rest.split_to(pos + 1);
                let head = &head[..pos];
                if pending.is_empty() {
                    handle(head, &mut execution)?;
                } else {
                    let mut line = Vec::with_capacity(pending_len + head.len());
                    for part in pending.drain(..) {
                        line.extend_from_slice(&part);
                    }
                    line.extend_from_slice(head);
                    pending_len = 0;
                    handle(&line, &mut execution)?;
                }
            }
            if !rest.is_empty() {
                pending_len += rest.len();
                pending.push(rest);
            }
        }
        if !pending.is_empty() {
            let line: Vec<u8> = pending.concat();
            handle(&line, &mut execution)?;
        }
        Ok(execution)
    }

    pub async fn create_context(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<ContextInfo, ClientError> {
        let mut body = json!({});
        if let Some(l) = language {
            body["language"] = json!(l);
        }
        if let Some(c) = cwd {
            body["cwd"] = json!(c);
        }
        let res = self
            .http
            .post(self.url("/contexts"))
            .json(&body)
            .send()
            .await?;
        Ok(Self::check(res).await?.json().await?)
    }

    pub async fn list_contexts(&self) -> Result<Vec<ContextInfo>, ClientError> {
        let res = self.http.get(self.url("/contexts")).send().await?;
        Ok(Self::check(res).await?.json().await?)
    }

    pub async fn restart_context(&self, id: &str) -> Result<(), ClientError> {
        let res = self
            .http
            .post(self.url(&format!("/contexts/{id}/restart")))
            .send()
            .await?;
        Self::check(res).await?;
        Ok(())
    }

    pub async fn interrupt_context(&self, id: &str) -> Result<(), ClientError> {
        let res = self
            .http
            .post(self.url(&format!("/contexts/{id}/interrupt")))
            .send()
            .await?;
        Self::check(res).await?;
        Ok(())
    }

    pub async fn remove_context(&self, id: &str) -> Result<(), ClientError> {
        let res = self
            .http
            .delete(self.url(&format!("/contexts/{id}")))
            .send()
            .await?;
        Self::check(res).await?;
        Ok(())
    }
}

/// Folds a `Process.Start` response body (Connect envelopes) into a [`CommandOutput`].
fn fold_command(mut body: &[u8]) -> Result<CommandOutput, ClientError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |what: &str| ClientError::Rpc(format!("bad Process.Start stream: {what}"));
    let mut out = CommandOutput::default();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let frame = body
            .get(5..5 + len)
            .ok_or_else(|| bad("truncated envelope"))?;
        let message: Value = serde_json::from_slice(frame).map_err(|_| bad("JSON"))?;
        if body[0] & 2 != 0 {
            return match message.get("error") {
                Some(e) => Err(ClientError::Rpc(format!(
                    "{}: {}",
                    e["code"].as_str().unwrap_or("unknown"),
                    e["message"].as_str().unwrap_or_default()
                ))),
                None => Ok(out),
            };
        }
        let event = &message["event"];
        let decode = |v: &Value| {
            b64.decode(v.as_str().unwrap_or_default())
                .map_err(|_| bad("base64"))
        };
        if let Some(pid) = event["start"]["pid"].as_u64() {
            out.pid = u32::try_from(pid).map_err(|_| bad("pid"))?;
        } else if let Some(data) = event.get("data") {
            if let Some(v) = data.get("stdout") {
                out.stdout.extend(decode(v)?);
            } else if let Some(v) = data.get("stderr").or_else(|| data.get("pty")) {
                out.stderr.extend(decode(v)?);
            }
        } else if let Some(end) = event.get("end") {
            out.exit_code = end["exitCode"].as_i64().unwrap_or(0) as i32;
            out.status = end["status"].as_str().unwrap_or_default().to_string();
            out.error = end["error"].as_str().map(String::from);
        }
        body = &body[5 + len..];
    }
    Err(bad("no end-stream envelope"))
}
