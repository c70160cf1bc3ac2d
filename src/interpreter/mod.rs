//! The code interpreter (port 49999):
//! - `execution`: events, results, the `Execution` fold; `ndjson`: Python-style JSON lines;
//! - `language`: the one table of languages; `env`: per-request variables as code;
//! - `stream`: the policy of one execution;
//! - `context`: one kernel, its lock and its lifecycle; `contexts`: registry and routing (domain
//!   errors, which `error` maps to HTTP);
//! - `error`: failures as HTTP; `api`: the routes;
//! - `service`: start-up (default contexts) and shutdown of the whole interpreter.
//!
//! It does not know who serves it: the agent mounts [`router`] on whatever port it likes.

pub mod api;
pub mod context;
pub mod contexts;
pub mod env;
pub mod error;
pub mod execution;
pub mod language;
pub mod ndjson;
pub mod service;
pub mod stream;

pub use api::router;
pub use contexts::{ContextDefaults, Contexts};
pub use execution::{Event, Execution, ExecutionError, ExecutionResult, Logs};
pub use service::{Interpreter, InterpreterOptions, StartError};
