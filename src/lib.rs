//! kernelbox: a self-hostable sandbox for AI-generated code that speaks E2B's wire protocols, so
//! the official E2B SDKs work unmodified.
//!
//! Map of the crate, top to bottom (a module uses only those below it; see
//! `../shared/design/layers.md`):
//! - `main.rs` (the binary): the CLI, one clap subcommand per command (`setup`, `agent`).
//! - [`agent`]: the in-sandbox server process: its services on their ports from one runtime,
//!   dispatch by `E2b-Sandbox-Port`, CORS, graceful shutdown on a future.
//! - [`envd`]: the sandbox API on port 49983 (E2B's envd): users and paths, errors, the Connect
//!   RPC layer (`envd::connect`, hand-written JSON codec), the services' messages (`envd::rpc`)
//!   and `filesystem.Filesystem` (`envd::filesystem`: stat, list, make, move, remove, inotify watch).
//! - [`interpreter`]: the code interpreter on port 49999 — start-up of the default contexts,
//!   executions, contexts, the HTTP API. It does not know who serves it.
//! - [`jupyter`]: a Jupyter client over ZeroMQ — `wire` (framing, HMAC signing), `connection`
//!   (sockets, routing by parent id), `kernelspec`, `process` (launch, interrupt, shutdown, death).
//!   It knows nothing of executions or HTTP.
//! - [`sys`]: the bottom layer: process groups, death with the parent, signals, the process guard,
//!   private files and folders. It imports nothing else from the crate.
//!
//! Beside them: [`client`] (a reqwest client that turns the `/execute` stream into an
//! [`Execution`]), [`setup`] (installs what the kernels need, `kernelbox setup`) and [`config`]
//! (where things live: `$KERNELBOX_HOME`, the default workdir).
//!
//! Still to come (see the roadmap): the rest of the sandbox API (files, commands, PTY, watch), the
//! control plane (`kernelbox serve`), templates.

pub mod agent;
pub mod client;
pub mod config;
pub mod envd;
pub mod interpreter;
pub mod jupyter;
pub mod sandbox;
pub mod setup;
pub mod sys;

pub use interpreter::{Event, Execution, ExecutionError, ExecutionResult};
