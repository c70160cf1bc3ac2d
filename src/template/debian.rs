//! Templates built as Debian roots by `mmdebstrap` from Debian's archive:
//!
//! - `base`: E2B's user `user` (uid 1000, home `/home/user`, password-less sudo) and the tools
//!   E2B's base image has that a sandbox user expects (Python 3 with pip and venv, git, curl,
//!   CA certificates).
//! - `code-interpreter-v1` (the code-interpreter SDK's default): the same, plus the kernels
//!   installed *inside* the root by the project's own `kernels/setup.sh` (run in the new root
//!   with `chroot`, `KERNELBOX_HOME=/opt/kernelbox`): ipykernel with the data stack, Deno,
//!   bash_kernel, IRkernel, JJava on OpenJDK 17. The host's pip and npm caches are bound in
//!   while it runs (never copied into the layer), so a machine that already set up its own
//!   kernels downloads them once. The kernels' Python environment belongs to `user`, so that
//!   `pip install` in a command (run as `user`) installs where the kernel (run as root) imports
//!   from, as the E2B seed flow expects.
//!
//! Why mmdebstrap: it is in Debian, needs no Docker engine or registry, and resolves and
//! downloads with apt (in parallel), so `base` takes about a minute. It runs as host root in
//! its own chroot, with the host's network and CA bundle; the tree is then shifted to the
//! sandboxes' id range ([`crate::sandbox::rootfs::shift_ownership`]).
//!
//! The agent is not copied into a layer: every sandbox gets the running `kernelbox` binary
//! bound read-only, so the agent inside always speaks the same protocol as the control plane
//! that started it, and a new build of kernelbox needs no template rebuild.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::store::{Manifest, Template, TemplateStore};
use super::TemplateError;
use crate::sandbox::IdRange;

/// The template id the E2B SDKs' plain `Sandbox.create()` asks for.
pub const BASE_TEMPLATE: &str = "base";
/// The code-interpreter SDK's default template id.
pub const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";
/// The Debian release (the host's: Debian 12).
const SUITE: &str = "bookworm";
/// Where packages come from unless `KERNELBOX_DEBIAN_MIRROR` names another mirror.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages on top of minbase, in every template.
const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "git",
    "procps",
    "sudo",
    "python3",
    "python-is-python3",
    "python3-pip",
    "python3-venv",
    "iproute2",
    "less",
    "xz-utils",
    "unzip",
];
/// What the kernels' installer needs from Debian (its own apt step's list, plus Node for the
/// Deno package and users' `npm install`).
const KERNEL_PACKAGES: &[&str] = &[
    "r-cran-irkernel",
    "openjdk-17-jdk-headless",
    "fonts-noto-cjk",
    "nodejs",
    "npm",
];
/// E2B's sandbox user.
const USER: &str = "user";
/// Where the kernels live inside `code-interpreter-v1` (its agent's `KERNELBOX_HOME`).
const KERNELS_HOME: &str = "/opt/kernelbox";
/// Run in every finished root (`$1`) by mmdebstrap: the user, sudo for it, and a pip that
/// installs into the system Python as E2B's image allows (Debian marks it externally managed).
const USER_HOOK: &str = r#"set -e
chroot "$1" useradd --create-home --shell /bin/bash --uid 1000 --user-group user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$1/etc/sudoers.d/user"
chmod 0440 "$1/etc/sudoers.d/user"
rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED
printf 'bookworm\n' > "$1/etc/kernelbox-template"
"#;

/// How one template is built.
struct Recipe {
    id: &'static str,
    packages: Vec<&'static str>,
    /// Customize hooks, run in order after the packages are in (`$1` = the root).
    hooks: Vec<String>,
    /// Folders the build reads; their content is part of the recipe's hash.
    inputs: Vec<PathBuf>,
    kernels: Vec<String>,
    env: BTreeMap<String, String>,
}

