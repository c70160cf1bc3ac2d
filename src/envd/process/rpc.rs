//! `process.Process` over Connect: the messages of [`crate::envd::rpc::process`] in, the
//! [`Processes`](super::Processes) table's calls, its events out. Nothing here holds state: a
//! `Start` or `Connect` stream is a [`Subscription`], so a client that goes away unsubscribes
//! (and the process keeps running, as in envd).

use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Event, Input, PtySize, Selector, StartSpec, Subscription};
use crate::envd::connect::{self, Call, Messages};
use crate::envd::rpc::process as msg;
use crate::envd::{Caller, Envd, EnvdError};
use crate::sys::Signal;

/// The service's routes, for [`crate::envd::router`].
pub fn routes() -> Router<Arc<Envd>> {
    const P: &str = "/process.Process/";
    Router::new()
        .route(&format!("{P}Start"), connect::server_stream(start))
        .route(&format!("{P}Connect"), connect::server_stream(connect_to))
        .route(&format!("{P}List"), connect::unary(list))
        .route(&format!("{P}SendInput"), connect::unary(send_input))
        .route(
            &format!("{P}StreamInput"),
            connect::client_stream(stream_input),
        )
        .route(&format!("{P}SendSignal"), connect::unary(send_signal))
        .route(&format!("{P}CloseStdin"), connect::unary(close_stdin))
        .route(&format!("{P}Update"), connect::unary(update))
}

type Events =
    std::pin::Pin<Box<dyn Stream<Item = Result<msg::ProcessEventResponse, EnvdError>> + Send>>;

fn caller(envd: &Envd, call: &Call) -> Result<Caller, EnvdError> {
    envd.caller(call.username()?.as_deref())
}

/// `Start`: `start{pid}`, the output, one `end`. `Connect-Timeout-Ms` is the process's lifetime
/// (0 or absent: unbounded).
async fn start(envd: Arc<Envd>, call: Call, req: msg::StartRequest) -> Result<Events, EnvdError> {
    let caller = caller(&envd, &call)?;
    let sandbox_env = envd.settings().env;
    let spec = StartSpec {
        config: config_from(req.process),
        pty: req.pty.map(|p| pty_size(p.size)),
        tag: req.tag,
        stdin: req.stdin,
        timeout: call.timeout().filter(|t| !t.is_zero()),
    };
    let (pid, subscription) = envd.processes().start(&caller, &sandbox_env, spec)?;
    Ok(events(pid, subscription))
}

/// `Connect`: `start{pid}`, then live output and the `end` (only the `end` for a process that
/// ended in the last 30 s).
async fn connect_to(
    envd: Arc<Envd>,
    _call: Call,
    req: msg::ConnectRequest,
) -> Result<Events, EnvdError> {
    let (pid, subscription) = envd.processes().connect(&selector(req.process)?)?;
    Ok(events(pid, subscription))
}

async fn list(
    envd: Arc<Envd>,
    _call: Call,
    _req: msg::ListRequest,
) -> Result<msg::ListResponse, EnvdError> {
    let processes = envd
        .processes()
        .list()
        .into_iter()
        .map(|p| msg::ProcessInfo {
            config: config_to(p.config),
            pid: p.pid,
            tag: p.tag,
        })
        .collect();
    Ok(msg::ListResponse { processes })
}

async fn send_input(
    envd: Arc<Envd>,
    _call: Call,
    req: msg::SendInputRequest,
) -> Result<msg::Empty, EnvdError> {
    let selector = selector(req.process)?;
    envd.processes()
        .send_input(&selector, input(req.input)?)
        .await?;
    Ok(msg::Empty {})
}

/// `StreamInput`: `start{process}` first, then `data` messages (and keepalives) until the client
/// closes its side.
async fn stream_input(
    envd: Arc<Envd>,
    _call: Call,
    mut messages: Messages<msg::StreamInputRequest>,
) -> Result<msg::Empty, EnvdError> {
    let mut target = None;
    while let Some(message) = messages.next().await {
        let message = message?;
        if let Some(start) = message.start {
            let selector = selector(start.process)?;
            // Fails now for an unknown process, as envd does.
            envd.processes().connect(&selector)?;
            target = Some(selector);
        } else if let Some(data) = message.data {
            let selector = target.as_ref().ok_or_else(|| {
                EnvdError::invalid_argument("StreamInput: data before the start message")
            })?;
            envd.processes()
                .send_input(selector, input(data.input)?)
                .await?;
        }
    }
    Ok(msg::Empty {})
}

