//! Helpers for tests that start sandboxes with the namespace backend: a backend in a folder of
//! the test's own, spawning (or skipping where the kernel refuses namespaces), and HTTP and
//! commands over a sandbox agent's unix socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use kernelbox::sandbox::{
    Backend, NamespaceBackend, Rootfs, SandboxError, SandboxHandle, SandboxSpec,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The folder of a test's sandboxes, removed when the test ends (after its backend, which is
/// declared later and so dropped first, has killed what it still runs).
pub struct RuntimeDir(pub PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A backend whose sandbox folders live in a folder of this test's own.
pub fn backend(name: &str) -> (RuntimeDir, NamespaceBackend) {
    let dir = std::env::temp_dir().join(format!("kb-sandbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend =
        NamespaceBackend::with(dir.clone(), &kernelbox::config::home(), Rootfs::HostMinimal);
    (RuntimeDir(dir), backend)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Spawns and waits until the agent answers, or returns `None` (after saying why) where this host
/// cannot run sandboxes.
pub async fn spawn_or_skip(backend: &NamespaceBackend, spec: SandboxSpec) -> Option<SandboxHandle> {
    if !is_root() {
        eprintln!("skipped: sandboxes need root");
        return None;
    }
    match backend.spawn(spec).await {
        Ok(handle) => {
            wait_healthy(&handle).await;
            Some(handle)
        }
        Err(SandboxError::NamespacesUnavailable(e)) => {
            eprintln!("skipped: the kernel refuses namespaces: {e}");
            None
        }
        Err(e) => panic!("spawn: {e}"),
    }
}

/// One HTTP/1.1 exchange over the agent's unix socket: (status, body), de-chunked.
pub async fn http(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("status");
    let mut rest = &answer[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, rest.to_vec());
    }
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).expect("utf-8").trim(), 16)
                .expect("hex size");
        if size == 0 {
            return (status, out);
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
}

/// Waits until the agent answers `GET /health` with 204 over its socket.
pub async fn wait_healthy(handle: &SandboxHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if handle.agent_socket.exists() {
            let probe = tokio::time::timeout(Duration::from_secs(5), async {
                let mut stream = tokio::net::UnixStream::connect(&handle.agent_socket).await?;
                stream
                    .write_all(
                        b"GET /health HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                std::io::Result::Ok(answer)
            })
            .await;
            if let Ok(Ok(answer)) = probe {
                assert!(
                    answer.starts_with(b"HTTP/1.1 204"),
                    "{}",
                    String::from_utf8_lossy(&answer)
                );
                return;
            }
        }
        let log = std::fs::read_to_string(handle.dir.join("agent.log")).unwrap_or_default();
        assert!(
            Path::new(&format!("/proc/{}", handle.init_pid)).exists()
                && !is_zombie(handle.init_pid),
            "the sandbox's agent died; its log:\n{log}"
        );
        assert!(
            Instant::now() < deadline,
            "no /health within 60 s; agent log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Runs `script` with `/bin/sh -c` through envd's Process API over the socket, as the agent's
/// default user (root); its stdout.
pub async fn sh(handle: &SandboxHandle, script: &str) -> String {
    sh_as(handle, None, script).await
}

/// [`sh`] as `user` (envd's `Authorization: Basic`).
pub async fn sh_as(handle: &SandboxHandle, user: Option<&str>, script: &str) -> String {
    let message = json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false});
    let json = message.to_string().into_bytes();
    let mut body = vec![0u8];
    body.extend_from_slice(&(json.len() as u32).to_be_bytes());
    body.extend_from_slice(&json);
    let auth = user.map(|u| {
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("Basic {}", b64.encode(format!("{u}:")))
    });
    let mut headers = vec![
        ("Content-Type", "application/connect+json"),
        ("Connect-Protocol-Version", "1"),
    ];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, answer) = http(
        &handle.agent_socket,
        "POST",
        "/process.Process/Start",
        &headers,
        &body,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut rest = &answer[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let m: Value = serde_json::from_slice(&rest[5..5 + len]).expect("envelope");
        if let Some(s) = m["event"]["data"]["stdout"].as_str() {
            out.extend(b64.decode(s).expect("base64"));
        }
        rest = &rest[5 + len..];
    }
    String::from_utf8_lossy(&out).into_owned()
}