impl Recipe {
    fn base() -> Recipe {
        Recipe {
            id: BASE_TEMPLATE,
            packages: BASE_PACKAGES.to_vec(),
            hooks: vec![USER_HOOK.into()],
            inputs: Vec::new(),
            kernels: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    /// `kernels` is the project's `kernels/` folder, `cache` the host's `$KERNELBOX_HOME/cache`
    /// (pip and npm downloads), `ca_bundle` the host's CA bundle for TLS during the build.
    fn code_interpreter(kernels: &Path, cache: &Path, ca_bundle: Option<&Path>) -> Recipe {
        let mut recipe = Recipe::base();
        recipe.id = CODE_INTERPRETER_TEMPLATE;
        recipe.packages.extend_from_slice(KERNEL_PACKAGES);
        // A private mount namespace: the binds vanish with the shell, even if setup fails.
        // Paths reach the inner script as arguments ($1 root, $2 cache, $3 kernels, $4 CA).
        recipe.hooks.push(format!(
            r#"set -e
mkdir -p "$1{KERNELS_HOME}/cache" "$1/tmp/kernelbox-src"
unshare --mount --propagation private sh -ec '
mount --bind "$2" "$1{KERNELS_HOME}/cache"
mount --bind "$3" "$1/tmp/kernelbox-src"
if [ -n "$4" ]; then mount --bind "$4" "$1/etc/ssl/certs/ca-certificates.crt"; fi
chroot "$1" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 KERNELBOX_HOME={KERNELS_HOME} SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
  bash /tmp/kernelbox-src/setup.sh --no-apt
' sh "$1" {cache} {kernels} {ca}
rmdir "$1/tmp/kernelbox-src"
chroot "$1" chown -R user:user {KERNELS_HOME}/python
"#,
            cache = quote(cache),
            kernels = quote(kernels),
            ca = ca_bundle.map_or("''".to_string(), quote),
        ));
        recipe.inputs.push(kernels.to_path_buf());
        recipe.kernels = vec!["python".into(), "javascript".into()];
        recipe
            .env
            .insert("KERNELBOX_HOME".into(), KERNELS_HOME.into());
        recipe
    }

    /// The layer's id: the template, the suite and a hash of everything the build depends on.
    fn layer_id(&self, mirror: &str, ids: IdRange) -> Result<String, TemplateError> {
        let mut hash = Sha256::new();
        hash.update(format!(
            "{SUITE} {mirror}\n{}\n{}\n{}\n",
            self.packages.join(","),
            self.hooks.join("\n--\n"),
            ids.first
        ));
        for input in &self.inputs {
            hash_tree(&mut hash, input)?;
        }
        let digest = hash.finalize();
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{}-{SUITE}-{short}", self.id))
    }
}

/// The `base` template, built first if it is missing or its recipe changed.
pub fn ensure_base(store: &TemplateStore, ids: IdRange) -> Result<Template, TemplateError> {
    ensure(store, &Recipe::base(), ids)
}

/// The `code-interpreter-v1` template, built first if it is missing or its recipe (including
/// the kernels' sources in `kernels`) changed. Takes several minutes the first time.
pub fn ensure_code_interpreter(
    store: &TemplateStore,
    ids: IdRange,
    kernels: &Path,
    cache: &Path,
    ca_bundle: Option<&Path>,
) -> Result<Template, TemplateError> {
    std::fs::create_dir_all(cache).map_err(|e| TemplateError::io("create", cache, e))?;
    ensure(
        store,
        &Recipe::code_interpreter(kernels, cache, ca_bundle),
        ids,
    )
}

/// Both default templates: `base`, then `code-interpreter-v1` from the kernels' sources (the
/// checkout this binary was built from, or `$KERNELBOX_SOURCE`) with the download caches of
/// `home` (`$KERNELBOX_HOME`). Without the kernels' sources only `base` is built (said on stderr).
pub fn ensure_defaults(
    store: &TemplateStore,
    ids: IdRange,
    home: &Path,
    ca_bundle: Option<&Path>,
) -> Result<Vec<Template>, TemplateError> {
    let mut built = vec![ensure_base(store, ids)?];
    match crate::setup::source_dir(None) {
        Ok(kernels) => built.push(ensure_code_interpreter(
            store,
            ids,
            &kernels,
            &home.join("cache"),
            ca_bundle,
        )?),
        Err(e) => eprintln!("kernelbox: not building '{CODE_INTERPRETER_TEMPLATE}': {e}"),
    }
    Ok(built)
}

/// Builds `recipe` unless its current layer is recorded (with mmdebstrap's progress on
/// stderr). Other processes building the same template wait for this one and reuse its result.
fn ensure(store: &TemplateStore, recipe: &Recipe, ids: IdRange) -> Result<Template, TemplateError> {
    let mirror =
        std::env::var("KERNELBOX_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
    let layer = recipe.layer_id(&mirror, ids)?;
    let _lock = store.lock(recipe.id)?;
    if let Ok(t) = store.get(recipe.id) {
        if t.manifest.layers == [layer.clone()] {
            return Ok(t);
        }
    }
    store.ensure_layer(&layer, |dir| {
        mmdebstrap(recipe, dir, &mirror)?;
        crate::sandbox::rootfs::shift_ownership(dir, ids)
            .map_err(|e| build_error(recipe.id, e.to_string()))
    })?;
    store.save(&Manifest {
        id: recipe.id.into(),
        layers: vec![layer],
        user: USER.into(),
        workdir: format!("/home/{USER}"),
        env: recipe.env.clone(),
        kernels: recipe.kernels.clone(),
        ids_first: ids.first,
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })?;
    store.get(recipe.id)
}

/// Runs mmdebstrap into `dir` (empty), its progress going to our stderr.
fn mmdebstrap(recipe: &Recipe, dir: &Path, mirror: &str) -> Result<(), TemplateError> {
    let sources = [
        format!("deb {mirror} {SUITE} main"),
        format!("deb {mirror} {SUITE}-updates main"),
        format!("deb {mirror}-security {SUITE}-security main"),
    ];
    eprintln!(
        "kernelbox: building template '{}' (Debian {SUITE} from {mirror}; {})",
        recipe.id,
        if recipe.kernels.is_empty() {
            "about a minute"
        } else {
            "several minutes the first time"
        }
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg("--aptopt=Acquire::Retries \"3\"");
    for hook in &recipe.hooks {
        cmd.arg(format!("--customize-hook={hook}"));
    }
    let status = cmd
        .arg(SUITE)
        .arg(dir)
        .args(&sources)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            build_error(
                recipe.id,
                if e.kind() == std::io::ErrorKind::NotFound {
                    "mmdebstrap is not installed (scripts/setup-host.sh installs it: apt-get install mmdebstrap)"
                        .to_string()
                } else {
                    format!("cannot run mmdebstrap: {e}")
                },
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(build_error(
            recipe.id,
            format!("mmdebstrap failed ({status})"),
        ))
    }
}

/// Adds every file's relative path and content under `dir` to `hash`, in a stable order.
fn hash_tree(hash: &mut Sha256, dir: &Path) -> Result<(), TemplateError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TemplateError::io("list", &d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TemplateError::io("list", &d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        let rel = file.strip_prefix(dir).unwrap_or(&file);
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(&file).map_err(|e| TemplateError::io("read", &file, e))?);
    }
    Ok(())
}

/// A path as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn build_error(template: &str, message: String) -> TemplateError {
    TemplateError::Build {
        template: template.into(),
        message,
    }
}
