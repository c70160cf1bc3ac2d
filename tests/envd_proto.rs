//! The binary protobuf codec over HTTP against a real agent: `application/proto` unary calls and
//! `application/connect+proto` streams. Requests are built and responses read with the small
//! encoder below, written from the spec's field tables (envd-api.md §8.1, §9.1), independent of
//! the agent's own codec.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

fn envd() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The agent's death signal is tied to the thread that starts it: keep that thread.
        std::thread::spawn(move || {
            let agent = common::Agent::start(&["--default-languages="]);
            let _ = tx.send(agent.envd_url.clone());
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("agent started")
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal protobuf writer and reader.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field.
fn vf(number: u32, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, u64::from(number) << 3);
    varint(&mut out, v);
    out
}

/// A length-delimited field (string, bytes or message).
fn lf(number: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, u64::from(number) << 3 | 2);
    varint(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

/// Fields of every wire type that no envd message has (numbers 90 to 93).
fn unknown_fields() -> Vec<u8> {
    let mut out = vf(90, 1 << 40);
    varint(&mut out, 91 << 3 | 1);
    out.extend(7u64.to_le_bytes());
    out.extend(lf(92, &lf(1, b"nested")));
    varint(&mut out, 93 << 3 | 5);
    out.extend(7u32.to_le_bytes());
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Len(Vec<u8>),
}

fn read_varint(buf: &mut &[u8]) -> u64 {
    let mut v = 0;
    for shift in (0..64).step_by(7) {
        let byte = buf[0];
        *buf = &buf[1..];
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

/// A message's fields in wire order (this reader only knows the wire types envd sends).
fn parse(mut buf: &[u8]) -> Vec<(u32, Field)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf);
        let field = match key & 7 {
            0 => Field::Varint(read_varint(&mut buf)),
            2 => {
                let len = read_varint(&mut buf) as usize;
                let data = buf[..len].to_vec();
                buf = &buf[len..];
                Field::Len(data)
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push(((key >> 3) as u32, field));
    }
    out
}

/// Every value of field `number`.
fn all(buf: &[u8], number: u32) -> Vec<Field> {
    parse(buf)
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, f)| f)
        .collect()
}

fn len(buf: &[u8], number: u32) -> Option<Vec<u8>> {
    all(buf, number).into_iter().rev().find_map(|f| match f {
        Field::Len(data) => Some(data),
        Field::Varint(_) => None,
    })
}

fn uint(buf: &[u8], number: u32) -> u64 {
    all(buf, number)
        .into_iter()
        .rev()
        .find_map(|f| match f {
            Field::Varint(v) => Some(v),
            Field::Len(_) => None,
        })
        .unwrap_or(0)
}

fn text(buf: &[u8], number: u32) -> String {
    String::from_utf8(len(buf, number).unwrap_or_default()).expect("UTF-8")
}

fn envelope(flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A streaming body's envelopes as (flags, data).
fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let n = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], body[5..5 + n].to_vec()));
        body = &body[5 + n..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Calls.

fn post(path: &str, content_type: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/{path}", envd()))
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
}

/// A unary proto call: (status, content type, body).
async fn unary(path: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let res = post(path, "application/proto")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let content_type = res.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    (
        status,
        content_type,
        res.bytes().await.expect("body").to_vec(),
    )
}

/// A `connect+proto` stream: its data messages and its end-stream message (JSON).
async fn stream(path: &str, body: Vec<u8>) -> (Vec<Vec<u8>>, Value) {
    let res = post(path, "application/connect+proto")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/connect+proto");
    let mut all = envelopes(&res.bytes().await.expect("body"));
    let (flags, end) = all.pop().expect("end-stream envelope");
    assert_eq!(flags, 2);
    assert!(all.iter().all(|(flags, _)| *flags == 0));
    let end = serde_json::from_slice(&end).expect("the end-stream envelope is JSON");
    (all.into_iter().map(|(_, data)| data).collect(), end)
}

// ---------------------------------------------------------------------------------------------
// filesystem.Filesystem

#[tokio::test]
async fn filesystem_unary_calls_in_proto() {
    let dir = common::tempdir("envd-proto");
    std::fs::write(dir.join("a.txt"), "hello").expect("write");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o640);
    std::fs::set_permissions(dir.join("a.txt"), mode).expect("chmod");
    let dir = dir.to_str().expect("utf-8 path").to_string();

    // MakeDir: `entry` = 1 with `type` = 2 (FILE_TYPE_DIRECTORY = 2).
    let sub = format!("{dir}/sub");
    let (status, content_type, body) =
        unary("filesystem.Filesystem/MakeDir", lf(1, sub.as_bytes())).await;
    assert_eq!((status, content_type.as_str()), (200, "application/proto"));
    let entry = len(&body, 1).expect("entry");
    assert_eq!(text(&entry, 1), "sub");
    assert_eq!(uint(&entry, 2), 2);
    assert_eq!(text(&entry, 3), sub);

    // Stat, with unknown fields of every wire type around the path.
    let file = format!("{dir}/a.txt");
    let request = [unknown_fields(), lf(1, file.as_bytes()), unknown_fields()].concat();
    let (status, _, body) = unary("filesystem.Filesystem/Stat", request).await;
    assert_eq!(status, 200);
    let entry = len(&body, 1).expect("entry");
    assert_eq!((text(&entry, 1), uint(&entry, 2)), ("a.txt".into(), 1));
    assert_eq!(uint(&entry, 4), 5, "size is int64 field 4");
    assert_eq!(uint(&entry, 5), 0o640, "mode is uint32 field 5");
    let modified = len(&entry, 9).expect("modified_time");
    assert!(uint(&modified, 1) > 1_600_000_000, "Timestamp.seconds");

    // ListDir: `entries` = 1, repeated.
    let request = [lf(1, dir.as_bytes()), vf(2, 1)].concat();
    let (status, _, body) = unary("filesystem.Filesystem/ListDir", request).await;
    assert_eq!(status, 200);
    let mut names: Vec<String> = all(&body, 1)
        .into_iter()
        .map(|f| match f {
            Field::Len(entry) => text(&entry, 1),
            Field::Varint(_) => panic!("entries are messages"),
        })
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "sub"]);
}

