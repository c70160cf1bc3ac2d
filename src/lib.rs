//! kernelbox: a self-hostable sandbox for AI-generated code that speaks E2B's wire protocols, so
//! the official E2B SDKs work unmodified.
//!
//! Map of the crate:
//! - [`jupyter`]: a Jupyter client over ZeroMQ — `wire` (framing, HMAC signing), `connection`
//!   (sockets, routing by parent id), `kernelspec`, `process` (launch, interrupt, shutdown, death).
//! - [`interpreter`]: the code interpreter on port 49999 — executions, contexts, the HTTP API.
//! - [`agent`]: the in-sandbox server process: start-up, ports, CORS, shutdown.
//! - [`client`]: a reqwest client that turns the `/execute` stream into an [`Execution`].
//! - [`setup`]: installs what the kernels need (`kernelbox setup`).
//! - [`config`]: where things live (`$KERNELBOX_HOME`, the default workdir).
//! - [`sys`]: the bottom layer: process groups, death with the parent, signals, the process guard,
//!   private files and folders. It imports nothing else from the crate.
//!
//! Still to come (see the roadmap): the sandbox API on port 49983, the control plane, templates.

pub mod agent;
pub mod client;
pub mod config;
pub mod interpreter;
pub mod jupyter;
pub mod setup;
pub mod sys;

pub use interpreter::{Event, Execution, ExecutionError, ExecutionResult};
