//! `filesystem.Filesystem` over Connect JSON against a real agent (port 49983's service), on real
//! files in temporary directories: the wire format, errors, watch streams and polling watchers.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The agent shared by this binary's tests (no kernels: only the sandbox API is exercised).
struct Shared {
    url: String,
    envd_url: String,
    pid: u32,
}

fn agent() -> &'static Shared {
    static AGENT: OnceLock<Shared> = OnceLock::new();
    AGENT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The agent's death signal is tied to the thread that starts it: keep that thread.
        std::thread::spawn(move || {
            let agent = common::Agent::start(&["--default-languages", ","]);
            let _ = tx.send(Shared {
                url: agent.url.clone(),
                envd_url: agent.envd_url.clone(),
                pid: agent.pid(),
            });
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("agent started")
    })
}

/// Held by every test that opens watchers, so the one that counts the agent's inotify
/// descriptors sees only its own.
static WATCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn temp() -> PathBuf {
    common::tempdir("envd-fs")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A unary call: (status, JSON body).
async fn unary(method: &str, body: Value) -> (u16, Value) {
    unary_with(method, body.to_string(), &[]).await
}

async fn unary_with(method: &str, body: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client()
        .post(format!(
            "{}/filesystem.Filesystem/{method}",
            agent().envd_url
        ))
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

fn envelope(flags: u8, json: &Value) -> Vec<u8> {
    let data = json.to_string().into_bytes();
    let mut out = vec![flags];
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

/// A server stream being read envelope by envelope.
struct Frames {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl Frames {
    async fn open(method: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Frames {
        let mut req = client()
            .post(format!(
                "{}/filesystem.Filesystem/{method}",
                agent().envd_url
            ))
            .header("content-type", "application/connect+json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status().as_u16(), 200, "streams answer 200");
        assert_eq!(
            res.headers()["content-type"],
            "application/connect+json",
            "stream content type"
        );
        Frames {
            res,
            buf: Vec::new(),
        }
    }

    async fn watch(req: Value, headers: &[(&str, &str)]) -> Frames {
        Frames::open("WatchDir", envelope(0, &req), headers).await
    }

    /// The next envelope as (flags, JSON), or None at the end of the body.
    async fn next(&mut self) -> Option<(u8, Value)> {
        let deadline = Duration::from_secs(10);
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    let json = serde_json::from_slice(&self.buf[5..5 + len]).expect("json");
                    self.buf.drain(..5 + len);
                    return Some((flags, json));
                }
            }
            match tokio::time::timeout(deadline, self.res.chunk())
                .await
                .expect("a frame within 10 s")
                .expect("body")
            {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => {
                    assert!(self.buf.is_empty(), "a partial envelope at the end");
                    return None;
                }
            }
        }
    }

    /// The next filesystem event, skipping keepalives.
    async fn event(&mut self) -> Value {
        loop {
            let (flags, json) = self.next().await.expect("stream still open");
            assert_eq!(flags, 0, "unexpected end of stream: {json}");
            if json.get("keepalive").is_some() {
                continue;
            }
            return json["filesystem"].clone();
        }
    }

    /// Events until one matches, returning all of them as (type, name).
    async fn events_until(&mut self, done: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        loop {
            let e = self.event().await;
            let kind = e["type"].as_str().expect("type").to_string();
            let name = e["name"].as_str().expect("name").to_string();
            let stop = done(&kind, &name);
            seen.push((kind, name));
            if stop {
                return seen;
            }
        }
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn stat_answers_proto3_json() {
    let dir = temp();
    std::fs::write(dir.join("f.txt"), "hello").expect("write");
    // Unknown fields are ignored.
    let (status, body) = unary(
        "Stat",
        json!({"path": s(&dir.join("f.txt")), "someFutureField": {"x": [1]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entry = &body["entry"];
    assert_eq!(entry["name"], "f.txt");
    assert_eq!(entry["type"], "FILE_TYPE_FILE");
    assert_eq!(entry["path"], s(&dir.join("f.txt")));
    assert_eq!(entry["size"], "5", "int64 as a string");
    assert_eq!(entry["mode"], 0o644);
    assert_eq!(entry["permissions"], "-rw-r--r--");
    assert_eq!(entry["owner"], "root");
    let modified = entry["modifiedTime"].as_str().expect("RFC 3339");
    assert!(
        modified.ends_with('Z') && modified.contains('T'),
        "{modified}"
    );
    assert!(entry.get("symlinkTarget").is_none(), "defaults are omitted");
    assert!(entry.get("metadata").is_none());

    // A symlink is typed by its target (type and mode, as envd does), shown by its target's
    // resolved path, and otherwise described as itself (name, permissions, size).
    std::os::unix::fs::symlink("f.txt", dir.join("link")).expect("symlink");
    let (_, body) = unary("Stat", json!({"path": s(&dir.join("link"))})).await;
    assert_eq!(body["entry"]["type"], "FILE_TYPE_FILE");
    assert_eq!(body["entry"]["mode"], 0o644);
    assert_eq!(body["entry"]["symlinkTarget"], s(&dir.join("f.txt")));
    assert_eq!(body["entry"]["permissions"], "Lrwxrwxrwx");
    assert_eq!(body["entry"]["name"], "link");
    assert_eq!(
        body["entry"]["size"], "5",
        "the link's own size: len(\"f.txt\")"
    );
    // Through a chain, the target is resolved all the way.
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("sub", dir.join("dirlink")).expect("symlink");
    std::os::unix::fs::symlink("dirlink", dir.join("chain")).expect("symlink");
    let (_, body) = unary("Stat", json!({"path": s(&dir.join("chain"))})).await;
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["symlinkTarget"], s(&dir.join("sub")));
    // A dangling link has no type and no mode, and names where it points.
    std::os::unix::fs::symlink("gone", dir.join("dangling")).expect("symlink");
    let (status, body) = unary("Stat", json!({"path": s(&dir.join("dangling"))})).await;
    assert_eq!(status, 200);
    assert!(
        body["entry"].get("type").is_none(),
        "FILE_TYPE_UNSPECIFIED is omitted"
    );
    assert!(body["entry"].get("mode").is_none(), "mode 0 is omitted");
    assert_eq!(body["entry"]["symlinkTarget"], s(&dir.join("gone")));
    for name in ["sub", "dirlink", "chain", "dangling"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir.join("sub"));

    // Through the interpreter's listener, by the E2b-Sandbox-Port header.
    let res = client()
        .post(format!("{}/filesystem.Filesystem/Stat", agent().url))
        .header("content-type", "application/json")
        .header("e2b-sandbox-port", "49983")
        .body(json!({"path": s(&dir)}).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(
        body["entry"]["permissions"]
            .as_str()
            .expect("perm")
            .chars()
            .next(),
        Some('d')
    );
}

#[tokio::test]
async fn bad_requests_get_connect_errors() {
    let dir = temp();
    std::fs::write(dir.join("file"), "x").expect("write");
    let code = |body: &Value| body["code"].as_str().unwrap_or_default().to_string();

    let (status, body) = unary_with("Stat", "{not json".into(), &[]).await;
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_argument".into()),
        "{body}"
    );
    let (status, body) = unary_with("Stat", r#"{"path": 5}"#.into(), &[]).await;
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_argument".into()),
        "{body}"
    );
    let (status, body) = unary("Stat", json!({"path": s(&dir.join("missing"))})).await;
    assert_eq!((status, code(&body)), (404, "not_found".into()), "{body}");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("missing"));
    let (status, body) = unary("ListDir", json!({"path": s(&dir.join("missing"))})).await;
    assert_eq!((status, code(&body)), (404, "not_found".into()));
    let (status, body) = unary("ListDir", json!({"path": s(&dir.join("file"))})).await;
    assert_eq!((status, code(&body)), (400, "invalid_argument".into()));
    let (status, body) = unary(
        "Move",
        json!({"source": s(&dir.join("missing")), "destination": s(&dir.join("b"))}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found".into()));
    let (status, body) = unary("MakeDir", json!({"path": s(&dir.join("file"))})).await;
    assert_eq!((status, code(&body)), (400, "invalid_argument".into()));
    let (status, body) = unary("MakeDir", json!({"path": s(&dir.join("file/below"))})).await;
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_argument".into()),
        "{body}"
    );

    // Unknown user (Basic "kernelbox-no-such-user:"), a malformed header.
    let (status, body) = unary_with(
        "Stat",
        json!({"path": s(&dir)}).to_string(),
        &[("authorization", "Basic a2VybmVsYm94LW5vLXN1Y2gtdXNlcjo=")],
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthenticated".into()));
    let (status, _) = unary_with("Stat", "{}".into(), &[("authorization", "Basic %%%")]).await;
    assert_eq!(status, 401);
    // Root by name works.
    let (status, _) = unary_with(
        "Stat",
        json!({"path": s(&dir)}).to_string(),
        &[("authorization", "Basic cm9vdDo=")],
    )
    .await;
    assert_eq!(status, 200);

    // gRPC is not served (the binary Connect codec is: tests/envd_proto.rs); an unknown method
    // is 404.
    let res = client()
        .post(format!("{}/filesystem.Filesystem/Stat", agent().envd_url))
        .header("content-type", "application/grpc")
        .body(vec![0, 0, 0, 0, 3, 0x0a, 0x01, b'/'])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 415);
    let (status, _) = unary("NoSuchMethod", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn make_dir_move_list_and_remove() {
    let dir = temp();
    let deep = dir.join("a/b/c");
    let (status, body) = unary("MakeDir", json!({"path": s(&deep)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert!(deep.is_dir());
    let (status, body) = unary("MakeDir", json!({"path": s(&deep)})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("already_exists"))
    );

    std::fs::write(dir.join("a/file.txt"), "f").expect("write");
    std::os::unix::fs::symlink(dir.join("a"), dir.join("a/b/loop")).expect("symlink");
    let names = |body: &Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["path"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, depth0) = unary("ListDir", json!({"path": s(&dir.join("a")), "depth": 0})).await;
    let (_, depth1) = unary("ListDir", json!({"path": s(&dir.join("a")), "depth": "1"})).await;
    assert_eq!(names(&depth0), names(&depth1), "depth 0 is depth 1");
    assert_eq!(
        names(&depth1),
        [s(&dir.join("a/b")), s(&dir.join("a/file.txt"))]
    );
    let (_, all) = unary("ListDir", json!({"path": s(&dir.join("a")), "depth": 10})).await;
    assert_eq!(
        names(&all),
        [
            s(&dir.join("a/b")),
            s(&dir.join("a/b/c")),
            s(&dir.join("a/b/loop")),
            s(&dir.join("a/file.txt")),
        ],
        "symlinks are listed, not followed"
    );
    let looped = all["entries"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "loop"))
        .expect("the loop entry");
    assert_eq!(
        (looped["type"].clone(), looped["symlinkTarget"].clone()),
        (json!("FILE_TYPE_DIRECTORY"), json!(s(&dir.join("a")))),
        "a symlink to a directory is typed as one"
    );
    let (_, empty) = unary("ListDir", json!({"path": s(&deep)})).await;
    assert_eq!(empty, json!({}), "an empty list is omitted");

    let (status, body) = unary(
        "Move",
        json!({"source": s(&dir.join("a/file.txt")), "destination": s(&dir.join("x/y/moved.txt"))}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["name"], "moved.txt");
    assert_eq!(
        std::fs::read_to_string(dir.join("x/y/moved.txt")).expect("moved"),
        "f"
    );

    let (status, body) = unary("Remove", json!({"path": s(&dir.join("a"))})).await;
    assert_eq!((status, body), (200, json!({})));
    assert!(!dir.join("a").exists());
    let (status, _) = unary("Remove", json!({"path": s(&dir.join("a"))})).await;
    assert_eq!(status, 200, "removing a missing path is fine");
}

#[tokio::test]
async fn watch_dir_streams_events() {
    let _watching = WATCHING.lock().await;
    let dir = temp();
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    // snake_case field names are accepted too.
    let mut frames = Frames::watch(
        json!({"path": s(&dir), "recursive": true, "include_entry": true}),
        &[],
    )
    .await;
    assert_eq!(
        frames.next().await,
        Some((0, json!({"start": {}}))),
        "start first"
    );

    std::fs::write(dir.join("sub/a.txt"), "a").expect("write");
    let event = frames.event().await;
    assert_eq!(event["name"], "sub/a.txt");
    assert_eq!(event["type"], "EVENT_TYPE_CREATE");
    assert_eq!(event["entry"]["path"], s(&dir.join("sub/a.txt")));
    frames
        .events_until(|t, n| t == "EVENT_TYPE_WRITE" && n == "sub/a.txt")
        .await;

    // A directory created after the start is followed from its create event on (what happens
    // in it before the watcher has seen that event goes unreported, as with envd).
    std::fs::create_dir(dir.join("new")).expect("mkdir");
    let event = frames.event().await;
    assert_eq!(
        (&event["type"], &event["name"]),
        (&json!("EVENT_TYPE_CREATE"), &json!("new"))
    );
    std::fs::write(dir.join("new/b.txt"), "b").expect("write");
    let seen = frames
        .events_until(|t, n| t == "EVENT_TYPE_WRITE" && n == "new/b.txt")
        .await;
    assert_eq!(seen[0], ("EVENT_TYPE_CREATE".into(), "new/b.txt".into()));

    std::fs::rename(dir.join("sub/a.txt"), dir.join("sub/c.txt")).expect("rename");
    std::fs::remove_file(dir.join("sub/c.txt")).expect("remove");
    let seen = frames
        .events_until(|t, n| t == "EVENT_TYPE_REMOVE" && n == "sub/c.txt")
        .await;
    assert_eq!(
        seen,
        [
            ("EVENT_TYPE_RENAME".into(), "sub/a.txt".into()),
            ("EVENT_TYPE_CREATE".into(), "sub/c.txt".into()),
            ("EVENT_TYPE_REMOVE".into(), "sub/c.txt".into()),
        ]
    );
}

#[tokio::test]
async fn a_staged_upload_is_seen_as_a_write_of_its_target() {
    let _watching = WATCHING.lock().await;
    let dir = temp();
    std::fs::write(dir.join("target.txt"), "old").expect("write");
    let mut frames = Frames::watch(json!({"path": s(&dir)}), &[]).await;
    assert_eq!(frames.next().await, Some((0, json!({"start": {}}))));

    // What a /files upload does: a temporary file next to the target, renamed over it.
    let temp_file = dir.join(format!("{}1234", kernelbox::envd::UPLOAD_TEMP_PREFIX));
    std::fs::write(&temp_file, "new content").expect("write");
    std::fs::set_permissions(
        &temp_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::rename(&temp_file, dir.join("target.txt")).expect("rename");
    let seen = frames
        .events_until(|t, n| t == "EVENT_TYPE_WRITE" && n == "target.txt")
        .await;
    assert_eq!(
        seen,
        [
            ("EVENT_TYPE_CREATE".into(), "target.txt".into()),
            ("EVENT_TYPE_CHMOD".into(), "target.txt".into()),
            ("EVENT_TYPE_WRITE".into(), "target.txt".into()),
        ],
        "no event names the temporary file"
    );
}

#[tokio::test]
async fn watch_dir_errors_keepalives_and_deadline() {
    let _watching = WATCHING.lock().await;
    let dir = temp();
    std::fs::write(dir.join("file"), "x").expect("write");
    let error_of = |frame: Option<(u8, Value)>| {
        let (flags, json) = frame.expect("an end-stream envelope");
        assert_eq!(flags, 2, "{json}");
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let mut missing = Frames::watch(json!({"path": s(&dir.join("missing"))}), &[]).await;
    assert_eq!(error_of(missing.next().await), "not_found");
    assert_eq!(missing.next().await, None);
    let mut not_dir = Frames::watch(json!({"path": s(&dir.join("file"))}), &[]).await;
    assert_eq!(error_of(not_dir.next().await), "invalid_argument");
    let mut unknown_user = Frames::watch(
        json!({"path": s(&dir)}),
        &[("authorization", "Basic a2VybmVsYm94LW5vLXN1Y2gtdXNlcjo=")],
    )
    .await;
    assert_eq!(error_of(unknown_user.next().await), "unauthenticated");
    // A body that is not an envelope: `{"pa` reads as a length far over the limit.
    let mut raw = Frames::open("WatchDir", br#"{"path":"/"}"#.to_vec(), &[]).await;
    assert_eq!(error_of(raw.next().await), "resource_exhausted");
    // A truncated envelope.
    let mut short = Frames::open("WatchDir", [&[0u8, 0, 0, 0, 50][..], b"{}"].concat(), &[]).await;
    assert_eq!(error_of(short.next().await), "invalid_argument");
    // Bad JSON in a good envelope.
    let mut bad = Frames::open("WatchDir", [&[0u8, 0, 0, 0, 2][..], b"{x"].concat(), &[]).await;
    assert_eq!(error_of(bad.next().await), "invalid_argument");

    let started = Instant::now();
    let mut frames = Frames::watch(
        json!({"path": s(&dir)}),
        &[
            ("keepalive-ping-interval", "1"),
            ("connect-timeout-ms", "2500"),
        ],
    )
    .await;
    assert_eq!(frames.next().await, Some((0, json!({"start": {}}))));
    assert_eq!(frames.next().await, Some((0, json!({"keepalive": {}}))));
    assert_eq!(frames.next().await, Some((0, json!({"keepalive": {}}))));
    assert_eq!(error_of(frames.next().await), "deadline_exceeded");
    assert_eq!(frames.next().await, None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2400) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

/// The agent's open inotify instances.
fn inotify_fds() -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent().pid))
        .expect("agent fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

async fn wait_for_inotify_fds(want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while inotify_fds() != want {
        assert!(
            Instant::now() < deadline,
            "inotify fds: {} != {want}",
            inotify_fds()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watchers live as long as their stream or their id.
#[tokio::test]
async fn watchers_end_with_their_stream_and_the_polling_trio() {
    let _alone = WATCHING.lock().await;
    let dir = temp();
    // Other tests' streams are gone once the agent has noticed their clients left.
    wait_for_inotify_fds(0).await;
    let before = 0;
    let mut frames = Frames::watch(json!({"path": s(&dir)}), &[]).await;
    assert_eq!(frames.next().await, Some((0, json!({"start": {}}))));
    assert_eq!(inotify_fds(), before + 1);
    drop(frames);
    wait_for_inotify_fds(before).await;

    let (status, body) = unary("CreateWatcher", json!({"path": s(&dir), "recursive": true})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["watcherId"].as_str().expect("watcherId").to_string();
    assert_eq!(inotify_fds(), before + 1);
    let (_, body) = unary("GetWatcherEvents", json!({"watcherId": id})).await;
    assert_eq!(body, json!({}), "no events yet");
    // A poll right after a change sees it (the watcher drains the kernel's queue first).
    for round in 0..20 {
        let name = format!("p{round}.txt");
        std::fs::write(dir.join(&name), "p").expect("write");
        let (_, body) = unary("GetWatcherEvents", json!({"watcher_id": id})).await;
        let events: Vec<(Value, Value)> = body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| (e["type"].clone(), e["name"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            events,
            [
                (json!("EVENT_TYPE_CREATE"), json!(name)),
                (json!("EVENT_TYPE_WRITE"), json!(name)),
            ],
            "round {round}"
        );
    }
    let (status, body) = unary("RemoveWatcher", json!({"watcherId": id})).await;
    assert_eq!((status, body), (200, json!({})));
    wait_for_inotify_fds(before).await;
    let (status, body) = unary("GetWatcherEvents", json!({"watcherId": id})).await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    let (status, _) = unary("CreateWatcher", json!({"path": s(&dir.join("missing"))})).await;
    assert_eq!(status, 404);
}
