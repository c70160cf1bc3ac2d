//! The code interpreter (port 49999): `execution` (events, results, the `Execution` fold),
//! `ndjson` (Python-style JSON lines), `env` (per-request variables as code), `context` (one
//! kernel and the policy of an execution), `contexts` (registry and routing), `error` (failures
//! as HTTP) and `api` (the routes).

pub mod api;
pub mod context;
pub mod contexts;
pub mod env;
pub mod error;
pub mod execution;
pub mod ndjson;

pub use api::{router, Interpreter};
pub use contexts::{ContextDefaults, Contexts};
pub use execution::{Event, Execution, ExecutionError, ExecutionResult, Logs};
