//! A sandbox's root filesystem, as a plan the backend carries out inside the sandbox's mount
//! namespace: an overlay of read-only lower *layers* under a per-sandbox upper dir, then read-only
//! *binds* of host paths over the merged tree.
//!
//! Today's only plan, [`RootfsPlan::host_minimal`], is a stand-in for templates: one small layer
//! (mount points, the `/bin -> usr/bin` style links, `/etc/hostname` and `/etc/hosts`) plus binds
//! of the host's `/usr`, the pieces of `/etc` programs need (users, the dynamic linker's cache,
//! TLS roots), and `$KERNELBOX_HOME` so kernels installed on the host are reachable. A template
//! built with debootstrap replaces all of it with `layers = [template layers…]`, `binds = []`:
//! nothing else in the backend changes.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SandboxError;

/// A host path bound over a path of the merged root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Path on the host (a file or a directory).
    pub source: PathBuf,
    /// Absolute path inside the sandbox; its mount point must exist in a layer (or is created in
    /// the upper dir by the backend).
    pub target: PathBuf,
    pub writable: bool,
}

/// Layers and binds that make a sandbox's `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsPlan {
    /// Read-only lower layers, topmost first (overlayfs `lowerdir` order). Never written to;
    /// several sandboxes may share them.
    pub layers: Vec<PathBuf>,
    /// Read-only (unless `writable`) binds over the merged root, in order.
    pub binds: Vec<Bind>,
    /// Paths inside (existing directories of a layer or bind) that get a private tmpfs after
    /// the binds: writable scratch space inside a read-only bind.
    pub scratch: Vec<PathBuf>,
}

/// Host directories a process needs to run at all; `/bin`, `/lib`… are links into `/usr` on a
/// merged-/usr host (Debian 12) and are then recreated as links, not bound.
const HOST_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Pieces of the host's `/etc` that programs read: users and groups (envd resolves users), name
/// service and linker configuration, TLS roots, time zone, shell start-up, Debian alternatives
/// (many `/usr/bin` commands link through them), and the kernels' runtimes' configuration.
const HOST_ETC: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "profile",
    "profile.d",
    "bash.bashrc",
    "environment",
    // R's and the JDK's configuration (Debian links /usr/lib/R/etc and the JDK's conf/ here).
    "R",
    "java-17-openjdk",
];

/// Empty directories of the skeleton (mount points and the usual top level).
const SKELETON_DIRS: &[&str] = &[
    "proc", "dev", "sys", "tmp", "etc", "root", "home", "run", "var/tmp", "opt", "mnt",
];

impl RootfsPlan {
    /// The stand-in for a template: writes the skeleton layer into `layer_dir` (created; owned
    /// by host root, world-readable) and binds the host's programs read-only. `home` is
    /// `$KERNELBOX_HOME`, bound at the same path so kernelspecs that name absolute paths work
    /// (creating its `run/` and `envd/` on the host if missing: mount points for scratch space).
    pub fn host_minimal(
        layer_dir: &Path,
        home: &Path,
        hostname: &str,
    ) -> Result<RootfsPlan, SandboxError> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| SandboxError::io("create", p, e))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SandboxError::io("chmod", p, e))
        };
        mkdir(layer_dir)?;
        for dir in SKELETON_DIRS {
            mkdir(&layer_dir.join(dir))?;
        }
        let tmp = layer_dir.join("var/tmp");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| SandboxError::io("chmod", &tmp, e))?;
        let mut binds = Vec::new();
        for dir in HOST_DIRS {
            let host = Path::new(dir);
            let inside = layer_dir.join(dir.trim_start_matches('/'));
            match std::fs::symlink_metadata(host) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(host)
                        .map_err(|e| SandboxError::io("readlink", host, e))?;
                    symlink(&target, &inside)
                        .map_err(|e| SandboxError::io("symlink", &inside, e))?;
                }
                Ok(m) if m.is_dir() => {
                    mkdir(&inside)?;
                    binds.push(Bind {
                        source: host.to_path_buf(),
                        target: host.to_path_buf(),
                        writable: false,
                    });
                }
                _ => {}
            }
        }
        for name in HOST_ETC {
            let host = Path::new("/etc").join(name);
            let inside = layer_dir.join("etc").join(name);
            match std::fs::metadata(&host) {
                Ok(m) if m.is_dir() => mkdir(&inside)?,
                Ok(_) => write_file(&inside, b"")?,
                Err(_) => continue,
            }
            binds.push(Bind {
                source: host.clone(),
                target: host,
                writable: false,
            });
        }
        write_file(
            &layer_dir.join("etc/hostname"),
            format!("{hostname}\n").as_bytes(),
        )?;
        write_file(
            &layer_dir.join("etc/hosts"),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n").as_bytes(),
        )?;
        // $KERNELBOX_HOME at its host path (its mount point: every folder down to it), with
        // private scratch space where the agent writes (`run/`: kernels' connection files;
        // `envd/`: the commands' BASH_ENV), so the agent inside runs with the host's path as its
        // home and kernelspecs that name `$KERNELBOX_HOME/...` resolve as on the host.
        let mut scratch = Vec::new();
        if home.is_absolute() && home.is_dir() {
            mkdir(&layer_dir.join(home.strip_prefix("/").unwrap_or(home)))?;
            binds.push(Bind {
                source: home.to_path_buf(),
                target: home.to_path_buf(),
                writable: false,
            });
            // The Python venv's base installation when it lives outside /usr (pyenv, a
            // hand-built Python): the venv's interpreter is a link into it.
            if let Some(base) = venv_base(&home.join("python/pyvenv.cfg")) {
                if !base.starts_with("/usr") && !base.starts_with(home) && base.is_dir() {
                    mkdir(&layer_dir.join(base.strip_prefix("/").unwrap_or(&base)))?;
                    binds.push(Bind {
                        source: base.clone(),
                        target: base,
                        writable: false,
                    });
                }
            }
            for dir in ["run", "envd"] {
                let path = home.join(dir);
                if !path.is_dir() {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| SandboxError::io("create", &path, e))?;
                }
                scratch.push(path);
            }
        }
        Ok(RootfsPlan {
            layers: vec![layer_dir.to_path_buf()],
            binds,
            scratch,
        })
    }
}

