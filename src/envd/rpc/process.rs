//! `process.Process` messages (envd's `process.proto`, envd-api.md §9.1) in proto3 JSON.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::envd::connect::json::{self, is_default, nullable, uint};
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessConfig,
    pub pty: Option<Pty>,
    pub tag: Option<String>,
    /// Absent: a pipe (envd's backwards compatibility); `false`: `/dev/null`.
    pub stdin: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConnectRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListRequest {}

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendInputRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    #[serde(deserialize_with = "nullable")]
    pub input: ProcessInput,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendSignalRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    pub signal: Signal,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CloseStdinRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateRequest {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
    pub pty: Option<Pty>,
}

/// `StreamInputRequest`: oneof `start`, `data`, `keepalive`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputRequest {
    pub start: Option<StreamInputStart>,
    pub data: Option<StreamInputData>,
    pub keepalive: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputStart {
    #[serde(deserialize_with = "nullable")]
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamInputData {
    #[serde(deserialize_with = "nullable")]
    pub input: ProcessInput,
}

/// The empty responses (`SendInput`, `StreamInput`, `SendSignal`, `CloseStdin`, `Update`).
#[derive(Debug, Clone, Default, Serialize)]
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
}
