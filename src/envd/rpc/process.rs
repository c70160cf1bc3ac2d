//! `process.Process` messages (envd's `process.proto`, envd-api.md §9.1) in proto3 JSON and the
//! binary protobuf format.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::envd::connect::json::{self, is_default, nullable, uint};
use crate::envd::connect::proto::{
    fields, merge_string_entry, DecodeError, Message, Value, Writer,
};
use crate::envd::connect::Keepalive;

/// `ProcessConfig`: the command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessConfig {
    #[serde(deserialize_with = "nullable")]
    pub cmd: String,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_default")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `PTY`: a terminal of this size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pty {
    #[serde(deserialize_with = "nullable")]
    pub size: PtySize,
}

/// `PTY.Size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PtySize {
    #[serde(deserialize_with = "uint")]
    pub cols: u32,
    #[serde(deserialize_with = "uint")]
    pub rows: u32,
}

/// `ProcessSelector`: oneof `pid`, `tag`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessSelector {
    #[serde(deserialize_with = "optional_uint")]
    pub pid: Option<u32>,
    pub tag: Option<String>,
}

/// `ProcessInput`: oneof `stdin`, `pty` (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessInput {
    #[serde(deserialize_with = "optional_bytes")]
    pub stdin: Option<Vec<u8>>,
    #[serde(deserialize_with = "optional_bytes")]
    pub pty: Option<Vec<u8>>,
}

crate::proto_enum! {
    /// `Signal`.
    pub enum Signal {
        Unspecified = 0 => "SIGNAL_UNSPECIFIED",
        Sigterm = 15 => "SIGNAL_SIGTERM",
        Sigkill = 9 => "SIGNAL_SIGKILL",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessConfig,
    pub pty: Option<Pty>,
    pub tag: Option<String>,
    /// Absent: a pipe (envd's backwards compatibility); `false`: `/dev/null`.
    pub stdin: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ListRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    #[serde(skip_serializing_if = "is_default")]
    pub processes: Vec<ProcessInfo>,
}

/// `ProcessInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    #[serde(skip_serializing_if = "is_default")]
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendInputRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    #[serde(deserialize_with = "nullable")]
    pub input: ProcessInput,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendSignalRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    pub signal: Signal,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CloseStdinRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    pub pty: Option<Pty>,
}

/// `StreamInputRequest`: oneof `start`, `data`, `keepalive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputRequest {
    pub start: Option<StreamInputStart>,
    pub data: Option<StreamInputData>,
    pub keepalive: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputStart {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputData {
    #[serde(deserialize_with = "nullable")]
    pub input: ProcessInput,
}

/// The empty responses (`SendInput`, `StreamInput`, `SendSignal`, `CloseStdin`, `Update`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Empty {}

/// `StartResponse` and `ConnectResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessEventResponse {
    pub event: ProcessEvent,
}

impl Keepalive for ProcessEventResponse {
    fn keepalive() -> Self {
        ProcessEventResponse {
            event: ProcessEvent::Keepalive {},
        }
    }
}

/// `ProcessEvent`: oneof `start`, `data`, `end`, `keepalive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    Start { pid: u32 },
    Data(DataEvent),
    End(EndEvent),
    Keepalive {},
}

/// `ProcessEvent.DataEvent`: oneof `stdout`, `stderr`, `pty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    Stdout(#[serde(serialize_with = "base64_bytes")] Bytes),
    Stderr(#[serde(serialize_with = "base64_bytes")] Bytes),
    Pty(#[serde(serialize_with = "base64_bytes")] Bytes),
}

/// `ProcessEvent.EndEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndEvent {
    #[serde(skip_serializing_if = "is_default")]
    pub exit_code: i32,
    #[serde(skip_serializing_if = "is_default")]
    pub exited: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn base64_bytes<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    json::base64::serialize(v, s)
}

/// An optional `uint32` (a oneof member): absent or `null` is `None`; numbers or strings.
fn optional_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => uint(v).map(Some).map_err(de::Error::custom),
    }
}

/// Optional `bytes` (a oneof member) in base64.
fn optional_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => json::base64::decode(&text)
            .map(Some)
            .map_err(de::Error::custom),
    }
}

// ---------------------------------------------------------------------------------------------
// The binary protobuf codec: field numbers and types of envd-api.md §9.1.