/// Shifts the owners of every file under `dir` by `ids.first` (uid `n` becomes `first + n`), so
/// that a layer built by host root shows its real owners inside a sandbox whose root is host id
/// `first`: `/home/user` belongs to `user`, `/etc/sudoers` to root. Set-id bits, which `chown`
/// clears, are put back; a file with several hard links is shifted once.
///
/// A stand-in for idmapped lower layers (`mount_setattr(MOUNT_ATTR_IDMAP)`), which map ownership
/// at mount time and so let each sandbox have its own id range over the same layer; until then
/// every sandbox of a layer must use the range it was shifted to.
pub fn shift_ownership(dir: &Path, ids: super::IdRange) -> Result<(), SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md =
            std::fs::symlink_metadata(&path).map_err(|e| SandboxError::io("stat", &path, e))?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        let shifted = |id: u32| {
            (id < ids.count).then(|| ids.first + id).ok_or_else(|| {
                SandboxError::io(
                    "shift the owner of",
                    &path,
                    std::io::Error::other(format!("id {id} is outside the sandbox's range")),
                )
            })
        };
        let (uid, gid) = (shifted(md.uid())?, shifted(md.gid())?);
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(|e| SandboxError::io("chown", &path, e))?;
        let mode = md.mode() & 0o7777;
        if !md.file_type().is_symlink() && mode & 0o6000 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| SandboxError::io("chmod", &path, e))?;
        }
        if md.is_dir() {
            let entries =
                std::fs::read_dir(&path).map_err(|e| SandboxError::io("list", &path, e))?;
            for entry in entries {
                stack.push(
                    entry
                        .map_err(|e| SandboxError::io("list", &path, e))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

/// The installation a venv was made from: `home = <prefix>/bin` in its `pyvenv.cfg`.
fn venv_base(cfg: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(cfg).ok()?;
    let bin = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "home").then(|| PathBuf::from(v.trim()))
    })?;
    Some(bin.parent()?.to_path_buf()).filter(|p| p.is_absolute() && p != Path::new("/"))
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), SandboxError> {
    std::fs::write(path, contents).map_err(|e| SandboxError::io("write", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| SandboxError::io("chmod", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_venvs_base_is_its_home_minus_bin() {
        let dir = std::env::temp_dir().join(format!("kb-venv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cfg = dir.join("pyvenv.cfg");
        std::fs::write(&cfg, "home = /opt/py/3.11/bin\nversion = 3.11.7\n").expect("cfg");
        assert_eq!(venv_base(&cfg), Some(PathBuf::from("/opt/py/3.11")));
        std::fs::write(&cfg, "home = /bin\n").expect("cfg");
        assert_eq!(venv_base(&cfg), None);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn shifting_keeps_relative_owners_set_id_bits_and_hard_links() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("kb-shift-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home/user")).expect("dirs");
        let owned = |p: &Path, id: u32| std::os::unix::fs::lchown(p, Some(id), Some(id));
        if owned(&dir.join("home/user"), 1000).is_err() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let suid = dir.join("sudo");
        std::fs::write(&suid, b"x").expect("write");
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        std::fs::hard_link(&suid, dir.join("sudo-link")).expect("link");
        symlink("sudo", dir.join("sudo-sym")).expect("symlink");
        let ids = crate::sandbox::IdRange {
            first: 100_000,
            count: 65_536,
        };
        shift_ownership(&dir, ids).expect("shift");
        let md = |p: &str| std::fs::symlink_metadata(dir.join(p)).expect("stat");
        assert_eq!(
            (md("home/user").uid(), md("home/user").gid()),
            (101_000, 101_000)
        );
        assert_eq!(
            md("sudo").uid(),
            100_000,
            "a hard-linked file is shifted once"
        );
        assert_eq!(md("sudo").mode() & 0o7777, 0o4755, "set-uid bit kept");
        assert_eq!(md("sudo-sym").uid(), 100_000);
        assert_eq!(md("").uid(), 100_000);
        owned(&dir.join("home"), 70_000).expect("chown");
        assert!(
            shift_ownership(&dir, ids).is_err(),
            "an id outside the range"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn host_minimal_lays_out_mount_points_links_and_binds() {
        let dir = std::env::temp_dir().join(format!("kb-rootfs-{}", std::process::id()));
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let plan = RootfsPlan::host_minimal(&dir.join("layer"), &home, "sbx").expect("plan");
        assert_eq!(plan.scratch, vec![home.join("run"), home.join("envd")]);
        assert!(home.join("run").is_dir() && home.join("envd").is_dir());
        assert_eq!(plan.layers, vec![dir.join("layer")]);
        assert!(plan
            .binds
            .iter()
            .any(|b| b.target == Path::new("/usr") && !b.writable));
        assert!(plan.binds.iter().any(|b| b.target == home));
        for b in &plan.binds {
            let point = dir
                .join("layer")
                .join(b.target.strip_prefix("/").expect("abs"));
            assert!(point.exists(), "mount point {}", point.display());
        }
        let hostname = std::fs::read_to_string(dir.join("layer/etc/hostname")).expect("hostname");
        assert_eq!(hostname, "sbx\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
