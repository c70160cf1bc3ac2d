//! The template store: layers and manifests under one folder, built at most once at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TemplateError;
use crate::sandbox::{IdRange, RootfsPlan};

/// What a template is: its layers and the defaults of the agent inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    /// Layer ids, topmost first (overlayfs `lowerdir` order).
    pub layers: Vec<String>,
    /// The default user of commands and file operations (E2B: `user`).
    pub user: String,
    /// The default working directory (E2B: `/home/user`).
    pub workdir: String,
    /// Environment every process of a sandbox gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Languages whose code contexts the agent starts up front (none: no code interpreter).
    #[serde(default)]
    pub kernels: Vec<String>,
    /// The first host id the layers' owners are shifted by (see
    /// [`crate::sandbox::rootfs::shift_ownership`]): sandboxes must map root to it.
    pub ids_first: u32,
    /// When the build finished, in seconds since the epoch.
    pub built_at: u64,
}

/// A template found in the store, with its layers as host paths.
#[derive(Debug, Clone)]
pub struct Template {
    pub manifest: Manifest,
    pub layer_dirs: Vec<PathBuf>,
}

impl Template {
    /// The root filesystem of a sandbox whose root is host id `ids.first`: the template's layers,
    /// nothing bound from the host.
    pub fn rootfs(&self, ids: IdRange) -> Result<RootfsPlan, TemplateError> {
        if ids.first != self.manifest.ids_first {
            return Err(TemplateError::BadManifest {
                path: self.manifest.id.clone(),
                message: format!(
                    "layers are owned for sandbox root = host id {}, not {}",
                    self.manifest.ids_first, ids.first
                ),
            });
        }
        Ok(RootfsPlan {
            layers: self.layer_dirs.clone(),
            binds: Vec::new(),
            scratch: Vec::new(),
        })
    }
}

/// Templates under one folder (`$KERNELBOX_HOME/templates`).
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
}

/// An exclusive `flock(2)` on a file, released when dropped (or when the process dies, so a
/// killed build never leaves a lock behind).
pub struct BuildLock {
    _file: File,
}

impl TemplateStore {
    pub fn new(root: PathBuf) -> TemplateStore {
        TemplateStore { root }
    }