async fn send_signal(
    envd: Arc<Envd>,
    _call: Call,
    req: msg::SendSignalRequest,
) -> Result<msg::Empty, EnvdError> {
    let signal = match req.signal {
        msg::Signal::Sigkill => Signal::Kill,
        msg::Signal::Sigterm => Signal::Terminate,
        msg::Signal::Unspecified => {
            return Err(EnvdError::invalid_argument(
                "invalid signal: SIGNAL_UNSPECIFIED",
            ))
        }
    };
    envd.processes()
        .signal(&selector(req.process)?, signal)
        .await?;
    Ok(msg::Empty {})
}

async fn close_stdin(
    envd: Arc<Envd>,
    _call: Call,
    req: msg::CloseStdinRequest,
) -> Result<msg::Empty, EnvdError> {
    envd.processes()
        .close_stdin(&selector(req.process)?)
        .await?;
    Ok(msg::Empty {})
}

/// `Update`: resizes the terminal (nothing else can be updated).
async fn update(
    envd: Arc<Envd>,
    _call: Call,
    req: msg::UpdateRequest,
) -> Result<msg::Empty, EnvdError> {
    let selector = selector(req.process)?;
    if let Some(pty) = req.pty {
        envd.processes().resize(&selector, pty_size(pty.size))?;
    }
    Ok(msg::Empty {})
}

/// `start{pid}`, then the subscription's events up to and including the `end`.
fn events(pid: u32, subscription: Subscription) -> Events {
    let first = msg::ProcessEventResponse {
        event: msg::ProcessEvent::Start { pid },
    };
    let rest = futures_util::stream::unfold(subscription, |mut s| async move {
        s.next().await.map(|event| (event, s))
    });
    Box::pin(
        futures_util::stream::once(async move { Ok(first) }).chain(rest.map(|event| {
            Ok(msg::ProcessEventResponse {
                event: event_to(event),
            })
        })),
    )
}

fn event_to(event: Event) -> msg::ProcessEvent {
    use msg::{DataEvent, ProcessEvent};
    match event {
        Event::Stdout(b) => ProcessEvent::Data(DataEvent::Stdout(b)),
        Event::Stderr(b) => ProcessEvent::Data(DataEvent::Stderr(b)),
        Event::Pty(b) => ProcessEvent::Data(DataEvent::Pty(b)),
        Event::End(end) => ProcessEvent::End(msg::EndEvent {
            exit_code: end.exit_code,
            exited: end.exited,
            status: end.status,
            error: end.error,
        }),
    }
}

fn selector(s: msg::ProcessSelector) -> Result<Selector, EnvdError> {
    match (s.pid, s.tag) {
        (Some(pid), _) => Ok(Selector::Pid(pid)),
        (None, Some(tag)) => Ok(Selector::Tag(tag)),
        (None, None) => Err(EnvdError::invalid_argument(
            "a process selector needs a pid or a tag",
        )),
    }
}

fn input(i: msg::ProcessInput) -> Result<Input, EnvdError> {
    match (i.stdin, i.pty) {
        (Some(data), _) => Ok(Input::Stdin(Bytes::from(data))),
        (None, Some(data)) => Ok(Input::Pty(Bytes::from(data))),
        (None, None) => Err(EnvdError::invalid_argument("input needs stdin or pty data")),
    }
}

fn pty_size(size: msg::PtySize) -> PtySize {
    let cell = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    PtySize {
        cols: cell(size.cols),
        rows: cell(size.rows),
    }
}

fn config_from(c: msg::ProcessConfig) -> super::ProcessConfig {
    super::ProcessConfig {
        cmd: c.cmd,
        args: c.args,
        envs: c.envs,
        cwd: c.cwd,
    }
}

fn config_to(c: super::ProcessConfig) -> msg::ProcessConfig {
    msg::ProcessConfig {
        cmd: c.cmd,
        args: c.args,
        envs: c.envs,
        cwd: c.cwd,
    }
}