impl Message for ProcessConfig {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.cmd);
        for arg in &self.args {
            w.string_always(2, arg);
        }
        w.string_map(3, &self.envs);
        if let Some(cwd) = &self.cwd {
            w.string_always(4, cwd);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ProcessConfig::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.cmd = v.string()?,
                (2, v) => m.args.push(v.string()?),
                (3, v) => merge_string_entry(&mut m.envs, v)?,
                (4, v) => m.cwd = Some(v.string()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for Pty {
    /// An all-zero size is left out: the Rust type cannot tell it from an unset one.
    fn encode(&self, w: &mut Writer) {
        if self.size != PtySize::default() {
            w.message(1, &self.size);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = Pty::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.size = v.message()?;
            }
        }
        Ok(m)
    }
}

impl Message for PtySize {
    fn encode(&self, w: &mut Writer) {
        w.uint32(1, self.cols);
        w.uint32(2, self.rows);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = PtySize::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.cols = v.uint32()?,
                (2, v) => m.rows = v.uint32()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

/// Oneof `selector`: `pid` = 1, `tag` = 2; the last one on the wire wins.
impl Message for ProcessSelector {
    fn encode(&self, w: &mut Writer) {
        if let Some(pid) = self.pid {
            w.uint32_always(1, pid);
        } else if let Some(tag) = &self.tag {
            w.string_always(2, tag);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ProcessSelector::default();
        for field in fields(buf) {
            match field? {
                (1, v) => {
                    m = ProcessSelector {
                        pid: Some(v.uint32()?),
                        tag: None,
                    }
                }
                (2, v) => {
                    m = ProcessSelector {
                        pid: None,
                        tag: Some(v.string()?),
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

/// Oneof `input`: `stdin` = 1, `pty` = 2; the last one on the wire wins.
impl Message for ProcessInput {
    fn encode(&self, w: &mut Writer) {
        if let Some(stdin) = &self.stdin {
            w.bytes_always(1, stdin);
        } else if let Some(pty) = &self.pty {
            w.bytes_always(2, pty);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ProcessInput::default();
        for field in fields(buf) {
            match field? {
                (1, v) => {
                    m = ProcessInput {
                        stdin: Some(v.bytes()?),
                        pty: None,
                    }
                }
                (2, v) => {
                    m = ProcessInput {
                        stdin: None,
                        pty: Some(v.bytes()?),
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for StartRequest {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.process);
        if let Some(pty) = &self.pty {
            w.message(2, pty);
        }
        if let Some(tag) = &self.tag {
            w.string_always(3, tag);
        }
        if let Some(stdin) = self.stdin {
            w.bool_always(4, stdin);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = StartRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.process = v.message()?,
                (2, v) => m.pty = Some(v.message()?),
                (3, v) => m.tag = Some(v.string()?),
                (4, v) => m.stdin = Some(v.bool()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

/// A message whose only field is `process` = 1 (`ConnectRequest`, `CloseStdinRequest`,
/// `StreamInputRequest.StartEvent`).
macro_rules! process_only {
    ($($name:ident),*) => {$(
        impl Message for $name {
            fn encode(&self, w: &mut Writer) {
                w.message(1, &self.process);
            }

            fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
                let mut m = $name::default();
                for field in fields(buf) {
                    if let (1, v) = field? {
                        m.process = v.message()?;
                    }
                }
                Ok(m)
            }
        }
    )*};
}

process_only!(ConnectRequest, CloseStdinRequest, StreamInputStart);

impl Message for ListRequest {
    fn encode(&self, _: &mut Writer) {}

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        fields(buf).try_for_each(|f| f.map(drop))?;
        Ok(ListRequest {})
    }
}

impl Message for Empty {
    fn encode(&self, _: &mut Writer) {}

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        fields(buf).try_for_each(|f| f.map(drop))?;
        Ok(Empty {})
    }
}

impl Message for ListResponse {
    fn encode(&self, w: &mut Writer) {
        for process in &self.processes {
            w.message(1, process);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ListResponse::default();
        for field in fields(buf) {
            if let (1, v) = field? {
                m.processes.push(v.message()?);
            }
        }
        Ok(m)
    }
}

impl Message for ProcessInfo {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.config);
        w.uint32(2, self.pid);
        if let Some(tag) = &self.tag {
            w.string_always(3, tag);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = ProcessInfo::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.config = v.message()?,
                (2, v) => m.pid = v.uint32()?,
                (3, v) => m.tag = Some(v.string()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for SendInputRequest {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.process);
        w.message(2, &self.input);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = SendInputRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.process = v.message()?,
                (2, v) => m.input = v.message()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for SendSignalRequest {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.process);
        w.int32(2, self.signal.number());
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = SendSignalRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.process = v.message()?,
                (2, v) => m.signal = Signal::from_number(v.enum_number()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

impl Message for UpdateRequest {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.process);
        if let Some(pty) = &self.pty {
            w.message(2, pty);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = UpdateRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.process = v.message()?,
                (2, v) => m.pty = Some(v.message()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

/// Oneof `event`: `start` = 1, `data` = 2, `keepalive` = 3; the last one on the wire wins.
impl Message for StreamInputRequest {
    fn encode(&self, w: &mut Writer) {
        if let Some(start) = &self.start {
            w.message(1, start);
        } else if let Some(data) = &self.data {
            w.message(2, data);
        } else if self.keepalive.is_some() {
            w.empty_message(3);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = StreamInputRequest::default();
        for field in fields(buf) {
            match field? {
                (1, v) => {
                    m = StreamInputRequest {
                        start: Some(v.message()?),
                        ..Default::default()
                    }
                }
                (2, v) => {
                    m = StreamInputRequest {
                        data: Some(v.message()?),
                        ..Default::default()
                    }
                }
                (3, v) => {
                    v.empty()?;
                    m = StreamInputRequest {
                        keepalive: Some(serde_json::Value::Object(Default::default())),
                        ..Default::default()
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

/// `StreamInputRequest.DataEvent`: `input` is field 2 (there is no field 1).
impl Message for StreamInputData {
    fn encode(&self, w: &mut Writer) {
        w.message(2, &self.input);
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = StreamInputData::default();
        for field in fields(buf) {
            if let (2, v) = field? {
                m.input = v.message()?;
            }
        }
        Ok(m)
    }
}

impl Message for ProcessEventResponse {
    fn encode(&self, w: &mut Writer) {
        w.message(1, &self.event);
    }

    /// A response without an event has no Rust form: an error (only clients decode it).
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut event = None;
        for field in fields(buf) {
            if let (1, v) = field? {
                event = Some(v.message()?);
            }
        }
        let event = event.ok_or_else(|| DecodeError("ProcessEventResponse: no event".into()))?;
        Ok(ProcessEventResponse { event })
    }
}

/// Oneof `event`: `start` = 1 (`{pid = 1}`), `data` = 2, `end` = 3, `keepalive` = 4.
impl Message for ProcessEvent {
    fn encode(&self, w: &mut Writer) {
        match self {
            ProcessEvent::Start { pid } => w.nested(1, |start| start.uint32(1, *pid)),
            ProcessEvent::Data(data) => w.message(2, data),
            ProcessEvent::End(end) => w.message(3, end),
            ProcessEvent::Keepalive {} => w.empty_message(4),
        }
    }

    /// No member set has no Rust form: an error (only clients decode it).
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut event = None;
        for field in fields(buf) {
            match field? {
                (1, v) => event = Some(decode_start(v)?),
                (2, v) => event = Some(ProcessEvent::Data(v.message()?)),
                (3, v) => event = Some(ProcessEvent::End(v.message()?)),
                (4, v) => event = Some(v.empty().map(|()| ProcessEvent::Keepalive {})?),
                _ => {}
            }
        }
        event.ok_or_else(|| DecodeError("ProcessEvent: no event set".into()))
    }
}

/// `ProcessEvent.StartEvent`: `pid` = 1.
fn decode_start(value: Value<'_>) -> Result<ProcessEvent, DecodeError> {
    let mut pid = 0;
    for field in fields(value.len_delimited()?) {
        if let (1, v) = field? {
            pid = v.uint32()?;
        }
    }
    Ok(ProcessEvent::Start { pid })
}

/// Oneof `output`: `stdout` = 1, `stderr` = 2, `pty` = 3.
impl Message for DataEvent {
    fn encode(&self, w: &mut Writer) {
        match self {
            DataEvent::Stdout(b) => w.bytes_always(1, b),
            DataEvent::Stderr(b) => w.bytes_always(2, b),
            DataEvent::Pty(b) => w.bytes_always(3, b),
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut output = None;
        for field in fields(buf) {
            let (number, v) = field?;
            let make = match number {
                1 => DataEvent::Stdout,
                2 => DataEvent::Stderr,
                3 => DataEvent::Pty,
                _ => continue,
            };
            output = Some(make(Bytes::copy_from_slice(v.len_delimited()?)));
        }
        output.ok_or_else(|| DecodeError("DataEvent: no output set".into()))
    }
}

impl Message for EndEvent {
    fn encode(&self, w: &mut Writer) {
        w.sint32(1, self.exit_code);
        w.bool(2, self.exited);
        w.string(3, &self.status);
        if let Some(error) = &self.error {
            w.string_always(4, error);
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = EndEvent::default();
        for field in fields(buf) {
            match field? {
                (1, v) => m.exit_code = v.sint32()?,
                (2, v) => m.exited = v.bool()?,
                (3, v) => m.status = v.string()?,
                (4, v) => m.error = Some(v.string()?),
                _ => {}
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_the_sdks_send_them() {
        let start: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","ls"],"envs":{"A":"b"},"cwd":"/tmp"},"stdin":false,"tag":"t","new":1}"#,
        )
        .expect("start");
        assert_eq!(start.process.args, ["-l", "-c", "ls"]);
        assert_eq!(start.process.cwd.as_deref(), Some("/tmp"));
        assert_eq!(
            (start.stdin, start.tag.as_deref()),
            (Some(false), Some("t"))
        );
        let pty: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"x"},"pty":{"size":{"cols":80,"rows":"24"}}}"#,
        )
        .expect("pty");
        assert_eq!(pty.pty.map(|p| (p.size.cols, p.size.rows)), Some((80, 24)));
        assert_eq!(pty.stdin, None);

        let sig: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"pid":"4242"},"signal":"SIGNAL_SIGKILL"}"#)
                .expect("signal");
        assert_eq!((sig.process.pid, sig.signal), (Some(4242), Signal::Sigkill));
        let input: SendInputRequest =
            serde_json::from_str(r#"{"process":{"tag":"t"},"input":{"stdin":"aGk="}}"#)
                .expect("input");
        assert_eq!(input.input.stdin.as_deref(), Some(b"hi".as_slice()));
        assert_eq!(input.process.tag.as_deref(), Some("t"));
        let stream: StreamInputRequest =
            serde_json::from_str(r#"{"data":{"input":{"pty":"AA=="}}}"#).expect("stream");
        assert_eq!(stream.data.map(|d| d.input.pty), Some(Some(vec![0u8])));
    }

    #[test]
    fn events_are_written_as_protojson() {
        let json = |e: ProcessEvent| {
            serde_json::to_string(&ProcessEventResponse { event: e }).expect("json")
        };
        assert_eq!(
            json(ProcessEvent::Start { pid: 7 }),
            r#"{"event":{"start":{"pid":7}}}"#
        );
        assert_eq!(
            json(ProcessEvent::Data(DataEvent::Stdout(Bytes::from_static(
                b"hi"
            )))),
            r#"{"event":{"data":{"stdout":"aGk="}}}"#
        );
        assert_eq!(
            json(ProcessEvent::End(EndEvent {
                exit_code: -1,
                exited: false,
                status: "signal: killed".into(),
                error: Some("signal: killed".into()),
            })),
            r#"{"event":{"end":{"exitCode":-1,"status":"signal: killed","error":"signal: killed"}}}"#
        );
        assert_eq!(
            json(ProcessEvent::End(EndEvent {
                exited: true,
                status: "exit status 0".into(),
                ..Default::default()
            })),
            r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#
        );
        assert_eq!(
            json(ProcessEvent::Keepalive {}),
            r#"{"event":{"keepalive":{}}}"#
        );
    }

    fn selector_pid() -> ProcessSelector {
        ProcessSelector {
            pid: Some(0),
            tag: None,
        }
    }

    fn config() -> ProcessConfig {
        ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), String::new(), "ls".into()],
            envs: [("A".to_string(), "b".to_string()), ("E".into(), "".into())]
                .into_iter()
                .collect(),
            cwd: Some("/tmp".into()),
        }
    }

    #[test]
    fn every_message_round_trips_in_binary() {
        use crate::envd::connect::proto::assert_round_trip;
        let tag = ProcessSelector {
            pid: None,
            tag: Some("t".into()),
        };
        let pty = Pty {
            size: PtySize { cols: 80, rows: 24 },
        };
        assert_round_trip(&config());
        assert_round_trip(&pty);
        assert_round_trip(&pty.size);
        assert_round_trip(&selector_pid());
        assert_round_trip(&tag);
        assert_round_trip(&ProcessSelector::default());
        let stdin = ProcessInput {
            stdin: Some(vec![]),
            pty: None,
        };
        assert_round_trip(&stdin);
        assert_round_trip(&ProcessInput {
            stdin: None,
            pty: Some(vec![0, 4]),
        });
        assert_round_trip(&StartRequest {
            process: config(),
            pty: Some(pty),
            tag: Some(String::new()),
            stdin: Some(false),
        });
        assert_round_trip(&StartRequest::default());
        assert_round_trip(&ConnectRequest {
            process: tag.clone(),
        });
        assert_round_trip(&ListRequest {});
        let info = ProcessInfo {
            config: config(),
            pid: 42,
            tag: Some("t".into()),
        };
        assert_round_trip(&ListResponse {
            processes: vec![info.clone(), ProcessInfo::default()],
        });
        assert_round_trip(&info);
        assert_round_trip(&SendInputRequest {
            process: selector_pid(),
            input: stdin.clone(),
        });
        assert_round_trip(&SendSignalRequest {
            process: tag.clone(),
            signal: Signal::Sigkill,
        });
        assert_round_trip(&CloseStdinRequest {
            process: tag.clone(),
        });
        assert_round_trip(&UpdateRequest {
            process: tag.clone(),
            pty: Some(pty),
        });
        for request in [
            StreamInputRequest {
                start: Some(StreamInputStart { process: tag }),
                ..Default::default()
            },
            StreamInputRequest {
                data: Some(StreamInputData { input: stdin }),
                ..Default::default()
            },
            StreamInputRequest {
                keepalive: Some(serde_json::json!({})),
                ..Default::default()
            },
        ] {
            assert_round_trip(&request);
        }
        assert_round_trip(&Empty {});
        for event in [
            ProcessEvent::Start { pid: 0 },
            ProcessEvent::Start { pid: 7 },
            ProcessEvent::Data(DataEvent::Stdout(Bytes::from_static(b"out"))),
            ProcessEvent::Data(DataEvent::Stderr(Bytes::new())),
            ProcessEvent::Data(DataEvent::Pty(Bytes::from_static(b"\x1b[0m"))),
            ProcessEvent::End(EndEvent {
                exit_code: -1,
                exited: false,
                status: "signal: killed".into(),
                error: Some("signal: killed".into()),
            }),
            ProcessEvent::End(EndEvent::default()),
            ProcessEvent::Keepalive {},
        ] {
            assert_round_trip(&event);
            assert_round_trip(&ProcessEventResponse { event });
        }
    }

    #[test]
    fn binary_forms_follow_the_field_table() {
        // exit_code is sint32: -1 zigzags to 1.
        let end = EndEvent {
            exit_code: -1,
            ..Default::default()
        };
        assert_eq!(end.to_bytes(), [0x08, 0x01]);
        // Start{pid: 0}: the oneof member is present with an empty StartEvent.
        let start = ProcessEventResponse {
            event: ProcessEvent::Start { pid: 0 },
        };
        assert_eq!(start.to_bytes(), [0x0a, 2, 0x0a, 0]);
        // StreamInputRequest.DataEvent has `input` as field 2.
        let data = StreamInputRequest {
            data: Some(StreamInputData {
                input: ProcessInput {
                    stdin: Some(b"hi".to_vec()),
                    pty: None,
                },
            }),
            ..Default::default()
        };
        assert_eq!(data.to_bytes(), [0x12, 6, 0x12, 4, 0x0a, 2, b'h', b'i']);
        // Oneofs: the last member on the wire wins.
        let both = [0x08, 5, 0x12, 1, b't'];
        assert_eq!(
            ProcessSelector::decode(&both).map(|s| (s.pid, s.tag)),
            Ok((None, Some("t".into())))
        );
        // Unknown signals read as SIGNAL_UNSPECIFIED; negative enum numbers too.
        let mut unknown = vec![0x10];
        unknown.extend([0xff; 9]);
        unknown.push(0x01);
        assert_eq!(
            SendSignalRequest::decode(&unknown).map(|r| r.signal),
            Ok(Signal::Unspecified)
        );
        assert_eq!(
            SendSignalRequest::decode(&[0x10, 9]).map(|r| r.signal),
            Ok(Signal::Sigkill)
        );
    }
}
