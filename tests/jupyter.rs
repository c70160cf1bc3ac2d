//! The Jupyter layer on its own, against a real ipykernel: launch, handshake, heartbeat, silent
//! cells, interrupt by signal, shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kernelbox::jupyter::kernelspec::substitute;
use kernelbox::jupyter::{Channel, Kernel, KernelSpec, LaunchOptions};
use kernelbox::sys::private_dir;

async fn python_kernel() -> Kernel {
    let home = kernelbox::config::home();
    let spec = KernelSpec::load(&home.join("kernels"), "python3")
        .expect("python3 kernelspec (run kernels/setup.sh)");
    let runtime_dir = common::tempdir("runtime");
    private_dir(&runtime_dir).unwrap();
    let opts = LaunchOptions {
        cwd: common::tempdir("cwd"),
        env: vec![("KB_LAUNCH_VAR".into(), "from-launch".into())],
        home,
        runtime_dir,
    };
    Kernel::launch(Arc::new(spec), &opts).await.expect("launch")
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_heartbeat_cells_interrupt_shutdown() {
    let kernel = python_kernel().await;
    assert_eq!(kernel.info["status"], "ok");
    assert!(kernel.conn.heartbeat(Duration::from_secs(5)).await);

    kernel
        .run_silent(
            "import os\nassert os.environ['KB_LAUNCH_VAR'] == 'from-launch'",
            Duration::from_secs(30),
        )
        .await
        .expect("launch env reaches the kernel");
    let err = kernel
        .run_silent("1/0", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(err.contains("ZeroDivisionError"), "{err}");

    // A busy cell, interrupted by SIGINT (the spec's interrupt_mode), ends with KeyboardInterrupt
    // in both the iopub error and the reply.
    let mut sub = kernel
        .conn
        .execute("while True: pass", false)
        .await
        .unwrap();
    let mut started = false;
    while !started {
        let m = sub.recv().await.expect("busy");
        started = m.channel == Channel::IoPub && m.msg.msg_type() == "execute_input";
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        kernel.conn.heartbeat(Duration::from_secs(5)).await,
        "hb while busy"
    );
    kernel.interrupt().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = sub.recv().await.expect("reply");
            if m.channel == Channel::Shell {
                return m.msg;
            }
        }
    })
    .await
    .expect("interrupted");
    assert_eq!(reply.content_str("status"), "error");
    assert_eq!(reply.content_str("ename"), "KeyboardInterrupt");

    kernel.shutdown().await;
    assert!(kernel.has_exited());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_program_is_a_clear_error() {
    let home = kernelbox::config::home();
    let dir = common::tempdir("badspec");
    let spec_dir = dir.join("broken");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(
        spec_dir.join("kernel.json"),
        r#"{"argv": ["/nonexistent/kernel", "{connection_file}"], "display_name": "x", "language": "x"}"#,
    )
    .unwrap();
    let spec = KernelSpec::load(&dir, "broken").unwrap();
    let runtime_dir = common::tempdir("runtime");
    private_dir(&runtime_dir).unwrap();
    let opts = LaunchOptions {
        cwd: dir.clone(),
        env: vec![],
        home,
        runtime_dir: runtime_dir.clone(),
    };
    let err = Kernel::launch(Arc::new(spec), &opts)
        .await
        .err()
        .expect("launch fails");
    assert!(err.to_string().contains("/nonexistent/kernel"), "{err}");
    // The connection file (which holds the key) is not left behind.
    assert_eq!(std::fs::read_dir(&runtime_dir).unwrap().count(), 0);
    assert!(KernelSpec::load(&dir, "../etc").is_err());
}

/// A python3 kernel whose iopub port is taken used to live on without listening (ipykernel binds
/// iopub in a thread), and the agent waited a minute before giving up. The launcher now exits, so
/// `Kernel::launch` retries with fresh ports.
#[test]
fn python_kernel_exits_when_a_port_is_taken() {
    let home = kernelbox::config::home();
    let spec = KernelSpec::load(&home.join("kernels"), "python3").expect("python3 kernelspec");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = common::tempdir("taken-port");
    let file = dir.join("kernel.json");
    let info = serde_json::json!({
        "transport": "tcp", "ip": "127.0.0.1", "key": "k", "signature_scheme": "hmac-sha256",
        "shell_port": free(), "iopub_port": busy, "stdin_port": free(),
        "control_port": free(), "hb_port": free(),
    });
    std::fs::write(&file, info.to_string()).unwrap();
    let argv: Vec<String> = spec
        .argv
        .iter()
        .map(|a| substitute(a, &file, &home))
        .collect();
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(
            spec.env
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, &file, &home))),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("the kernel exits when its iopub port is taken");
    assert!(!status.success(), "{status}");
}
