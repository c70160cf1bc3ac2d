//! The interpreter API against real kernels: insta snapshots of whole executions (ids,
//! timestamps and images redacted) and the lifecycle paths around them.

mod common;

use std::time::Duration;

use common::run::{
    events, fold_streams, lines, new_context, run_fresh, run_in, scrub, wait_for_file,
};
use kernelbox::client::Client;
use serde_json::{json, Value};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, fold_streams(json!($value)), {
            "[].timestamp" => "[timestamp]",
            "[].png" => "[png]",
        })
    };
}

#[tokio::test]
async fn python_stdout_stderr_and_result() {
    let url = common::shared_agent();
    let out = run_fresh(
        url,
        "python",
        "import sys\nprint('hi')\nprint('err', file=sys.stderr)\nx = 41\nx + 1",
    )
    .await;
    snap!("python_stdout_stderr_and_result", out);
}

#[tokio::test]
async fn wire_format_is_python_json() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let res = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&json!({"code": "print('\u{e9}\u{1F600}'); 'quoted'", "context_id": ctx}))
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    let mut redacted = String::new();
    for line in text.lines() {
        let line = match line.find("\"timestamp\": \"") {
            Some(i) => format!("{}\"timestamp\": \"[timestamp]\"}}", &line[..i]),
            None => line.to_string(),
        };
        redacted.push_str(&line);
        redacted.push('\n');
    }
    insta::assert_snapshot!("wire_format", redacted);
}

#[tokio::test]
async fn python_display_data_json_and_html() {
    let url = common::shared_agent();
    let out = run_fresh(
        url,
        "python",
        "from IPython.display import display, HTML, Markdown\n\
         display(HTML('<b>one</b>'))\n\
         display(Markdown('*two*'))\n\
         display({'application/x-custom': 'zz', 'text/plain': 'p'}, raw=True)\n\
         {'k': [1, 2], 1: 2}",
    )
    .await;
    snap!("python_display_data", out);
}

#[tokio::test]
async fn python_matplotlib_plot() {
    let url = common::shared_agent();
    let out = run_fresh(
        url,
        "python",
        "import matplotlib.pyplot as plt\n\
         plt.plot([1, 2, 3], [1, 4, 9], label='squares')\n\
         plt.title('T')\nplt.xlabel('x [m]')\nplt.show()",
    )
    .await;
    let result = out
        .iter()
        .find(|l| l["type"] == "result")
        .expect("a result");
    assert!(result["png"]
        .as_str()
        .is_some_and(|p| p.starts_with("iVBOR")));
    assert_eq!(result["chart"]["type"], "line");
    // Chart ticks depend on matplotlib's layout; the snapshot keeps the shape that matters.
    let summary = json!({
        "types": out.iter().map(|l| l["type"].clone()).collect::<Vec<_>>(),
        "text": result["text"],
        "chart_type": result["chart"]["type"],
        "chart_title": result["chart"]["title"],
        "x_label": result["chart"]["x_label"],
        "x_unit": result["chart"]["x_unit"],
        "elements": result["chart"]["elements"],
        "is_main_result": result["is_main_result"],
        "extra": result["extra"],
    });
    snap!("python_matplotlib", summary);
}

#[tokio::test]
async fn python_dataframe() {
    let url = common::shared_agent();
    let out = run_fresh(
        url,
        "python",
        "import pandas as pd\n\
         df = pd.DataFrame({'a': [1, 2], 't': pd.to_datetime(['2024-01-01', '2024-01-02'])})\n\
         df",
    )
    .await;
    let result = out.iter().find(|l| l["type"] == "result").expect("result");
    assert!(result["html"]
        .as_str()
        .is_some_and(|h| h.contains("<table")));
    let mut result = result.clone();
    result["html"] = json!("[html table]");
    snap!("python_dataframe", result);
}

#[tokio::test]
async fn python_errors() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let raised = run_in(
        url,
        &ctx,
        "def f():\n    raise ValueError('bad value')\nf()",
    )
    .await;
    let syntax = run_in(url, &ctx, "x = (1,").await;
    snap!("python_exception", raised);
    snap!("python_syntax_error", syntax);
}

