//! Helpers for tests that drive `/execute`: whole runs as JSON lines, contexts, and the clean-ups
//! that make snapshots independent of the machine and of timing.

use std::time::Duration;

use kernelbox::client::Client;
use serde_json::{json, Value};

/// Runs one `/execute` and returns its lines as JSON values, checking the wire format on the way:
/// ASCII only, one object per line, ending with `end_of_execution`.
pub async fn lines(url: &str, body: Value) -> Vec<Value> {
    let res = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "status for {body}");
    assert!(res.headers().get("content-type").is_none());
    let text = res.text().await.expect("body");
    assert!(text.is_ascii(), "stream must be ASCII");
    assert!(
        text.ends_with("{\"type\": \"end_of_execution\"}\n"),
        "{text}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The same, with keepalives dropped (their count depends on timing).
pub async fn events(url: &str, body: Value) -> Vec<Value> {
    lines(url, body)
        .await
        .into_iter()
        .filter(|l| l["type"] != "keepalive")
        .collect()
}

pub async fn new_context(url: &str, language: &str) -> String {
    Client::new(url)
        .create_context(Some(language), None)
        .await
        .expect("create context")
        .id
}

/// Runs `code` once in a new context of `language` (so execution counts start at 1).
pub async fn run_fresh(url: &str, language: &str, code: &str) -> Vec<Value> {
    let ctx = new_context(url, language).await;
    run_in(url, &ctx, code).await
}

pub async fn run_in(url: &str, ctx: &str, code: &str) -> Vec<Value> {
    events(url, json!({"code": code, "context_id": ctx})).await
}

/// Waits until a cell has created `path`: proof that it is running, independent of output timing.
pub async fn wait_for_file(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces machine-specific strings (temp paths, ids) in every string of `v`, for snapshots.
pub fn scrub(v: Value, replacements: &[(&str, &str)]) -> Value {
    let mut text = v.to_string();
    for (from, to) in replacements {
        let from = serde_json::to_string(from).unwrap();
        let to = serde_json::to_string(to).unwrap();
        text = text.replace(&from[1..from.len() - 1], &to[1..to.len() - 1]);
    }
    serde_json::from_str(&text).unwrap()
}

/// Merges consecutive stdout (or stderr) events, wherever a list of events appears: how a kernel
/// splits its output into messages depends on timing, not on the code.
pub fn fold_streams(v: Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut out: Vec<Value> = Vec::new();
            for item in items.into_iter().map(fold_streams) {
                let kind = item["type"].as_str().unwrap_or("").to_string();
                if let Some(last) = out.last_mut() {
                    if (kind == "stdout" || kind == "stderr")
                        && last["type"] == kind.as_str()
                        && item["text"].is_string()
                    {
                        let joined = format!(
                            "{}{}",
                            last["text"].as_str().unwrap_or(""),
                            item["text"].as_str().unwrap_or("")
                        );
                        last["text"] = json!(joined);
                        continue;
                    }
                }
                out.push(item);
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, fold_streams(v))).collect())
        }
        other => other,
    }
}
