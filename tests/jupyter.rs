//! The Jupyter layer on its own, against a real ipykernel: launch, handshake, heartbeat, silent
//! cells, interrupt by signal, shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

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
