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
