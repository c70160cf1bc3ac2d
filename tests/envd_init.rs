//! The sandbox API's access token, its init call (token, env vars that reach running kernels,
//! default user and workdir), `/envs`, `/metrics`, and the unix-socket listener a control plane
//! uses to reach an agent.

mod common;

use common::Agent;
use serde_json::{json, Value};

const TOKEN_HEADER: &str = "X-Access-Token";

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.text().await.expect("body"))
}

async fn init(envd: &str, token: Option<&str>, body: Value) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{envd}/init"))
        .json(&body);
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.text().await.expect("body"))
}

/// Runs `code` and returns the main result's text, or the status when the call is refused.
async fn execute(url: &str, token: Option<&str>, code: &str) -> Result<String, u16> {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&json!({"code": code}));
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t);
    }
    let res = req.send().await.expect("request");
    if res.status() != 200 {
        return Err(res.status().as_u16());
    }
    let text = res.text().await.expect("body");
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["type"] == "result")
        .and_then(|l| l["text"].as_str().map(String::from))
        .unwrap_or_default())
}

#[tokio::test]
async fn a_configured_token_guards_envd_and_execute() {
    let agent = Agent::start(&["--access-token", "s3cret", "--default-languages", "python"]);
    let envd = &agent.envd_url;
    assert_eq!(get(&format!("{envd}/health"), None).await.0, 204);
    let (status, body) = get(&format!("{envd}/envs"), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["code"],
        "unauthenticated"
    );
    assert_eq!(get(&format!("{envd}/envs"), Some("wrong")).await.0, 401);
    assert_eq!(get(&format!("{envd}/envs"), Some("s3cret")).await.0, 200);
    assert_eq!(get(&format!("{envd}/metrics"), Some("s3cret")).await.0, 200);

    assert_eq!(execute(&agent.url, None, "1 + 1").await, Err(401));
    assert_eq!(execute(&agent.url, Some("nope"), "1 + 1").await, Err(401));
    assert_eq!(
        execute(&agent.url, Some("s3cret"), "1 + 1").await,
        Ok("2".into())
    );
    // The SDKs send no token to the other interpreter routes.
    assert_eq!(get(&format!("{}/contexts", agent.url), None).await.0, 200);
    // A wrong token on the init call is refused and changes nothing.
    let (status, _) = init(envd, Some("wrong"), json!({"accessToken": "mine"})).await;
    assert_eq!(status, 401);
    assert_eq!(get(&format!("{envd}/envs"), Some("s3cret")).await.0, 200);
}

#[tokio::test]
async fn init_sets_token_env_vars_user_and_workdir_on_a_running_agent() {
    let agent = Agent::start(&["--default-languages", "python"]);
    let (envd, url) = (&agent.envd_url, &agent.url);
    execute(url, None, "kept = 41").await.expect("runs");
    let workdir = common::tempdir("init-workdir");

    let body = json!({
        "accessToken": "t1",
        "envVars": {"KB_INIT_VAR": "from-init"},
        "defaultUser": "root",
        "defaultWorkdir": workdir,
        "timestamp": "2026-01-01T00:00:00Z",
        "lifecycleID": "ignored",
    });
    assert_eq!(init(envd, None, body).await.0, 204);

    // The token is now required, and the running kernel kept its state and got the variable.
    assert_eq!(execute(url, None, "1").await, Err(401));
    let seen = execute(
        url,
        Some("t1"),
        "import os; (kept, os.environ.get('KB_INIT_VAR'))",
    )
    .await;
    assert_eq!(seen, Ok("(41, 'from-init')".into()));
    let (status, envs) = get(&format!("{envd}/envs"), Some("t1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&envs).expect("json")["KB_INIT_VAR"],
        "from-init"
    );
    // A kernel started later gets it too (a restart, here).
    let ctx = kernelbox::client::Client::new(url.clone())
        .list_contexts()
        .await
        .expect("contexts")
        .remove(0)
        .id;
    kernelbox::client::Client::new(url.clone())
        .restart_context(&ctx)
        .await
        .expect("restart");
    let seen = execute(url, Some("t1"), "import os; os.environ.get('KB_INIT_VAR')").await;
    assert_eq!(seen, Ok("from-init".into()));

    // Repeatable, but only with the token in force.
    assert_eq!(init(envd, None, json!({"accessToken": "t2"})).await.0, 401);
    assert_eq!(
        init(envd, Some("t1"), json!({"accessToken": "t2"})).await.0,
        204
    );
    assert_eq!(get(&format!("{envd}/envs"), Some("t2")).await.0, 200);
    assert_eq!(get(&format!("{envd}/envs"), Some("t1")).await.0, 401);

    // Bad values are refused whole.
    for bad in [
        json!({"defaultUser": "no-such-user-kernelbox"}),
        json!({"defaultWorkdir": "relative/dir"}),
        json!({"envVars": {"BAD-NAME": "x"}}),
    ] {
        let (status, body) = init(envd, Some("t2"), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn metrics_report_the_machine() {
    let agent = Agent::start(&["--default-languages", "python"]);
    let (status, body) = get(&format!("{}/metrics", agent.envd_url), None).await;
    assert_eq!(status, 200);
    let m: Value = serde_json::from_str(&body).expect("json");
    for key in [
        "ts",
        "cpu_count",
        "cpu_used_pct",
        "mem_total",
        "mem_used",
        "disk_total",
    ] {
        assert!(m[key].is_number(), "{key} in {m}");
    }
    assert!(m["mem_total"].as_u64() > m["mem_used"].as_u64());
}

#[tokio::test]
async fn the_unix_socket_answers_for_both_services() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = common::tempdir("unix").join("agent.sock");
    let socket_arg = socket.to_str().expect("utf-8 path").to_string();
    let _agent = Agent::start(&[
        "--unix-socket",
        &socket_arg,
        "--default-languages",
        "python",
    ]);
    let ask = |request: &'static str| {
        let socket = socket.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&socket)
                .await
                .expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        }
    };
    let health = ask("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 204"), "{health}");
    let contexts = ask(
        "GET /contexts HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Port: 49999\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(contexts.starts_with("HTTP/1.1 200"), "{contexts}");
    assert!(contexts.contains("\"language\":\"python\""), "{contexts}");
}
