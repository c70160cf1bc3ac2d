//! The code interpreter (port 49999):
//! - `execution`: events, results, the `Execution` fold; `ndjson`: Python-style JSON lines;
//! - `env`: per-request variables as code; `stream`: the policy of one execution;
//! - `context`: one kernel, its lock and its lifecycle; `contexts`: registry and routing;
//! - `error`: failures as HTTP; `api`: the routes.

pub mod api;
pub mod context;
pub mod contexts;
pub mod env;
pub mod error;
pub mod execution;
pub mod ndjson;
pub mod stream;

pub use api::{router, Interpreter};
pub use contexts::{ContextDefaults, Contexts};
pub use execution::{Event, Execution, ExecutionError, ExecutionResult, Logs};