#[tokio::test]
async fn proto_errors_are_json_with_the_connect_status() {
    let (status, content_type, body) =
        unary("filesystem.Filesystem/Stat", lf(1, b"/no/such/path/here")).await;
    assert_eq!((status, content_type.as_str()), (404, "application/json"));
    let error: Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(error["code"], "not_found");

    // A body that is not protobuf (a truncated length) is invalid_argument, also in JSON.
    let (status, _, body) = unary("filesystem.Filesystem/Stat", vec![0x0a, 9, b'/']).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(error["code"], "invalid_argument");

    // A unary content type on a stream is refused, as connect-go does.
    let res = post("process.Process/Start", "application/proto")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 415);
}

// ---------------------------------------------------------------------------------------------
// process.Process

/// `StartRequest`: `process` = 1 {`cmd` = 1, `args` = 2}, `tag` = 3, `stdin` = 4.
fn start_request(cmd: &str, args: &[&str], tag: Option<&str>, stdin: bool) -> Vec<u8> {
    let mut config = lf(1, cmd.as_bytes());
    for arg in args {
        config.extend(lf(2, arg.as_bytes()));
    }
    let mut out = lf(1, &config);
    if let Some(tag) = tag {
        out.extend(lf(3, tag.as_bytes()));
    }
    // `optional bool`: written even when false.
    out.extend(vf(4, stdin.into()));
    out
}

/// A stream's `ProcessEvent`s (field 1 of each `StartResponse`) as (member number, its body).
fn events(messages: &[Vec<u8>]) -> Vec<(u32, Vec<u8>)> {
    messages
        .iter()
        .map(|m| {
            let event = len(m, 1).expect("event");
            match parse(&event).pop().expect("one member") {
                (n, Field::Len(body)) => (n, body),
                other => panic!("members are messages: {other:?}"),
            }
        })
        .collect()
}

/// The bytes of one output member (1 stdout, 2 stderr) across `data` events.
fn output(events: &[(u32, Vec<u8>)], member: u32) -> String {
    let bytes: Vec<u8> = events
        .iter()
        .filter(|(n, _)| *n == 2)
        .filter_map(|(_, data)| len(data, member))
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn start_streams_binary_events() {
    let request = start_request(
        "/bin/bash",
        &["-c", "echo hi; echo err >&2; exit 3"],
        None,
        false,
    );
    let (messages, end) = stream("process.Process/Start", envelope(0, &request)).await;
    assert_eq!(end, json!({}));
    let events = events(&messages);
    let (first, start) = &events[0];
    assert_eq!(*first, 1, "start first");
    assert!(uint(start, 1) > 0, "start.pid");
    assert_eq!(output(&events, 1), "hi\n");
    assert_eq!(output(&events, 2), "err\n");
    let (last, end_event) = events.last().expect("end");
    assert_eq!(*last, 3, "end last");
    assert_eq!(events.iter().filter(|(n, _)| *n == 3).count(), 1);
    assert_eq!(uint(end_event, 1), 6, "exit_code 3 as sint32 (zigzag)");
    assert_eq!(uint(end_event, 2), 1, "exited");
    assert_eq!(text(end_event, 3), "exit status 3");
}

#[tokio::test]
async fn stream_input_takes_binary_messages() {
    let tag = format!("proto-{}", std::process::id());
    let request = start_request("/bin/cat", &[], Some(&tag), true);
    let started = tokio::spawn(stream("process.Process/Start", envelope(0, &request)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // start{process{tag}}, data{input(=2){stdin}}, keepalive{}, data again.
    let selector = lf(1, &lf(2, tag.as_bytes()));
    let data = |text: &[u8]| lf(2, &lf(2, &lf(1, text)));
    let body = [
        envelope(0, &lf(1, &selector)),
        envelope(0, &data(b"one ")),
        envelope(0, &[lf(3, &[]), unknown_fields()].concat()),
        envelope(0, &data(b"two")),
    ]
    .concat();
    let res = post("process.Process/StreamInput", "application/connect+proto")
        .body(body)
        .send()
        .await
        .expect("stream input");
    assert_eq!(res.headers()["content-type"], "application/connect+proto");
    let reply = envelopes(&res.bytes().await.expect("body"));
    assert_eq!(reply, [(0, vec![]), (2, b"{}".to_vec())]);

    let (status, _, body) = unary("process.Process/CloseStdin", selector).await;
    assert_eq!((status, body), (200, vec![]));
    let (messages, end) = started.await.expect("join");
    assert_eq!(end, json!({}));
    assert_eq!(output(&events(&messages), 1), "one two");
}