#[tokio::test]
async fn javascript_and_typescript() {
    let url = common::shared_agent();
    let run = |code: &str, language: &str| events(url, json!({"code": code, "language": language}));
    let js = run(
        "const a = [1, 2, 3];\nconsole.log('from js');\na.map((x) => x * 2)",
        "js",
    )
    .await;
    let ts = run(
        "interface P { n: number }\nconst p: P = { n: 21 };\np.n * 2",
        "typescript",
    )
    .await;
    let tla = run(
        "await new Promise((r) => setTimeout(() => r('Hello World!'), 10))",
        "javascript",
    )
    .await;
    let err = run("throw new Error('boom')", "javascript").await;
    let import = run(
        "import { basename } from 'node:path';\nbasename('/a/b.txt')",
        "javascript",
    )
    .await;
    let ts_err = run("const o: { f?: () => void } = {};\no.f!()", "ts").await;
    let strip = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter()
            .filter(|l| l["type"] != "number_of_executions")
            .collect()
    };
    snap!("javascript_result", strip(js));
    snap!("typescript_result", strip(ts));
    snap!("javascript_top_level_await", strip(tla));
    let err = strip(err);
    let error = err.iter().find(|l| l["type"] == "error").expect("an error");
    assert_eq!(error["name"], "Error");
    assert_eq!(error["value"], "boom");
    snap!("javascript_error", err);
    snap!("javascript_import_cell", strip(import));
    snap!("typescript_error", strip(ts_err));
}

#[tokio::test]
async fn javascript_require_from_cwd() {
    let url = common::shared_agent();
    let dir = common::tempdir("jsreq");
    let pkg = dir.join("node_modules").join("kb-greet");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name": "kb-greet", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        pkg.join("index.js"),
        "module.exports = { greet: (n) => `hello ${n}` };\n",
    )
    .unwrap();
    let ctx = Client::new(url)
        .create_context(Some("javascript"), Some(dir.to_str().unwrap()))
        .await
        .unwrap();
    let out = run_in(
        url,
        &ctx.id,
        "const { greet } = require('kb-greet');\nconsole.log(greet('kernelbox'));\nrequire('path').basename(process.cwd())",
    )
    .await;
    let stdout: Vec<_> = out.iter().filter(|l| l["type"] == "stdout").collect();
    assert_eq!(stdout[0]["text"], "hello kernelbox\n", "{out:?}");
    let result = out.iter().find(|l| l["type"] == "result").unwrap();
    assert_eq!(
        result["text"],
        dir.file_name().unwrap().to_str().unwrap(),
        "{out:?}"
    );
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    snap!(
        "javascript_require_from_cwd",
        scrub(json!(out), &[(&name, "[cwd name]")])
    );
}

#[tokio::test]
async fn bash_cells() {
    let url = common::shared_agent();
    let dir = common::tempdir("bash");
    let ctx = Client::new(url)
        .create_context(Some("bash"), Some(dir.to_str().unwrap()))
        .await
        .unwrap();
    let out = events(
        url,
        json!({"code": "echo hi\necho $FOO\nls /nonexistent-kernelbox", "context_id": ctx.id, "env_vars": {"FOO": "barz"}}),
    )
    .await;
    snap!("bash_cell", out);
}

#[tokio::test]
async fn r_cells() {
    let url = common::shared_agent();
    let out = events(
        url,
        json!({"code": "x <- c(1, 2, 3)\nprint(sum(x))\nSys.getenv('RV')", "language": "r", "env_vars": {"RV": "r-value"}}),
    )
    .await;
    let out: Vec<Value> = out
        .into_iter()
        .filter(|l| l["type"] != "number_of_executions")
        .collect();
    snap!("r_cell", out);
}

