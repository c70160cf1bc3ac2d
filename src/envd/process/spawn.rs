//! Starting a command the way envd does: as the caller's user, in the caller's cwd, with envd's
//! environment (`PATH`, `HOME`, `USER`, `LOGNAME`, then the sandbox's variables, then the
//! request's), behind a lower priority than the agent, in a process group of its own that dies
//! with the agent.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::pty::{self, Pty, PtySize};
use crate::envd::{Caller, EnvdError};
use crate::sys;

/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command as the SDK describes it (`ProcessConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

/// How the agent sets commands up, beyond what a request says.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Folders put in front of the agent's `PATH` (the kernels' `python` and `pip`).
    pub path_prefix: Vec<PathBuf>,
    /// A script non-interactive bash shells read after the login files (`BASH_ENV`): login
    /// shells (`bash -l -c`, what the SDK runs) reset `PATH` in `/etc/profile`; this puts
    /// [`ProcessOptions::path_prefix`] back in front.
    pub bash_env: Option<PathBuf>,
}

impl ProcessOptions {
    /// The `PATH` commands start with.
    fn path(&self) -> String {
        let agent_path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        let mut parts: Vec<String> = self
            .path_prefix
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(agent_path);
        parts.join(":")
    }

    /// The `BASH_ENV` script's text: puts the prefix in front of `PATH` unless it is already
    /// there, so nested shells do not grow `PATH`.
    pub fn bash_env_script(&self) -> String {
        let mut text = String::from("# Written by kernelbox: the kernels' tools first on PATH.\n");
        for dir in self.path_prefix.iter().rev() {
            let dir = shell_quote(&dir.display().to_string());
            text.push_str(&format!(
                "case \":$PATH:\" in *:{dir}:*) ;; *) PATH={dir}:\"$PATH\" ;; esac\n"
            ));
        }
        text.push_str("export PATH\n");
        text
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What to start.
pub struct Launch<'a> {
    pub config: &'a ProcessConfig,
    pub pty: Option<PtySize>,
    /// `None` or `Some(true)`: a pipe the SDK can write to; `Some(false)`: `/dev/null`.
    pub stdin: Option<bool>,
    pub caller: &'a Caller,
    pub sandbox_env: &'a [(String, String)],
    pub options: &'a ProcessOptions,
}

/// A started command and the agent's ends of its stdio.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub pty: Option<Pty>,
}

impl Launch<'_> {
    /// Starts the command. Bad cwd and commands that cannot be executed are `invalid_argument`
    /// (as in envd).
    pub fn spawn(&self) -> Result<Spawned, EnvdError> {
        let cwd = self.cwd()?;
        let mut cmd = Command::new(&self.config.cmd);
        cmd.args(&self.config.args)
            .current_dir(&cwd)
            .env_clear()
            .envs(self.env())
            .kill_on_drop(false);
        let pty = self.stdio(&mut cmd)?;
        self.restrict(&mut cmd)?;
        let child = cmd.spawn().map_err(|e| {
            EnvdError::invalid_argument(format!(
                "error starting process '{}': {e}",
                self.command_line()
            ))
        })?;
        // The slave copies in `cmd` close here, so the terminal reports EOF once the child's do.
        drop(cmd);
        let pid = child
            .id()
            .ok_or_else(|| EnvdError::internal("the process exited before it had a pid"))?;
        let mut child = child;
        Ok(Spawned {
            pid,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            pty,
            child,
        })
    }

    fn command_line(&self) -> String {
        std::iter::once(self.config.cmd.as_str())
            .chain(self.config.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The request's cwd for the caller, else the workdir; it must be a folder.
    fn cwd(&self) -> Result<PathBuf, EnvdError> {
        let cwd = match self.config.cwd.as_deref() {
            Some(c) if !c.is_empty() => self.caller.path(c),
            _ => self.caller.workdir.clone(),
        };
        if !cwd.is_dir() {
            return Err(EnvdError::invalid_argument(format!(
                "cwd '{}' does not exist",
                cwd.display()
            )));
        }
        Ok(cwd)
    }

    /// envd's order: later entries win.
    fn env(&self) -> Vec<(String, String)> {
        let user = &self.caller.user.name;
        let mut env = vec![
            ("PATH".to_string(), self.options.path()),
            ("HOME".to_string(), self.caller.home.display().to_string()),
            ("USER".to_string(), user.clone()),
            ("LOGNAME".to_string(), user.clone()),
        ];
        if let Some(script) = &self.options.bash_env {
            env.push(("BASH_ENV".to_string(), script.display().to_string()));
        }
        env.extend(self.sandbox_env.iter().cloned());
        env.extend(self.config.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Pipes, or a terminal on all three; returns the terminal's master.
    fn stdio(&self, cmd: &mut Command) -> Result<Option<Pty>, EnvdError> {
        let io_err = |e: std::io::Error| EnvdError::internal(format!("cannot set up stdio: {e}"));
        let Some(size) = self.pty else {
            let stdin = match self.stdin {
                Some(false) => Stdio::null(),
                _ => Stdio::piped(),
            };
            cmd.stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            sys::new_process_group(cmd);
            return Ok(None);
        };
        let (master, slave) = Pty::open(size).map_err(io_err)?;
        let clone = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(io_err);
        cmd.stdin(clone(&slave)?)
            .stdout(clone(&slave)?)
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(pty::make_controlling_terminal);
        }
        Ok(Some(master))
    }

    /// Lower priority than the agent, the caller's user, death with the agent, in that order:
    /// `/proc/self` is no longer writable once the user changed, and a user change clears the
    /// parent-death signal.
    fn restrict(&self, cmd: &mut Command) -> Result<(), EnvdError> {
        sys::deprioritize(cmd);
        if let Some(creds) = Credentials::switch_to(&self.caller.user)? {
            // SAFETY: the closure only makes async-signal-safe syscalls on data prepared before
            // the fork.
            unsafe {
                cmd.pre_exec(move || creds.apply());
            }
        }
        sys::die_with_parent(cmd);
        Ok(())
    }
}

/// A user to become in the child, with everything computed before the fork.
struct Credentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Credentials {
    /// `None` when the agent already runs as `user`.
    fn switch_to(user: &crate::envd::User) -> Result<Option<Credentials>, EnvdError> {
        // SAFETY: geteuid cannot fail.
        if user.uid == unsafe { libc::geteuid() } {
            return Ok(None);
        }
        Ok(Some(Credentials {
            uid: user.uid,
            gid: user.gid,
            groups: groups_of(&user.name, user.gid)?,
        }))
    }

    /// In the child: supplementary groups, group, then user.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain syscalls; `groups` lives in the closure that owns `self`.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
                || libc::setuid(self.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The user's groups from the group database (its primary group included).
fn groups_of(name: &str, gid: libc::gid_t) -> Result<Vec<libc::gid_t>, EnvdError> {
    let cname = CString::new(name).map_err(|_| EnvdError::unauthenticated("bad user name"))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: getgrouplist writes at most `n` gids and reports the number it needs.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return Ok(groups);
        }
        if groups.len() >= 1 << 16 {
            return Ok(vec![gid]);
        }
        groups.resize((n.max(0) as usize).max(groups.len() * 2), 0);
    }
}

/// Writes the `BASH_ENV` script (world-readable: commands may run as any user).
pub fn write_bash_env(path: &Path, options: &ProcessOptions) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, options.bash_env_script())?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

impl ProcessOptions {
    /// The agent's options under `$KERNELBOX_HOME` (`home`): the kernels' venv first on `PATH`
    /// (its `python` and `pip` are the ones the python kernel imports from), and a `BASH_ENV`
    /// script that restores that order in login shells. No file in anyone's home is written:
    /// interactive terminal shells (which ignore `BASH_ENV`) get `PATH` from their profile files
    /// (a template adds the venv in `/etc/profile.d`). If the script cannot be written, commands
    /// still start, with the plain `PATH`.
    pub fn under(home: &Path) -> ProcessOptions {
        let venv = home.join("python").join("bin");
        let mut options = ProcessOptions {
            path_prefix: if venv.is_dir() {
                vec![venv]
            } else {
                Vec::new()
            },
            bash_env: None,
        };
        if options.path_prefix.is_empty() {
            return options;
        }
        let script = home.join("envd").join("bash_env.sh");
        match write_bash_env(&script, &options) {
            Ok(()) => options.bash_env = Some(script),
            Err(e) => tracing::warn!(path = %script.display(), error = %e, "cannot write BASH_ENV"),
        }
        options
    }
}
