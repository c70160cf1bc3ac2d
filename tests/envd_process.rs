//! `process.Process` (commands and terminals): the process manager through its Rust API.
//!
//! Real processes, no agent: start/end and Go-style statuses, stdin, signals to the whole group,
//! connect by pid and tag (also just after the end), list, the deadline that kills a grandchild,
//! a subscriber that stops reading, terminals, users and the environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kernelbox::envd::process::{
    End, Event, Input, ProcessConfig, ProcessOptions, Processes, PtySize, Selector, StartSpec,
    Subscription,
};
use kernelbox::envd::{Caller, Code, Envd, Settings, User};
use kernelbox::sys::Signal;

mod common;

fn caller_in(workdir: &Path) -> Caller {
    Caller {
        user: User::current().expect("own user"),
        home: workdir.to_path_buf(),
        workdir: workdir.to_path_buf(),
    }
}

fn sh(script: &str) -> StartSpec {
    StartSpec {
        config: ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        },
        stdin: Some(false),
        ..Default::default()
    }
}

/// What a subscription delivered: stdout, stderr, terminal output, and the end.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    pty: Vec<u8>,
    end: Option<End>,
    ends: usize,
}

impl Collected {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

async fn collect(mut sub: Subscription) -> Collected {
    let mut got = Collected::default();
    let run = async {
        while let Some(event) = sub.next().await {
            match event {
                Event::Stdout(b) => got.stdout.extend_from_slice(&b),
                Event::Stderr(b) => got.stderr.extend_from_slice(&b),
                Event::Pty(b) => got.pty.extend_from_slice(&b),
                Event::End(end) => {
                    got.end = Some(end);
                    got.ends += 1;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the stream ended in time");
    got
}

struct Fixture {
    processes: Processes,
    caller: Caller,
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = common::tempdir("envd-proc");
        Fixture {
            processes: Processes::new(ProcessOptions {
                path_prefix: vec![PathBuf::from("/opt/kernelbox-test/bin")],
                bash_env: None,
            }),
            caller: caller_in(&dir),
            dir,
        }
    }

    fn start(&self, spec: StartSpec) -> (u32, Subscription) {
        self.processes
            .start(&self.caller, &[], spec)
            .expect("started")
    }

    async fn run(&self, spec: StartSpec) -> Collected {
        collect(self.start(spec).1).await
    }
}

#[tokio::test]
async fn output_and_go_style_end() {
    let f = Fixture::new();
    let got = f.run(sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(got.stdout(), "out\n");
    assert_eq!(got.stderr, b"err\n");
    assert_eq!(got.ends, 1);
    let end = got.end.expect("end");
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (3, true, "exit status 3")
    );
    assert_eq!(end.error.as_deref(), Some("exit status 3"));

    let ok = f.run(sh("true")).await.end.expect("end");
    assert_eq!(
        (ok.exit_code, ok.status.as_str(), ok.error),
        (0, "exit status 0", None)
    );
}

#[tokio::test]
async fn large_output_arrives_whole_in_bounded_chunks() {
    let f = Fixture::new();
    let (_, mut sub) = f.start(sh("head -c 3000000 /dev/zero"));
    let (mut total, mut largest) = (0, 0);
    while let Some(event) = sub.next().await {
        if let Event::Stdout(b) = event {
            total += b.len();
            largest = largest.max(b.len());
        }
    }
    assert_eq!(total, 3_000_000);
    assert!(largest <= 32 << 10, "chunk of {largest} bytes");
}

#[tokio::test]
async fn stdin_is_a_pipe_unless_disabled() {
    let f = Fixture::new();
    let mut spec = sh("cat; echo done");
    spec.stdin = None;
    let (pid, sub) = f.start(spec);
    let p = Selector::Pid(pid);
    f.processes
        .send_input(&p, Input::Stdin(Bytes::from_static(b"hello ")))
        .await
        .expect("input");
    f.processes
        .send_input(&p, Input::Stdin(Bytes::from_static(b"world\n")))
        .await
        .expect("input");
    f.processes.close_stdin(&p).await.expect("close");
    let got = collect(sub).await;
    assert_eq!(got.stdout(), "hello world\ndone\n");

    // stdin: false is /dev/null: cat ends at once, and there is nothing to write to.
    let mut spec = sh("cat; sleep 1");
    spec.stdin = Some(false);
    let (pid, sub) = f.start(spec);
    let err = f
        .processes
        .send_input(&Selector::Pid(pid), Input::Stdin(Bytes::from_static(b"x")))
        .await
        .expect_err("no stdin");
    assert_eq!(err.code, Code::Internal);
    assert_eq!(collect(sub).await.stdout(), "");
}

#[tokio::test]
async fn signals_reach_the_group_and_read_like_go() {
    let f = Fixture::new();
    let (pid, sub) = f.start(sh("sleep 30 & sleep 30; echo never"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.processes
        .signal(&Selector::Pid(pid), Signal::Terminate)
        .await
        .expect("signal");
    let end = collect(sub).await.end.expect("end");
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (-1, false, "signal: terminated")
    );
    assert_group_gone(pid).await;

    let (pid, sub) = f.start(sh("sleep 30"));
    f.processes
        .signal(&Selector::Pid(pid), Signal::Kill)
        .await
        .expect("signal");
    // Answered once reaped: the pid is gone at once, not a zombie that `kill -0` still finds.
    // SAFETY: signal 0 only checks whether the pid exists.
    assert_eq!(
        unsafe { libc::kill(pid as i32, 0) },
        -1,
        "pid {pid} still exists"
    );
    let end = collect(sub).await.end.expect("end");
    assert_eq!(end.status, "signal: killed");
    assert_eq!(end.error.as_deref(), Some("signal: killed"));

    let err = f
        .processes
        .signal(&Selector::Pid(pid), Signal::Kill)
        .await
        .expect_err("ended processes cannot be signalled");
    assert_eq!(err.code, Code::NotFound);
    assert_eq!(err.message, format!("process with pid {pid} not found"));
}

/// Waits until no process of the group led by `pgid` is left (the group's members are reaped
/// by init or whoever, so this polls).
async fn assert_group_gone(pgid: u32) {
    for _ in 0..100 {
        // SAFETY: signal 0 only checks whether the group exists.
        let alive = unsafe { libc::killpg(pgid as i32, 0) } == 0;
        if !alive || only_zombies(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("processes of group {pgid} are still running");
}

/// Whether every process of the group is a zombie (killed, waiting for its reaper).
fn only_zombies(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().all(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return true;
        };
        // pid (comm) state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            return true;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        fields.get(2) != Some(&pgid.to_string().as_str()) || fields.first() == Some(&"Z")
    })
}

#[tokio::test]
async fn the_deadline_kills_the_whole_group() {
    let f = Fixture::new();
    let marker = f.dir.join("f");
    let mut spec = sh(&format!(
        "(sleep 1.5; touch {}) & sleep 60",
        marker.display()
    ));
    spec.timeout = Some(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (pid, sub) = f.start(spec);
    let end = collect(sub).await.end.expect("end");
    assert_eq!((end.exit_code, end.status.as_str()), (-1, "signal: killed"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_group_gone(pid).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !marker.exists(),
        "the grandchild outlived the deadline and created {}",
        marker.display()
    );
}

#[tokio::test]
async fn connect_by_pid_and_tag_and_after_the_end() {
    let f = Fixture::new();
    let mut spec = sh("sleep 0.5; echo late; exit 4");
    spec.tag = Some("my-tag".into());
    let (pid, first) = f.start(spec);

    let listed = f.processes.list();
    let info = listed.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(info.tag.as_deref(), Some("my-tag"));
    assert_eq!(info.config.cmd, "/bin/sh");

    let (by_tag_pid, by_tag) = f
        .processes
        .connect(&Selector::Tag("my-tag".into()))
        .expect("by tag");
    assert_eq!(by_tag_pid, pid);
    let (_, by_pid) = f.processes.connect(&Selector::Pid(pid)).expect("by pid");
    let (a, b, c) = tokio::join!(collect(first), collect(by_tag), collect(by_pid));
    for got in [&a, &b, &c] {
        assert_eq!(got.stdout(), "late\n");
        assert_eq!(got.ends, 1);
        assert_eq!(got.end.as_ref().map(|e| e.exit_code), Some(4));
    }
    assert!(f.processes.list().iter().all(|p| p.pid != pid));

    // Just after the end: the end again, and nothing else.
    let (_, late) = f.processes.connect(&Selector::Pid(pid)).expect("late");
    let late = collect(late).await;
    assert_eq!((late.stdout(), late.ends), (String::new(), 1));
    assert_eq!(late.end.map(|e| e.exit_code), Some(4));

    let err = f
        .processes
        .connect(&Selector::Pid(u32::MAX))
        .err()
        .expect("unknown pid");
    assert_eq!(err.code, Code::NotFound);
    let err = f
        .processes
        .connect(&Selector::Tag("no-such-tag".into()))
        .err()
        .expect("unknown tag");
    assert_eq!(err.code, Code::NotFound);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_blocks_nobody() {
    let f = Fixture::new();
    const TOTAL: usize = 48 << 20;
    let (pid, mut stalled) = f.start(sh(&format!("sleep 0.3; head -c {TOTAL} /dev/zero")));
    let (_, reader) = f.processes.connect(&Selector::Pid(pid)).expect("connect");
    // `stalled` is never polled while the command writes three times its queue's budget.
    let got = collect(reader).await;
    assert_eq!(got.stdout.len(), TOTAL);
    assert_eq!(got.end.map(|e| e.exit_code), Some(0));
    // The stalled one lost data but still gets its end, after what it kept.
    let mut kept = 0;
    let end = loop {
        match stalled.next().await {
            Some(Event::Stdout(b)) => kept += b.len(),
            // The notice of what it lost, if a chunk fit again after the loss.
            Some(Event::Stderr(b)) => assert!(String::from_utf8_lossy(&b).contains("dropped")),
            Some(Event::End(end)) => break end,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(end.exit_code, 0);
    assert!(kept < TOTAL, "the stalled subscriber kept everything");
}

#[tokio::test]
async fn bad_cwd_and_bad_commands_are_invalid_arguments() {
    let f = Fixture::new();
    let mut spec = sh("true");
    spec.config.cwd = Some("/no/such/dir".into());
    let err = f
        .processes
        .start(&f.caller, &[], spec)
        .err()
        .expect("bad cwd");
    assert_eq!(err.code, Code::InvalidArgument);
    assert_eq!(err.message, "cwd '/no/such/dir' does not exist");

    let mut spec = sh("true");
    spec.config.cmd = "/no/such/program".into();
    let err = f
        .processes
        .start(&f.caller, &[], spec)
        .err()
        .expect("bad command");
    assert_eq!(err.code, Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_users_are_unauthenticated() {
    let envd = Envd::new(Settings {
        workdir: std::env::temp_dir(),
        ..Default::default()
    })
    .expect("envd");
    let err = envd
        .caller(Some("no-such-user-kernelbox"))
        .expect_err("unknown user");
    assert_eq!(err.code, Code::Unauthenticated);
}

#[tokio::test]
async fn environment_cwd_and_priority() {
    let f = Fixture::new();
    let sub = f.dir.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let mut spec = sh(
        "echo \"$PATH|$HOME|$USER|$LOGNAME|$SANDBOX|$OVERRIDE|$REQ\"; pwd; \
         cat /proc/self/oom_score_adj; cut -d' ' -f19 /proc/$$/stat",
    );
    spec.config.cwd = Some("sub".into());
    spec.config.envs = BTreeMap::from([
        ("OVERRIDE".to_string(), "request".to_string()),
        ("REQ".to_string(), "r".to_string()),
    ]);
    let sandbox_env = [
        ("SANDBOX".to_string(), "s".to_string()),
        ("OVERRIDE".to_string(), "sandbox".to_string()),
    ];
    let (_, sub_stream) = f
        .processes
        .start(&f.caller, &sandbox_env, spec)
        .expect("start");
    let got = collect(sub_stream).await;
    let out = got.stdout();
    let lines: Vec<&str> = out.lines().collect();
    let user = User::current().expect("user").name;
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert!(fields[0].starts_with("/opt/kernelbox-test/bin:"), "{out}");
    assert_eq!(
        &fields[1..],
        &[
            f.dir.to_str().expect("utf-8"),
            user.as_str(),
            user.as_str(),
            "s",
            "request",
            "r"
        ]
    );
    assert_eq!(lines[1], sub.to_str().expect("utf-8"));
    assert_eq!(lines[2], "100");
    // SAFETY: getpriority on ourselves.
    let own_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    assert!(
        lines[3].trim().parse::<i32>().expect("nice") > own_nice,
        "{out}"
    );
}

#[tokio::test]
async fn commands_run_as_the_callers_user() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot switch users, skipping");
        return;
    }
    let f = Fixture::new();
    let nobody = User::lookup("nobody").expect("nobody exists");
    let caller = Caller {
        home: nobody.home.clone(),
        user: nobody.clone(),
        workdir: PathBuf::from("/"),
    };
    let (_, sub) = f
        .processes
        .start(&caller, &[], sh("id -u; id -g; echo $HOME $USER"))
        .expect("start");
    let got = collect(sub).await;
    assert_eq!(
        got.stdout(),
        format!(
            "{}\n{}\n{} nobody\n",
            nobody.uid,
            nobody.gid,
            nobody.home.display()
        )
    );
}

#[tokio::test]
async fn terminals_take_input_and_resize() {
    let f = Fixture::new();
    let spec = StartSpec {
        config: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["--norc".into(), "--noprofile".into(), "-i".into()],
            envs: BTreeMap::from([("TERM".to_string(), "xterm-256color".to_string())]),
            cwd: None,
        },
        pty: Some(PtySize { cols: 80, rows: 24 }),
        ..Default::default()
    };
    let (pid, sub) = f.start(spec);
    let p = Selector::Pid(pid);
    let send = |text: &'static str| {
        f.processes
            .send_input(&p, Input::Pty(Bytes::from_static(text.as_bytes())))
    };
    send("stty size; echo $TERM; tty\n").await.expect("input");
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.processes
        .resize(
            &p,
            PtySize {
                cols: 100,
                rows: 30,
            },
        )
        .expect("resize");
    send("stty size; echo $((6*7))\n").await.expect("input");
    let err = f.processes.close_stdin(&p).await.expect_err("a pty");
    assert_eq!(err.code, Code::Unknown);
    send("exit 5\n").await.expect("input");
    let got = collect(sub).await;
    let text = String::from_utf8_lossy(&got.pty).into_owned();
    assert!(got.stdout.is_empty());
    for expected in ["24 80", "xterm-256color", "/dev/pts/", "30 100", "42"] {
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
    }
    assert_eq!(got.end.map(|e| e.exit_code), Some(5));
}

#[tokio::test]
async fn dropping_the_table_kills_what_runs() {
    let f = Fixture::new();
    let (pid, _sub) = f.start(sh("sleep 30 & sleep 30"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(f.processes);
    assert_group_gone(pid).await;
}

// ---------------------------------------------------------------------------------------------
// Over HTTP: the Connect handlers of a real agent (no default contexts, so it starts at once).

mod http {
    use std::time::Duration;

    use base64::Engine;
    use serde_json::{json, Value};

    use super::common;

    /// One agent for this section, on a thread that lives as long as the test binary.
    fn envd() -> &'static str {
        static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        URL.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let agent = common::Agent::start(&[
                    "--default-languages=",
                    "--env",
                    "KB_SANDBOX_VAR=from-sandbox",
                ]);
                let _ = tx.send(agent.envd_url.clone());
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("agent started")
        })
    }

    fn envelope(flags: u8, message: &Value) -> Vec<u8> {
        let json = message.to_string().into_bytes();
        let mut out = vec![flags];
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Splits a streaming body into (flags, message) envelopes.
    fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
        let mut out = Vec::new();
        while body.len() >= 5 {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            let message = serde_json::from_slice(&body[5..5 + len]).expect("envelope JSON");
            out.push((body[0], message));
            body = &body[5 + len..];
        }
        assert!(body.is_empty(), "trailing bytes");
        out
    }

    fn post(method: &str, content_type: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}/process.Process/{method}", envd()))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1")
    }

    async fn unary(method: &str, body: Value) -> (u16, Value) {
        let res = post(method, "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    /// A whole server stream: its data messages and its end-stream message.
    async fn stream(method: &str, body: Value, headers: &[(&str, &str)]) -> (Vec<Value>, Value) {
        let mut req = post(method, "application/connect+json").body(envelope(0, &body));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200);
        let body = res.bytes().await.expect("body");
        let mut all = envelopes(&body);
        let (flags, end) = all.pop().expect("end-stream");
        assert_eq!(flags, 2, "the last envelope ends the stream");
        assert!(all.iter().all(|(f, _)| *f == 0));
        (all.into_iter().map(|(_, m)| m).collect(), end)
    }

    fn sh(script: &str) -> Value {
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", script]}, "stdin": false})
    }

    fn data(events: &[Value], stream: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bytes: Vec<u8> = events
            .iter()
            .filter_map(|e| e["event"]["data"][stream].as_str())
            .flat_map(|s| b64.decode(s).expect("base64"))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn ends(events: &[Value]) -> Vec<&Value> {
        events
            .iter()
            .filter_map(|e| e["event"].get("end"))
            .collect()
    }

    fn pid_of(events: &[Value]) -> u64 {
        events[0]["event"]["start"]["pid"]
            .as_u64()
            .expect("start{pid} first")
    }

    #[tokio::test]
    async fn start_streams_start_output_and_one_end() {
        let (events, end) = stream(
            "Start",
            sh("echo \"hi $KB_SANDBOX_VAR $REQ_VAR\"; echo err >&2; exit 3"),
            &[],
        )
        .await;
        pid_of(&events);
        assert_eq!(end, json!({}));
        assert_eq!(data(&events, "stdout"), "hi from-sandbox \n");
        assert_eq!(data(&events, "stderr"), "err\n");
        assert_eq!(
            ends(&events),
            [
                &json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
            ]
        );
        assert!(events.last().expect("end")["event"].get("end").is_some());

        let mut with_env = sh("echo $REQ_VAR; pwd");
        with_env["process"]["envs"] = json!({"REQ_VAR": "r"});
        with_env["process"]["cwd"] = json!("/tmp");
        let (events, _) = stream("Start", with_env, &[]).await;
        assert_eq!(data(&events, "stdout"), "r\n/tmp\n");
        assert_eq!(
            ends(&events),
            [&json!({"exited": true, "status": "exit status 0"})]
        );
    }

    #[tokio::test]
    async fn errors_have_envds_codes() {
        let (events, end) = stream(
            "Connect",
            json!({"process": {"pid": 4_000_000_000u32}}),
            &[],
        )
        .await;
        assert!(events.is_empty());
        assert_eq!(end["error"]["code"], "not_found");
        let (status, body) = unary(
            "SendSignal",
            json!({"process": {"pid": 4_000_000_000u32}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
        // Bytes that are not base64 are the caller's mistake, not the process's.
        let (status, body) = unary(
            "SendInput",
            json!({"process": {"pid": 1}, "input": {"stdin": "%%% not base64 %%%"}}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_argument")),
            "{body}"
        );

        let mut bad_cwd = sh("true");
        bad_cwd["process"]["cwd"] = json!("/no/such/dir");
        let (_, end) = stream("Start", bad_cwd, &[]).await;
        assert_eq!(end["error"]["code"], "invalid_argument");
        assert_eq!(end["error"]["message"], "cwd '/no/such/dir' does not exist");

        // base64("no-such-user-kb:")
        let (_, end) = stream(
            "Start",
            sh("true"),
            &[("authorization", "Basic bm8tc3VjaC11c2VyLWtiOg==")],
        )
        .await;
        assert_eq!(end["error"]["code"], "unauthenticated");
    }

    #[tokio::test]
    async fn the_deadline_kills_the_group_of_a_started_command() {
        let dir = common::tempdir("envd-deadline");
        let marker = dir.join("f");
        let script = format!("(sleep 1.5; touch {}) & sleep 60", marker.display());
        let started = std::time::Instant::now();
        let (events, end) = stream("Start", sh(&script), &[("connect-timeout-ms", "700")]).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(end["error"]["code"], "deadline_exceeded");
        let pid = pid_of(&events);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(!marker.exists(), "a grandchild outlived the deadline");
        // SAFETY: signal 0 only checks whether the group exists.
        let alive = unsafe { libc::killpg(pid as i32, 0) } == 0;
        assert!(
            !alive || super::only_zombies(pid as u32),
            "the group survived"
        );
    }

    #[tokio::test]
    async fn stdin_through_send_input_stream_input_and_close() {
        let tag = format!("stdin-{}", std::process::id());
        let body = json!({"process": {"cmd": "/bin/cat"}, "tag": tag});
        let started = tokio::spawn(stream("Start", body, &[]));
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (status, _) = unary(
            "SendInput",
            json!({"process": {"tag": tag}, "input": {"stdin": "b25lIA=="}}),
        )
        .await;
        assert_eq!(status, 200);
        let mut input = envelope(0, &json!({"start": {"process": {"tag": tag}}}));
        input.extend(envelope(
            0,
            &json!({"data": {"input": {"stdin": "dHdvIA=="}}}),
        ));
        input.extend(envelope(0, &json!({"keepalive": {}})));
        input.extend(envelope(
            0,
            &json!({"data": {"input": {"stdin": "dGhyZWU="}}}),
        ));
        let res = post("StreamInput", "application/connect+json")
            .body(input)
            .send()
            .await
            .expect("stream input");
        let reply = envelopes(&res.bytes().await.expect("body"));
        assert_eq!(reply, [(0, json!({})), (2, json!({}))]);

        let (status, listed) = unary("List", json!({})).await;
        assert_eq!(status, 200);
        let mine = listed["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["tag"] == tag.as_str())
            .expect("listed by tag")
            .clone();
        assert_eq!(mine["config"], json!({"cmd": "/bin/cat"}));

        let (status, _) = unary("CloseStdin", json!({"process": {"tag": tag}})).await;
        assert_eq!(status, 200);
        let (events, end) = started.await.expect("join");
        assert_eq!(end, json!({}));
        assert_eq!(data(&events, "stdout"), "one two three");
        assert_eq!(ends(&events).len(), 1);

        // Late connect: the end again.
        let (late, _) = stream("Connect", json!({"process": {"pid": mine["pid"]}}), &[]).await;
        assert_eq!(late.len(), 2, "{late:?}");
        assert_eq!(
            ends(&late),
            [&json!({"exited": true, "status": "exit status 0"})]
        );
    }

    #[tokio::test]
    async fn keepalives_while_quiet_and_signals() {
        let (events, _) = stream(
            "Start",
            sh("sleep 2.5; echo done"),
            &[("keepalive-ping-interval", "1")],
        )
        .await;
        let keepalives = events
            .iter()
            .filter(|e| e["event"].get("keepalive").is_some())
            .count();
        assert!(keepalives >= 1, "{events:?}");

        let started = tokio::spawn(stream("Start", sh("sleep 30"), &[]));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, listed) = unary("List", json!({})).await;
        let pid = listed["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["config"]["args"][2] == "sleep 30")
            .map(|p| p["pid"].clone())
            .expect("listed");
        let (status, _) = unary(
            "SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
        )
        .await;
        assert_eq!(status, 200);
        let (events, _) = started.await.expect("join");
        assert_eq!(
            ends(&events),
            [
                &json!({"exitCode": -1, "status": "signal: terminated", "error": "signal: terminated"})
            ]
        );
    }

    /// A client that connects and then never reads its socket, while the command writes far more
    /// than the socket buffers and the queue hold: the command finishes and a second client gets
    /// every byte.
    #[tokio::test]
    async fn a_client_that_stops_reading_blocks_nobody() {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        const TOTAL: usize = 40 << 20;
        let body = sh(&format!("sleep 1; head -c {TOTAL} /dev/zero"));
        let res = post("Start", "application/connect+json")
            .body(envelope(0, &body))
            .send()
            .await
            .expect("start");
        let mut chunks = res.bytes_stream();
        let mut buf = Vec::new();
        while buf.len() < 5
            || buf.len() < 5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize
        {
            buf.extend_from_slice(&chunks.next().await.expect("chunk").expect("bytes"));
        }
        let pid =
            envelopes(&buf[..5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize])[0]
                .1["event"]["start"]["pid"]
                .as_u64()
                .expect("pid");

        // The stalled client: a raw HTTP/1.1 Connect whose response is never read.
        let addr = envd().trim_start_matches("http://").to_string();
        let mut stalled = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let message = envelope(0, &json!({"process": {"pid": pid}}));
        let head = format!(
            "POST /process.Process/Connect HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/connect+json\r\ncontent-length: {}\r\n\r\n",
            message.len()
        );
        stalled.write_all(head.as_bytes()).await.expect("write");
        stalled.write_all(&message).await.expect("write");

        while let Some(chunk) = chunks.next().await {
            buf.extend_from_slice(&chunk.expect("bytes"));
        }
        let all = envelopes(&buf);
        let events: Vec<Value> = all.iter().map(|(_, m)| m.clone()).collect();
        let b64 = base64::engine::general_purpose::STANDARD;
        let total: usize = events
            .iter()
            .filter_map(|e| e["event"]["data"]["stdout"].as_str())
            .map(|s| b64.decode(s).expect("base64").len())
            .sum();
        assert_eq!(total, TOTAL);
        assert_eq!(ends(&events[..events.len() - 1]).len(), 1);
        drop(stalled);
    }

    #[tokio::test]
    async fn the_rust_client_runs_commands() {
        let client = kernelbox::client::Client::new(envd());
        let out = client
            .run_command("/bin/sh", &["-c", "echo hi; echo e >&2; exit 2"], None)
            .await
            .expect("run");
        assert!(out.pid > 0);
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"hi\n"[..], &b"e\n"[..])
        );
        assert_eq!((out.exit_code, out.status.as_str()), (2, "exit status 2"));
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = std::time::Instant::now();
            client
                .run_command("/bin/true", &[], None)
                .await
                .expect("true");
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!(
            "Process.Start of /bin/true, p50 (debug build): {:?}",
            times[10]
        );
        let err = client
            .run_command(
                "/bin/sh",
                &["-c", "sleep 5"],
                Some(Duration::from_millis(200)),
            )
            .await
            .expect_err("deadline");
        assert!(err.to_string().starts_with("deadline_exceeded"), "{err}");
    }
}