#[tokio::test]
async fn env_vars_in_every_language_round_trip_and_never_leak() {
    let url = common::shared_agent();
    let tricky = "it's \"quoted\" \\ back $HOME `x` \u{e9}\nline2";
    let mut seen = serde_json::Map::new();
    for (language, read) in [
        ("python", "import os; os.environ.get('KB_V'), os.environ.get('KERNELBOX_SANDBOX_VAR')"),
        ("javascript", "[process.env.KB_V, process.env.KERNELBOX_SANDBOX_VAR]"),
        ("typescript", "const v: string | undefined = process.env.KB_V; [v, process.env.KERNELBOX_SANDBOX_VAR]"),
        ("r", "c(Sys.getenv('KB_V', unset = NA), Sys.getenv('KERNELBOX_SANDBOX_VAR'))"),
        ("bash", "printf '%s|%s' \"${KB_V-unset}\" \"$KERNELBOX_SANDBOX_VAR\""),
    ] {
        let ctx = new_context(url, language).await;
        let with = events(
            url,
            json!({"code": read, "context_id": ctx, "env_vars": {"KB_V": tricky}}),
        )
        .await;
        let without = events(url, json!({"code": read, "context_id": ctx})).await;
        let shown = |lines: &[Value]| -> String {
            lines
                .iter()
                .filter(|l| l["type"] == "result" || l["type"] == "stdout")
                .map(|l| l["text"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let (with, without) = (shown(&with), shown(&without));
        seen.insert(
            language.to_string(),
            json!({"with": with.clone(), "without": without.clone()}),
        );
        match language {
            "bash" => {
                // bash_kernel ends output with a newline of its own.
                assert_eq!(with.trim_end(), format!("{tricky}|sandbox-value"));
                assert_eq!(without.trim_end(), "unset|sandbox-value");
            }
            "r" => {
                // R prints escapes in its own way; check the value reached the kernel intact.
                let check = events(
                    url,
                    json!({"code": format!("identical(Sys.getenv('KB_V'), {})", serde_json::to_string(tricky).unwrap()), "context_id": ctx, "env_vars": {"KB_V": tricky}}),
                )
                .await;
                assert!(shown(&check).contains("TRUE"), "{check:?}");
                assert!(without.contains("NA"), "R leaked: {without}");
                assert!(without.contains("sandbox-value"), "{without}");
            }
            _ => {
                assert!(with.contains("sandbox-value"), "{language}: {with}");
                assert!(
                    with.contains(r#"it\'s"#) || with.contains("it's"),
                    "{language}: {with}"
                );
                assert!(
                    !without.contains("quoted"),
                    "{language} leaked: {without}"
                );
                assert!(without.contains("sandbox-value"), "{language}: {without}");
            }
        }
    }
    // Python: exact round trip of the value.
    let ctx = new_context(url, "python").await;
    let exact = events(
        url,
        json!({"code": format!("import os; os.environ['KB_V'] == {}", serde_json::to_string(tricky).unwrap()), "context_id": ctx, "env_vars": {"KB_V": tricky}}),
    )
    .await;
    assert_eq!(
        exact.iter().find(|l| l["type"] == "result").unwrap()["text"],
        "True"
    );
    snap!("env_vars_every_language", seen);
}

#[tokio::test]
async fn per_request_env_restores_previous_kernel_value() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    run_in(url, &ctx, "import os; os.environ['KB_MINE'] = 'mine'").await;
    let during = events(
        url,
        json!({"code": "os.environ['KB_MINE']", "context_id": ctx, "env_vars": {"KB_MINE": "request"}}),
    )
    .await;
    let after = run_in(url, &ctx, "os.environ['KB_MINE']").await;
    assert_eq!(during.last().unwrap()["type"], "end_of_execution");
    assert_eq!(during[1]["text"], "request");
    assert_eq!(after[1]["text"], "mine");
}

#[tokio::test]
async fn cwd_and_context_lifecycle() {
    let url = common::shared_agent();
    let client = Client::new(url);
    let dir = common::tempdir("cwd");
    let ctx = client
        .create_context(Some("python"), Some(dir.to_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(ctx.language, "python");
    assert_eq!(ctx.cwd, dir.to_str().unwrap());
    let listed = client.list_contexts().await.unwrap();
    assert!(listed.contains(&ctx));

    let pwd = run_in(url, &ctx.id, "import os; x = 1; os.getcwd()").await;
    assert_eq!(pwd[1]["text"], dir.to_str().unwrap());

    client.restart_context(&ctx.id).await.unwrap();
    let after = run_in(url, &ctx.id, "import os; (os.getcwd(), 'x' in globals())").await;
    assert_eq!(after[0]["execution_count"], 1, "count restarts at 1");
    assert_eq!(
        after[1]["text"],
        format!("('{}', False)", dir.to_str().unwrap())
    );

    client.remove_context(&ctx.id).await.unwrap();
    assert!(!client
        .list_contexts()
        .await
        .unwrap()
        .iter()
        .any(|c| c.id == ctx.id));
    let gone = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&json!({"code": "1", "context_id": ctx.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let gone_body = gone.text().await.unwrap();
    assert_eq!(gone_body, format!("Context {} not found", ctx.id));
    let d = dir.to_str().unwrap();
    snap!(
        "cwd_and_context_lifecycle",
        scrub(
            json!({"created": ctx, "pwd": pwd, "after_restart": after, "after_delete": gone_body}),
            &[(d, "[cwd]"), (&ctx.id, "[context id]")]
        )
    );
}

#[tokio::test]
async fn interrupt_endpoint_stops_a_busy_cell_and_keeps_state() {
    let url = common::shared_agent();
    let dir = common::tempdir("interrupt");
    let mut seen = serde_json::Map::new();
    for (language, setup, busy, check) in [
        (
            "python",
            "kept = 7",
            "open({flag:?}, 'w').close()\nwhile True: pass",
            "kept",
        ),
        (
            "javascript",
            "globalThis.kept = 7",
            "require('fs').writeFileSync({flag:?}, '');\nwhile (true) {}",
            "kept",
        ),
    ] {
        let ctx = new_context(url, language).await;
        run_in(url, &ctx, setup).await;
        let flag = dir.join(language);
        let code = busy.replace("{flag:?}", &format!("{:?}", flag.to_str().unwrap()));
        let body = json!({"code": code, "context_id": ctx});
        let running = tokio::spawn(async move { events(url, body).await });
        wait_for_file(&flag).await;
        Client::new(url).interrupt_context(&ctx).await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("interrupted cell ends")
            .unwrap();
        assert_eq!(
            out.last().unwrap()["type"],
            "end_of_execution",
            "{language}"
        );
        let state = run_in(url, &ctx, check).await;
        let result = state.iter().find(|l| l["type"] == "result");
        assert_eq!(
            result.map(|r| r["text"].clone()),
            Some(json!("7")),
            "{language}: {state:?}"
        );
        let errors: Vec<Value> = out
            .into_iter()
            .filter(|l| l["type"] == "error")
            .map(|mut e| {
                e["traceback"] = json!("[traceback]");
                e
            })
            .collect();
        seen.insert(language.to_string(), json!(errors));
    }
    snap!("interrupt_errors", seen);
}

#[tokio::test]
async fn two_contexts_run_in_parallel() {
    let url = common::shared_agent();
    let a = new_context(url, "python").await;
    let b = new_context(url, "python").await;
    // Each cell waits for the other's file: serialised contexts would deadlock into the timeout.
    let dir = common::tempdir("parallel");
    let code = |me: &str, other: &str| {
        format!(
            "import os, time\nopen(os.path.join({d:?}, {me:?}), 'w').close()\n\
             t = time.time()\nwhile not os.path.exists(os.path.join({d:?}, {other:?})) and time.time() - t < 20: time.sleep(0.05)\n\
             os.path.exists(os.path.join({d:?}, {other:?}))",
            d = dir.to_str().unwrap()
        )
    };
    let (code_a, code_b) = (code("a", "b"), code("b", "a"));
    let (ra, rb) = tokio::join!(run_in(url, &a, &code_a), run_in(url, &b, &code_b));
    assert_eq!(ra[1]["text"], "True");
    assert_eq!(rb[1]["text"], "True");
    snap!("two_contexts_in_parallel", json!({"a": ra, "b": rb}));
}

#[tokio::test]
async fn executions_on_one_context_are_serialised() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let flag = common::tempdir("serial").join("started");
    let c1 = ctx.clone();
    let code = format!(
        "import time\norder = ['first']\nopen({:?}, 'w').close()\ntime.sleep(1)\norder.append('first done')",
        flag.to_str().unwrap()
    );
    let first = tokio::spawn(async move { run_in(url, &c1, &code).await });
    wait_for_file(&flag).await;
    let second = run_in(url, &ctx, "order.append('second'); order").await;
    first.await.unwrap();
    assert_eq!(second[1]["text"], "['first', 'first done', 'second']");
}

#[tokio::test]
async fn kernel_death_reports_context_restarting_and_recovers() {
    let url = common::shared_agent();
    let dir = common::tempdir("death");
    let ctx = Client::new(url)
        .create_context(Some("python"), Some(dir.to_str().unwrap()))
        .await
        .unwrap();
    run_in(url, &ctx.id, "x = 1").await;
    let died = run_in(url, &ctx.id, "import os; os._exit(1)").await;
    // Whether ipykernel publishes `execute_input` before it dies is a race inside the kernel.
    let died: Vec<Value> = died
        .into_iter()
        .filter(|l| l["type"] != "number_of_executions")
        .collect();
    snap!("kernel_death", died);
    let after = run_in(
        url,
        &ctx.id,
        "import os; ('x' in globals(), os.getcwd(), os.environ.get('KERNELBOX_SANDBOX_VAR'))",
    )
    .await;
    assert_eq!(
        after[1]["text"],
        format!("(False, '{}', 'sandbox-value')", dir.to_str().unwrap()),
        "{after:?}"
    );
}

#[tokio::test]
async fn client_disconnect_interrupts_and_the_next_run_works() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    run_in(url, &ctx, "kept = 'yes'").await;
    {
        let res = reqwest::Client::new()
            .post(format!("{url}/execute"))
            .json(&json!({"code": "import time\nprint('start', flush=True)\ntime.sleep(60)", "context_id": ctx, "env_vars": {"KB_LEAK": "1"}}))
            .send()
            .await
            .unwrap();
        let mut stream = res;
        // Read the first chunk, then drop the connection mid-execution.
        let _ = stream.chunk().await;
        drop(stream);
    }
    let start = std::time::Instant::now();
    let next = run_in(url, &ctx, "import os; (kept, os.environ.get('KB_LEAK'))").await;
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the follow-up waited for the abandoned cell"
    );
    let result = next.iter().find(|l| l["type"] == "result").expect("result");
    assert_eq!(result["text"], "('yes', None)", "{next:?}");
    snap!("after_client_disconnect", next);
}

#[tokio::test]
async fn timeout_interrupts_and_reports_one_error() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let out = events(
        url,
        json!({"code": "import time\nprint('before', flush=True)\ntime.sleep(30)", "context_id": ctx, "timeout": 3}),
    )
    .await;
    snap!("timeout", out);
    let next = run_in(url, &ctx, "'alive'").await;
    assert_eq!(next[1]["text"], "alive");
}

#[tokio::test]
async fn restart_and_delete_end_running_executions() {
    let url = common::shared_agent();
    let client = Client::new(url);
    for restart in [true, false] {
        let ctx = new_context(url, "python").await;
        let c = ctx.clone();
        let running = tokio::spawn(async move {
            run_in(
                url,
                &c,
                "import time\nprint('go', flush=True)\ntime.sleep(60)",
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if restart {
            client.restart_context(&ctx).await.unwrap();
        } else {
            client.remove_context(&ctx).await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .unwrap()
            .unwrap();
        let errors: Vec<_> = out.iter().filter(|l| l["type"] == "error").collect();
        assert_eq!(errors.len(), 1, "{out:?}");
        assert_eq!(errors[0]["name"], "UnexpectedEndOfExecution");
    }
}

#[tokio::test]
async fn deleting_the_default_context_never_breaks_its_language() {
    let url = common::shared_agent();
    let client = Client::new(url);
    // Use R's default so other tests' python/js defaults are untouched.
    let first = events(url, json!({"code": "1", "language": "r"})).await;
    assert!(first.iter().any(|l| l["type"] == "result"));
    let before = client.list_contexts().await.unwrap();
    for c in before.iter().filter(|c| c.language == "r") {
        client.remove_context(&c.id).await.unwrap();
    }
    let again = events(url, json!({"code": "2", "language": "r"})).await;
    assert!(again.iter().any(|l| l["type"] == "result"), "{again:?}");
}

#[tokio::test]
async fn large_stdout_streams_whole() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let out = run_in(url, &ctx, "print('x' * 30_000_000)").await;
    let total: usize = out
        .iter()
        .filter(|l| l["type"] == "stdout")
        .map(|l| l["text"].as_str().unwrap().len())
        .sum();
    assert_eq!(total, 30_000_001);
    // ipykernel may flush the print in one message or several: consecutive stdout events are
    // folded into one entry with their total length.
    let mut summary: Vec<Value> = Vec::new();
    for l in &out {
        match (l["text"].as_str(), summary.last_mut()) {
            (Some(t), Some(last)) if l["type"] == "stdout" && last["type"] == "stdout" => {
                last["text_len"] = json!(last["text_len"].as_u64().unwrap() + t.len() as u64);
            }
            (Some(t), _) if l["type"] == "stdout" => {
                summary.push(json!({"type": "stdout", "text_len": t.len()}))
            }
            _ => summary.push(l.clone()),
        }
    }
    snap!("large_stdout_30mb", summary);
}

#[tokio::test]
async fn request_errors() {
    let url = common::shared_agent();
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: Value| {
        let http = http.clone();
        async move {
            let res = http
                .post(format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            json!({"status": status, "body": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))})
        }
    };
    let cases = json!({
        "both": post("/execute", json!({"code": "1", "language": "python", "context_id": "x"})).await,
        "unknown_context": post("/execute", json!({"code": "1", "context_id": "nope"})).await,
        "code_not_string": post("/execute", json!({"code": 123})).await,
        "code_missing": post("/execute", json!({})).await,
        "env_not_string": post("/execute", json!({"code": "1", "env_vars": {"A": 1}})).await,
        "env_bad_name": post("/execute", json!({"code": "1", "env_vars": {"A-B": "x"}})).await,
        "bad_cwd": post("/contexts", json!({"cwd": "/does/not/exist"})).await,
        "unknown_language": post("/contexts", json!({"language": "cobol"})).await,
        "restart_unknown": post("/contexts/nope/restart", json!({})).await,
    });
    insta::assert_json_snapshot!("request_errors", cases);
    let missing = http.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
    let wrong_method = http.get(format!("{url}/execute")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    // A 3 MB cell is fine (axum alone would refuse anything over 2 MB).
    let big = format!("len({:?})", "y".repeat(3 << 20));
    let out = events(url, json!({"code": big})).await;
    assert!(
        out.iter().any(|l| l["text"].as_str() == Some("3145728")),
        "{:?}",
        &out[..1]
    );
    let health = http
        .get(format!("{url}/health?source=ci"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "\"OK\"");
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{url}/execute"))
        .header("origin", "http://example.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,e2b-sandbox-id",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type,e2b-sandbox-id"
    );
}

/// Large outputs on several contexts at once, in the kernels that send one message per line:
/// every line arrives, in order, and every execution ends. Deno's output can still be draining
/// well after `idle` (a quiet period cut it short), and a PUB socket at its default high-water
/// mark drops bash_kernel's lines, and sometimes its `idle`, for an agent that falls behind.
#[tokio::test]
async fn concurrent_large_outputs_arrive_whole() {
    let url = common::shared_agent();
    let lines = 40_000;
    let mut runs = Vec::new();
    for (language, code) in [
        ("bash", format!("seq 1 {lines}")),
        (
            "javascript",
            format!("for (let i = 1; i <= {lines}; i++) console.log(i)"),
        ),
    ] {
        for _ in 0..3 {
            let ctx = new_context(url, language).await;
            let code = code.clone();
            runs.push(tokio::spawn(async move {
                let out = tokio::time::timeout(Duration::from_secs(120), run_in(url, &ctx, &code))
                    .await
                    .expect("the execution ends");
                (language, out)
            }));
        }
    }
    let expected: Vec<String> = (1..=lines).map(|i| i.to_string()).collect();
    for run in runs {
        let (language, out) = run.await.expect("join");
        let stdout: String = out
            .iter()
            .filter(|l| l["type"] == "stdout")
            .filter_map(|l| l["text"].as_str())
            .collect();
        let got: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(got.len(), expected.len(), "{language}: lines lost");
        assert!(got == expected, "{language}: lines out of order");
    }
}

/// Deno publishes `idle` before its output queue drains; the prelude's end-of-output marker (and
/// for cells that throw, the kernelspec's output grace) keeps every line and result with its own
/// execution.
#[tokio::test]
async fn javascript_output_is_never_lost() {
    let url = common::shared_agent();
    let ctx = new_context(url, "javascript").await;
    for n in 0..40 {
        let code = if n % 4 == 3 {
            format!("console.log('p-{n}'); throw new Error('e-{n}')")
        } else {
            format!("console.log('p-{n}');\nawait Promise.resolve({n} * 2)")
        };
        let out = run_in(url, &ctx, &code).await;
        let stdout: String = out
            .iter()
            .filter(|l| l["type"] == "stdout")
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stdout, format!("p-{n}\n"), "cell {n}: {out:?}");
        if n % 4 == 3 {
            let err = out.iter().find(|l| l["type"] == "error");
            assert_eq!(
                err.map(|e| e["value"].clone()),
                Some(json!(format!("e-{n}"))),
                "cell {n}: {out:?}"
            );
        } else {
            let result = out.iter().find(|l| l["type"] == "result");
            assert_eq!(
                result.map(|r| r["text"].clone()),
                Some(json!((n * 2).to_string())),
                "cell {n}: {out:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_request_abandoned_while_queued_never_runs() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let dir = common::tempdir("queued");
    let (started, marker) = (dir.join("started"), dir.join("ran"));
    let busy = format!(
        "import time\nopen({:?}, 'w').close()\ntime.sleep(3)",
        started.to_str().unwrap()
    );
    let c1 = ctx.clone();
    let first = tokio::spawn(async move { run_in(url, &c1, &busy).await });
    wait_for_file(&started).await;
    // Queue a second request behind it, then give up on it while it waits.
    let queued = reqwest::Client::new()
        .post(format!("{url}/execute"))
        .json(&json!({"code": format!("open({:?}, 'w').close()", marker.to_str().unwrap()), "context_id": ctx}))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    if let Ok(res) = queued {
        assert_eq!(res.status(), 200, "headers come before the context is free");
        assert!(res.text().await.is_err(), "the body cannot finish in time");
    }
    first.await.unwrap();
    let after = run_in(url, &ctx, "'next'").await;
    assert_eq!(after[1]["text"], "next");
    assert!(!marker.exists(), "an abandoned queued request ran");
}

/// With its own agent (short keepalive interval): keepalives during silence, also while a request
/// waits for its context, and deleting the default Python context never breaks requests that name
/// no context.
#[tokio::test]
async fn keepalives_and_a_deleted_python_default() {
    let agent = common::Agent::start(&["--keepalive-secs", "0.3", "--default-languages", "python"]);
    let url = agent.url.clone();
    let dir = common::tempdir("keepalive");
    let flag = dir.join("started");
    let first = {
        let url = url.clone();
        let code = format!(
            "import time\nopen({:?}, 'w').close()\ntime.sleep(1.5)\nprint('done')",
            flag.to_str().unwrap()
        );
        tokio::spawn(async move { lines(&url, json!({"code": code})).await })
    };
    wait_for_file(&flag).await;
    let queued = lines(&url, json!({"code": "'second'"})).await;
    let first = first.await.unwrap();
    let count = |v: &[Value]| v.iter().filter(|l| l["type"] == "keepalive").count();
    assert!(
        count(&first) >= 2,
        "keepalives during a silent cell: {first:?}"
    );
    assert!(
        count(&queued) >= 1,
        "keepalives while waiting for the context: {queued:?}"
    );
    assert_eq!(
        queued.iter().find(|l| l["type"] == "result").unwrap()["text"],
        "second"
    );

    let client = Client::new(url.as_str());
    let python: Vec<_> = client
        .list_contexts()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.language == "python")
        .collect();
    assert_eq!(python.len(), 1);
    client.remove_context(&python[0].id).await.unwrap();
    let again = events(&url, json!({"code": "'back'"})).await;
    assert_eq!(again[1]["text"], "back", "{again:?}");
    let by_alias = events(&url, json!({"code": "'alias'", "context_id": "default"})).await;
    assert_eq!(by_alias[1]["text"], "alias", "{by_alias:?}");
    let now: Vec<_> = client
        .list_contexts()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.language == "python")
        .collect();
    assert_eq!(
        now.len(),
        1,
        "one new default, shared by both routes: {now:?}"
    );
    assert_ne!(now[0].id, python[0].id);
}

/// The IPython profile: PIL's save() also displays, long lists are never truncated, tracebacks
/// carry no colour codes.
#[tokio::test]
async fn python_profile_behaviour() {
    let url = common::shared_agent();
    let ctx = new_context(url, "python").await;
    let path = common::tempdir("pil").join("dot.png");
    let saved = run_in(
        url,
        &ctx,
        &format!(
            "from PIL import Image\nImage.new('RGB', (4, 4), 'red').save({:?})",
            path.to_str().unwrap()
        ),
    )
    .await;
    assert!(path.exists());
    let shown = saved
        .iter()
        .find(|l| l["type"] == "result")
        .expect("a display");
    assert!(shown["png"]
        .as_str()
        .is_some_and(|p| p.starts_with("iVBOR")));
    assert_eq!(shown["is_main_result"], false);

    let long = run_in(url, &ctx, "list(range(5000))").await;
    let text = long[1]["text"].as_str().unwrap();
    assert!(
        text.ends_with(" 4999]") && !text.contains("..."),
        "truncated"
    );

    let err = run_in(url, &ctx, "1/0").await;
    let tb = err.iter().find(|l| l["type"] == "error").unwrap()["traceback"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!tb.contains('\u{1b}'), "ANSI codes in {tb:?}");
}

/// The Rust client folds the stream like the SDKs and calls back for each event.
#[tokio::test]
async fn rust_client_callbacks() {
    use kernelbox::client::{Callbacks, RunOptions};
    let url = common::shared_agent();
    let client = Client::new(url);
    let ctx = new_context(url, "python").await;
    let (mut out, mut results, mut errors) = (Vec::new(), 0, Vec::new());
    let mut seen_types = Vec::new();
    let execution = {
        let mut callbacks = Callbacks {
            on_stdout: Some(Box::new(|t: &str| out.push(t.to_string()))),
            on_result: Some(Box::new(|_| results += 1)),
            on_error: Some(Box::new(|e: &kernelbox::ExecutionError| {
                errors.push(e.name.clone())
            })),
            ..Default::default()
        };
        client
            .run_code_with(
                "print('a')\ndisplay('b')\n'main'\n",
                &RunOptions {
                    context_id: Some(ctx.clone()),
                    env_vars: vec![("KB_CB".into(), "1".into())],
                    ..Default::default()
                },
                &mut callbacks,
                |e| {
                    seen_types.push(
                        format!("{e:?}")
                            .split([' ', '{', '('])
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    )
                },
            )
            .await
            .unwrap()
    };
    assert_eq!(out, vec!["a\n"]);
    assert_eq!(results, 2);
    assert!(errors.is_empty());
    assert_eq!(execution.text(), Some("main"));
    assert_eq!(execution.results.len(), 2);
    assert_eq!(execution.execution_count, Some(1));
    assert_eq!(
        seen_types.last().map(String::as_str),
        Some("EndOfExecution")
    );
    let failed = client
        .run_code(
            "raise KeyError('k')",
            &RunOptions {
                context_id: Some(ctx),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.error.unwrap().name, "KeyError");
    let missing = client
        .run_code(
            "1",
            &RunOptions {
                context_id: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("Context nope not found"),
        "{missing}"
    );
}

/// `E2b-Sandbox-Port` routes a request to the service it names: the interpreter for 49999, the
/// sandbox API for 49983, and E2B's "port is not open" answer for a port nothing serves.
#[tokio::test]
async fn sandbox_port_header_routing() {
    let url = common::shared_agent();
    let http = reqwest::Client::new();
    let health = |port: &'static str| {
        http.get(format!("{url}/health"))
            .header("E2b-Sandbox-Port", port)
            .header("E2b-Sandbox-Id", "debug_sandbox_id")
            .send()
    };
    assert_eq!(health("49999").await.unwrap().status(), 200);
    assert_eq!(health("49983").await.unwrap().status(), 204);
    let closed = health("8080").await.unwrap();
    assert_eq!(closed.status(), 502);
    let body: Value = closed.json().await.unwrap();
    assert_eq!(body["port"], 8080);
    assert_eq!(
        body["message"],
        "The sandbox is running but port is not open"
    );
}
