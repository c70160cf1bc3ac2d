//! `kernelbox setup`: installs what the kernels need by running `kernels/setup.sh` from the
//! kernelbox source tree (a Python venv with ipykernel and the data stack, Deno from npm, R and a
//! JDK from Debian when root, JJava from PyPI), idempotently, into `$KERNELBOX_HOME`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot find kernels/setup.sh (looked in {0}); pass --source <kernelbox checkout>/kernels"
    )]
    NoSource(String),
    #[error("could not run {script}: {source}")]
    Run {
        script: String,
        source: std::io::Error,
    },
    #[error("setup failed ({0})")]
    Failed(std::process::ExitStatus),
}

/// Where the kernels' sources may be: an explicit folder, `$KERNELBOX_SOURCE`, the checkout this
/// binary was built from, or an installed copy next to the binary (the template image).
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("KERNELBOX_SOURCE") {
        dirs.push(PathBuf::from(d).join("kernels"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.join("../share/kernelbox/kernels"));
        }
    }
    dirs.push(PathBuf::from("/opt/kernelbox/kernels"));
    dirs
}

/// The kernels' source folder (the one holding `setup.sh`).
pub fn source_dir(explicit: Option<&Path>) -> Result<PathBuf, SetupError> {
    let dirs = candidates(explicit);
    dirs.iter()
        .find(|d| d.join("setup.sh").is_file())
        .cloned()
        .ok_or_else(|| {
            SetupError::NoSource(
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// Runs the installer with `args` (e.g. `--no-apt`), streaming its progress.
pub fn run(explicit: Option<&Path>, home: &Path, args: &[String]) -> Result<(), SetupError> {
    let script = source_dir(explicit)?.join("setup.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .env("KERNELBOX_HOME", home)
        .status()
        .map_err(|source| SetupError::Run {
            script: script.display().to_string(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(SetupError::Failed(status))
    }
}