    /// The store of `$KERNELBOX_HOME`.
    pub fn at_home(home: &Path) -> TemplateStore {
        TemplateStore::new(home.join("templates"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of layer `id` (which may not exist yet).
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
    }

    /// A built template, or [`TemplateError::NotFound`].
    pub fn get(&self, id: &str) -> Result<Template, TemplateError> {
        check_id(id)?;
        let path = self.manifest_path(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TemplateError::NotFound(id.to_string()))
            }
            Err(e) => return Err(TemplateError::io("read", &path, e)),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| TemplateError::BadManifest {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let mut layer_dirs = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            let dir = self.layer_dir(layer);
            if !dir.is_dir() {
                return Err(TemplateError::BadManifest {
                    path: path.display().to_string(),
                    message: format!("layer {layer} is missing"),
                });
            }
            layer_dirs.push(dir);
        }
        Ok(Template {
            manifest,
            layer_dirs,
        })
    }

    /// The manifests of every built template, by id.
    pub fn list(&self) -> Result<Vec<Manifest>, TemplateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TemplateError::io("list", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".json") {
                if let Ok(t) = self.get(id) {
                    out.push(t.manifest);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Waits for, then holds, the right to build template `id` (other processes wait here).
    pub fn lock(&self, id: &str) -> Result<BuildLock, TemplateError> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| TemplateError::io("create", &self.root, e))?;
        let path = self.root.join(format!(".lock-{id}"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TemplateError::io("open", &path, e))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(TemplateError::io(
                "lock",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(BuildLock { _file: file })
    }

    /// Builds layer `id` with `build` (given an empty folder to fill) unless it exists. The
    /// folder is renamed into place only when `build` succeeds; otherwise it is removed.
    pub fn ensure_layer(
        &self,
        id: &str,
        build: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<PathBuf, TemplateError> {
        check_id(id)?;
        let dir = self.layer_dir(id);
        if dir.is_dir() {
            return Ok(dir);
        }
        let layers = self.root.join("layers");
        std::fs::create_dir_all(&layers).map_err(|e| TemplateError::io("create", &layers, e))?;
        remove_stale_partials(&layers, id);
        let partial = layers.join(format!(".partial-{id}-{}", std::process::id()));
        std::fs::create_dir(&partial).map_err(|e| TemplateError::io("create", &partial, e))?;
        match build(&partial) {
            Ok(()) => {
                std::fs::rename(&partial, &dir)
                    .map_err(|e| TemplateError::io("rename", &dir, e))?;
                Ok(dir)
            }
            Err(e) => {
                let _ = remove_tree(&partial);
                Err(e)
            }
        }
    }

    /// Records a built template (atomically: a reader sees the old manifest or the new one).
    pub fn save(&self, manifest: &Manifest) -> Result<(), TemplateError> {
        check_id(&manifest.id)?;
        let path = self.manifest_path(&manifest.id);
        let tmp = self.root.join(format!(".{}.json.tmp", manifest.id));
        let text =
            serde_json::to_string_pretty(manifest).map_err(|e| TemplateError::BadManifest {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        std::fs::write(&tmp, text).map_err(|e| TemplateError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TemplateError::io("rename", &path, e))
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }
}

/// Template ids name files: 1–64 of `[a-z0-9._-]`, not starting with `.` or `-`.
fn check_id(id: &str) -> Result<(), TemplateError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(TemplateError::InvalidId(id.to_string()))
    }
}

/// Removes what builds of layer `id` that were killed left (`.partial-<id>-<pid>`); the caller
/// holds the template's build lock, so none of them is still being built. A folder with
/// anything still mounted under it (a builder's `/proc` or `/dev`) is left alone: removing it
/// would reach into those file systems.
fn remove_stale_partials(layers: &Path, id: &str) {
    let prefix = format!(".partial-{id}-");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(layers) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let mounted = mounts.lines().any(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|point| Path::new(point).starts_with(&path))
        });
        if mounted {
            tracing::warn!(path = %path.display(), "a killed template build left mounts; not removing it");
        } else if let Err(e) = remove_tree(&path) {
            tracing::warn!(path = %path.display(), "cannot remove a killed build's folder: {e}");
        }
    }
}

/// `rm -rf`; a folder that is already gone is fine.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> TemplateStore {
        let dir = std::env::temp_dir().join(format!("kb-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TemplateStore::new(dir)
    }

    fn manifest(layers: &[&str]) -> Manifest {
        Manifest {
            id: "t1".into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            user: "user".into(),
            workdir: "/home/user".into(),
            env: BTreeMap::new(),
            kernels: Vec::new(),
            ids_first: 100_000,
            built_at: 1,
        }
    }

    #[test]
    fn a_failed_layer_build_leaves_nothing_and_a_good_one_is_reused() {
        let s = store("layers");
        let err = s.ensure_layer("l1", |dir| {
            std::fs::write(dir.join("half"), b"x").expect("write");
            Err(TemplateError::Build {
                template: "t".into(),
                message: "cut short".into(),
            })
        });
        assert!(err.is_err());
        let left: Vec<_> = std::fs::read_dir(s.root().join("layers"))
            .expect("list")
            .collect();
        assert!(left.is_empty(), "partial layer left behind");
        let dir = s
            .ensure_layer("l1", |dir| {
                std::fs::write(dir.join("file"), b"x").map_err(|e| TemplateError::io("w", dir, e))
            })
            .expect("build");
        assert!(dir.join("file").is_file());
        // Built once: a second call does not run its build.
        s.ensure_layer("l1", |_| panic!("rebuilt")).expect("reuse");
        // What a killed build of another layer left is removed by that layer's next build.
        let stale = s.root().join("layers/.partial-l2-999999");
        std::fs::create_dir_all(stale.join("etc")).expect("stale");
        s.ensure_layer("l2", |_| Ok(())).expect("l2");
        assert!(!stale.exists(), "a killed build's folder is left");
        std::fs::remove_dir_all(s.root()).expect("clean up");
    }

    #[test]
    fn manifests_round_trip_and_missing_ones_are_not_found() {
        let s = store("manifests");
        assert!(matches!(s.get("t1"), Err(TemplateError::NotFound(_))));
        assert!(matches!(s.get("../x"), Err(TemplateError::InvalidId(_))));
        s.ensure_layer("l1", |_| Ok(())).expect("layer");
        std::fs::create_dir_all(s.root()).expect("root");
        s.save(&manifest(&["l1"])).expect("save");
        let t = s.get("t1").expect("get");
        assert_eq!(t.manifest, manifest(&["l1"]));
        assert_eq!(t.layer_dirs, vec![s.layer_dir("l1")]);
        assert_eq!(s.list().expect("list").len(), 1);
        // A manifest naming a layer that is gone is an error, not a sandbox without a root.
        s.save(&manifest(&["gone"])).expect("save");
        assert!(matches!(
            s.get("t1"),
            Err(TemplateError::BadManifest { .. })
        ));
        std::fs::remove_dir_all(s.root()).expect("clean up");
    }
}
