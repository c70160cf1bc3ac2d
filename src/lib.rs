//! kernelbox: a self-hostable sandbox for AI-generated code that speaks E2B's wire protocols, so
//! the official E2B SDKs work unmodified.
//!
//! Map of the crate, top to bottom (a module uses only those below it; see
//! `../shared/design/layers.md`):
//! - `main.rs` (the binary): the CLI, one clap subcommand per command (`setup`, `agent`,
//!   `serve`, `sandbox list|kill`, `template build|build-base|list`).
//! - [`control`]: the control plane (`kernelbox serve`): E2B's sandbox REST API behind
//!   `X-API-KEY`, the gateway that routes SDK traffic to each sandbox's agent socket, lifetimes
//!   (deadlines, kill with a recorded reason, reclaim after a restart) and their SQLite records.
//! - [`agent`]: the in-sandbox server process: its services on their ports from one runtime,
//!   dispatch by `E2b-Sandbox-Port`, CORS, graceful shutdown on a future.
//! - [`envd`]: the sandbox API on port 49983 (E2B's envd): users and paths, errors, the Connect
//!   RPC layer (`envd::connect`, hand-written JSON codec), the services' messages (`envd::rpc`),
//!   `filesystem.Filesystem` (`envd::filesystem`: stat, list, make, move, remove, inotify watch),
//!   `process.Process` (`envd::process`: commands and terminals) and `/files` (`envd::files`:
//!   staged uploads, downloads, signed links; identity transfers served with splice/sendfile).
//! - [`interpreter`]: the code interpreter on port 49999 — start-up of the default contexts,
//!   executions, contexts, the HTTP API. It does not know who serves it.
//! - [`jupyter`]: a Jupyter client over ZeroMQ — `wire` (framing, HMAC signing), `connection`
//!   (sockets, routing by parent id), `kernelspec`, `process` (launch, interrupt, shutdown, death).
//!   It knows nothing of executions or HTTP.
//! - [`template`]: what sandboxes' roots are made of: a store of read-only layers and manifests
//!   under `$KERNELBOX_HOME/templates`, the `base` template (a Debian root from `mmdebstrap`
//!   with E2B's user `user`) and `code-interpreter-v1` (the kernels installed inside). It hands
//!   the sandbox layer a root filesystem plan.
//! - [`sandbox`]: isolated sandboxes running the agent as their init, behind a `Backend` trait
//!   (spawn, kill, usage, list) so a microVM backend can follow: the namespace backend
//!   (`sandbox::namespaces`: user/mount/pid/net/ipc/uts namespaces, pivot_root into an overlay),
//!   the root filesystem plan (`sandbox::rootfs`: lower layers + read-only binds) and cgroups
//!   (`sandbox::cgroup`: memory/cpu/pids under the current process's cgroups, v1 or v2), the
//!   egress rules of its network (`sandbox::egress`). It knows nothing of E2B's API; the control
//!   plane sits above it.
//! - [`sys`]: the bottom layer: process groups, death with the parent, signals, the process guard,
//!   private files and folders. It imports nothing else from the crate.
//!
//! Beside them: [`client`] (a reqwest client that turns the `/execute` stream into an
//! [`Execution`]), [`setup`] (installs what the kernels need, `kernelbox setup`) and [`config`]
//! (where things live: `$KERNELBOX_HOME`, the default workdir).
//!
//! Still to come (see the roadmap): templates from `e2b.Dockerfile`, pause/resume, sandboxes
//! that outlive `serve`, scale-out.

pub mod agent;
pub mod client;
pub mod config;
pub mod control;
pub mod envd;
pub mod interpreter;
pub mod jupyter;
pub mod sandbox;
pub mod setup;
pub mod sys;
pub mod template;

pub use interpreter::{Event, Execution, ExecutionError, ExecutionResult};
