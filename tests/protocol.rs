//! Protocol edge cases through a scripted fake kernel (tests/fake_kernel/fake_kernel.py, pyzmq
//! from the kernels' venv): output after the reply, `abort`, missing dates, badly signed frames,
//! messages without an event, errors only in the reply, death mid-cell. Real kernels produce these
//! only by accident; the real-kernel tests are in tests/interpreter.rs.

mod common;

use serde_json::{json, Value};

/// An agent whose only kernel is the fake one.
fn fake_agent() -> common::Agent {
    let kernels = common::tempdir("fake-kernels");
    let spec = kernels.join("fake");
    std::fs::create_dir_all(&spec).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_kernel/fake_kernel.py");
    let python = kernelbox::config::home().join("python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run kernels/setup.sh (scripts/test.sh does)",
        python.display()
    );
    std::fs::write(
        spec.join("kernel.json"),
        json!({
            "argv": [python, script, "{connection_file}"],
            "display_name": "fake",
            "language": "fake",
        })
        .to_string(),
    )
    .unwrap();
    common::Agent::start(&[
        "--kernels-dir",
        kernels.to_str().unwrap(),
        "--default-languages",
        "fake",
    ])
}

async fn run(url: &str, code: &str) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&json!({"code": code, "language": "fake"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.ends_with("{\"type\": \"end_of_execution\"}\n"),
        "{text}"
    );
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] != "keepalive")
        .collect()
}

#[tokio::test]
async fn odd_kernel_behaviour_is_handled() {
    let agent = fake_agent();
    let url = agent.url.as_str();
    let cases = json!({
        "reply_before_output": run(url, "reply-first").await,
        "abort_status": run(url, "abort").await,
        "odd_messages": run(url, "odd-messages").await,
        "error_only_in_reply": run(url, "reply-error").await,
        "kernel_dies": run(url, "die").await,
        "after_death": run(url, "plain").await,
    });
    for line in cases["odd_messages"].as_array().unwrap() {
        if line["type"] == "stdout" {
            let ts = line["timestamp"].as_str().unwrap();
            assert!(ts.ends_with("+00:00") && ts.len() == 32, "{ts}");
        }
    }
    insta::assert_json_snapshot!("fake_kernel_cases", cases, {
        ".*[].timestamp" => "[timestamp]",
    });
}
