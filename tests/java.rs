//! The java kernel (JJava on JShell) through the interpreter API: insta snapshots of whole
//! executions (ids, timestamps, paths and JShell snippet numbers redacted) for results, output,
//! errors, state, env vars, timeouts and contexts.
//!
//! One agent serves every test here. It starts only a java default context (the java kernel is a
//! JVM: no python or javascript kernels are started that these tests do not use), with one
//! sandbox-level variable. Each test that counts executions works in a context of its own.

mod common;

use std::time::Duration;

use common::run::{events, run_in};
use kernelbox::client::Client;
use serde_json::{json, Value};

/// The agent for this test binary, with `--default-languages java`.
fn agent() -> &'static str {
    common::shared_agent_with(&[
        "--default-languages",
        "java",
        "--env",
        "KERNELBOX_SANDBOX_VAR=sandbox-value",
    ])
}

async fn new_context(url: &str) -> String {
    common::run::new_context(url, "java").await
}

/// The text of the main result, if any.
fn result_text(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find(|l| l["type"] == "result")
        .and_then(|l| l["text"].as_str())
        .map(str::to_string)
}

/// JShell names each snippet `#<n>` in stack traces; `n` counts every snippet the kernel has seen,
/// so it depends on what ran before, not on the code. Replaced by `#[n]` in every string.
fn redact_snippet_numbers(v: Value) -> Value {
    match v {
        Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(i) = rest.find('#') {
                out.push_str(&rest[..=i]);
                rest = &rest[i + 1..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                if digits > 0 && rest[digits..].starts_with(':') {
                    out.push_str("[n]");
                    rest = &rest[digits..];
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(redact_snippet_numbers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, redact_snippet_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, redact_snippet_numbers(json!($value)), {
            ".**.timestamp" => "[timestamp]",
            ".**.id" => "[id]",
        })
    };
}

#[tokio::test]
async fn result_value_and_println() {
    let url = agent();
    let ctx = new_context(url).await;
    let result = run_in(url, &ctx, "int a = 20;\na * 2 + 2").await;
    let string = run_in(url, &ctx, "\"Hello \" + \"World!\"").await;
    let println = run_in(
        url,
        &ctx,
        "System.out.println(\"Hello, World!\");\nSystem.err.println(\"to stderr\");",
    )
    .await;
    let both = run_in(
        url,
        &ctx,
        "System.out.print(\"partial \");\njava.util.List.of(1, 2, 3)",
    )
    .await;
    let nothing = run_in(url, &ctx, "void noop() {}").await;
    snap!(
        "java_result_and_println",
        json!({"result": result, "string": string, "println": println, "print_and_result": both, "declaration_only": nothing})
    );
}

#[tokio::test]
async fn exception_and_compile_error() {
    let url = agent();
    let ctx = new_context(url).await;
    let exception = run_in(url, &ctx, "throw new IllegalStateException(\"boom\");").await;
    let nested = run_in(
        url,
        &ctx,
        "int parse(String s) { return Integer.parseInt(s); }\nparse(\"not a number\")",
    )
    .await;
    let compile = run_in(url, &ctx, "int y = \"a string\";").await;
    let unknown = run_in(url, &ctx, "undefinedVariable + 1").await;
    // Output before the failing snippet is kept; snippets after it do not run.
    let partial = run_in(
        url,
        &ctx,
        "System.out.println(\"before\");\nthrow new RuntimeException(\"stop\");\nSystem.out.println(\"never\");",
    )
    .await;
    let after = run_in(url, &ctx, "1 + 1").await;
    assert_eq!(result_text(&after).as_deref(), Some("2"));
    snap!(
        "java_errors",
        json!({"exception": exception, "nested": nested, "compile_error": compile, "unknown_symbol": unknown, "partial": partial})
    );
}

#[tokio::test]
async fn state_across_runs() {
    let url = agent();
    let ctx = new_context(url).await;
    let mut seen = Vec::new();
    for code in [
        "import java.util.*;\nList<String> items = new ArrayList<>();\nitems.add(\"a\");",
        "items.add(\"b\");\nitems",
        "String shout(String s) { return s.toUpperCase() + \"!\"; }",
        "record Point(int x, int y) {}",
        "shout(String.join(\",\", items)) + \" \" + new Point(1, 2)",
        "int counter = 0;",
        "counter += 5;\ncounter",
    ] {
        seen.push(json!({"code": code, "events": run_in(url, &ctx, code).await}));
    }
    snap!("java_state_across_runs", seen);
}

#[tokio::test]
async fn env_vars_per_request_and_restored() {
    let url = agent();
    let ctx = new_context(url).await;
    let read = |key: &str| format!("System.getProperty(\"{key}\", \"<unset>\")");
    let tricky = "it's \"quoted\" \\ back \\u0041 $HOME \u{e9}\nline2\ttab";
    let mut seen = serde_json::Map::new();
    let mut run = |name: &str, out: Vec<Value>| {
        seen.insert(name.to_string(), json!(out));
    };
    // Sandbox-level variables are system properties (and still environment variables).
    run(
        "sandbox_level",
        run_in(
            url,
            &ctx,
            "System.getProperty(\"KERNELBOX_SANDBOX_VAR\") + \" \" + System.getenv(\"KERNELBOX_SANDBOX_VAR\")",
        )
        .await,
    );
    let with = events(
        url,
        json!({"code": read("KB_JAVA"), "context_id": ctx, "env_vars": {"KB_JAVA": tricky}}),
    )
    .await;
    assert_eq!(result_text(&with).as_deref(), Some(tricky), "{with:?}");
    run("per_request", with);
    run("after_request", run_in(url, &ctx, &read("KB_JAVA")).await);
    // A per-request value over a sandbox-level one, and the sandbox-level one back afterwards.
    run(
        "override",
        events(
            url,
            json!({"code": read("KERNELBOX_SANDBOX_VAR"), "context_id": ctx, "env_vars": {"KERNELBOX_SANDBOX_VAR": "override"}}),
        )
        .await,
    );
    run(
        "after_override",
        run_in(url, &ctx, &read("KERNELBOX_SANDBOX_VAR")).await,
    );
    // A value the user's own code set comes back after a request that overrode it.
    run_in(url, &ctx, "System.setProperty(\"KB_MINE\", \"mine\");").await;
    run(
        "over_user_value",
        events(
            url,
            json!({"code": read("KB_MINE"), "context_id": ctx, "env_vars": {"KB_MINE": "request"}}),
        )
        .await,
    );
    run("user_value_back", run_in(url, &ctx, &read("KB_MINE")).await);
    // Restored on the error path too.
    run(
        "failing_request",
        events(
            url,
            json!({"code": "throw new RuntimeException(System.getProperty(\"KB_ERR\"));", "context_id": ctx, "env_vars": {"KB_ERR": "in-error"}}),
        )
        .await,
    );
    run(
        "after_failing_request",
        run_in(url, &ctx, &read("KB_ERR")).await,
    );
    snap!("java_env_vars", seen);
}

#[tokio::test]
async fn timeout_interrupts_a_busy_loop_and_keeps_state() {
    let url = agent();
    let ctx = new_context(url).await;
    run_in(url, &ctx, "int kept = 7;").await;
    let started = std::time::Instant::now();
    let busy = tokio::time::timeout(
        Duration::from_secs(60),
        events(
            url,
            json!({"code": "System.out.println(\"spinning\");\nwhile (true) {}", "context_id": ctx, "timeout": 3}),
        ),
    )
    .await
    .expect("the timed-out cell ends");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "interrupt took {:?}",
        started.elapsed()
    );
    let sleeping = events(
        url,
        json!({"code": "Thread.sleep(60_000);", "context_id": ctx, "timeout": 2}),
    )
    .await;
    let state = run_in(url, &ctx, "kept * 6").await;
    assert_eq!(result_text(&state).as_deref(), Some("42"), "{state:?}");
    // The interrupt endpoint stops a busy cell the same way.
    let body = json!({"code": "long spins = 0;\nwhile (true) { spins++; }", "context_id": ctx});
    let running = tokio::spawn(async move { events(url, body).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    Client::new(url).interrupt_context(&ctx).await.unwrap();
    let interrupted = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the interrupted cell ends")
        .unwrap();
    let after = run_in(url, &ctx, "kept + 1").await;
    assert_eq!(result_text(&after).as_deref(), Some("8"), "{after:?}");
    snap!(
        "java_timeout_and_interrupt",
        json!({"busy_loop_timeout": busy, "sleep_timeout": sleeping, "state_after": state, "interrupt_endpoint": interrupted})
    );
}

#[tokio::test]
async fn contexts_with_language_java() {
    let url = agent();
    let http = reqwest::Client::new();
    let dir = common::tempdir("java-cwd");
    let created: Value = http
        .post(format!("{url}/contexts"))
        .json(&json!({"language": "java", "cwd": dir}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("context id").to_string();
    assert_eq!(created["cwd"], json!(dir));
    let cwd = run_in(url, &id, "System.getProperty(\"user.dir\")").await;
    assert_eq!(result_text(&cwd), dir.to_str().map(str::to_string));
    let file = run_in(
        url,
        &id,
        "java.nio.file.Files.writeString(java.nio.file.Path.of(\"hello.txt\").toAbsolutePath(), \"hi\");\nnew java.io.File(\"hello.txt\").getAbsoluteFile().exists()",
    )
    .await;
    assert_eq!(result_text(&file).as_deref(), Some("true"), "{file:?}");
    assert!(dir.join("hello.txt").exists());
    let listed: Value = http
        .get(format!("{url}/contexts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let languages: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["language"].as_str())
        .collect();
    assert!(languages.iter().all(|l| *l == "java"), "{languages:?}");
    // `language: "java"` without a context id runs in the default java context; `Java` and
    // ` java ` name the same language.
    let by_language = events(
        url,
        json!({"code": "\"default \" + 1", "language": " Java "}),
    )
    .await;
    assert_eq!(result_text(&by_language).as_deref(), Some("default 1"));
    let restarted = http
        .post(format!("{url}/contexts/{id}/restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(restarted.status(), 200);
    let after_restart = run_in(url, &id, "System.getProperty(\"user.dir\")").await;
    assert_eq!(
        result_text(&after_restart),
        dir.to_str().map(str::to_string)
    );
    let deleted = http
        .delete(format!("{url}/contexts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let created = json!({"id": created["id"], "language": created["language"], "cwd": "[dir]"});
    snap!(
        "java_context",
        json!({"created": created, "default_context_run": by_language})
    );
}

/// The number of JJava's cell threads running cell code (JShell's `REPL.` classes) other than
/// the caller.
const OTHER_CELL_THREADS: &str = "Thread.getAllStackTraces().entrySet().stream()\
    .filter(e -> e.getKey() != Thread.currentThread())\
    .filter(e -> e.getKey().getName().startsWith(\"jjava-exec-\"))\
    .filter(e -> java.util.Arrays.stream(e.getValue()).anyMatch(f -> f.getClassName().startsWith(\"REPL.\")))\
    .count()";

/// Lines of `events`' stdout that start with `prefix`.
fn stdout_lines_starting(events: &[Value], prefix: &str) -> usize {
    events
        .iter()
        .filter(|l| l["type"] == "stdout")
        .filter_map(|l| l["text"].as_str())
        .flat_map(str::lines)
        .filter(|line| line.starts_with(prefix))
        .count()
}

/// JJava's own interrupt only cancels the cell's Future: a loop that prints went on after the
/// reply, its lines went to whichever cell ran next, and a loop that computes burnt a core for
/// ever (or the agent gave up and restarted the kernel, losing its state). The interrupt now
/// stops the cell's thread, and nothing of it reaches the next cell.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_loops_stop_and_print_nothing_into_the_next_cell() {
    let url = agent();
    let ctx = new_context(url).await;
    run_in(url, &ctx, "int kept = 41;").await;

    for round in 0..3 {
        let flood = events(
            url,
            json!({"context_id": ctx, "timeout": 1,
                   "code": "for (long i = 0; i < 100_000_000L; i++) { System.out.println(\"old\" + i); }"}),
        )
        .await;
        let errors: Vec<_> = flood.iter().filter(|l| l["type"] == "error").collect();
        assert_eq!(errors.len(), 1, "round {round}: {flood:?}");
        assert_eq!(errors[0]["name"], "TimeoutError", "round {round}");
        assert!(
            !errors[0]["value"].as_str().unwrap_or("").contains("lost"),
            "round {round}: the kernel was restarted: {}",
            errors[0]
        );
        let next = run_in(url, &ctx, "System.out.println(\"next\" + (kept + 1));").await;
        assert_eq!(
            stdout_lines_starting(&next, "old"),
            0,
            "round {round}: {next:?}"
        );
        assert_eq!(
            stdout_lines_starting(&next, "next42"),
            1,
            "round {round}: {next:?}"
        );
    }

    // A loop that never prints, stopped through the interrupt endpoint.
    let running = tokio::spawn({
        let ctx = ctx.clone();
        async move { run_in(url, &ctx, "long spins = 0; while (true) { spins++; }").await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    Client::new(url).interrupt_context(&ctx).await.unwrap();
    let spun = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the interrupted cell ends")
        .unwrap();
    assert!(spun.iter().any(|l| l["type"] == "error"), "{spun:?}");
    let left = run_in(url, &ctx, OTHER_CELL_THREADS).await;
    assert_eq!(result_text(&left).as_deref(), Some("0"), "{left:?}");
}

/// JJava published a message per line and JeroMQ's iopub dropped what queued beyond 1000 while
/// the agent was behind: of 300,000 lines, 43,000–50,000 arrived, and sometimes no `idle` (the
/// execution then ended only after the agent's 10 s wait). The start-up code batches bursts.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_print_arrives_whole_and_in_order() {
    let url = agent();
    let ctx = new_context(url).await;
    let out = run_in(
        url,
        &ctx,
        "for (int i = 0; i < 300_000; i++) { System.out.println(\"L\" + i); }",
    )
    .await;
    let text: String = out
        .iter()
        .filter(|l| l["type"] == "stdout")
        .filter_map(|l| l["text"].as_str())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 300_000);
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("L{i}")));
}
