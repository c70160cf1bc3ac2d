//! `process.Process`: commands and terminals (`sbx.commands`, `sbx.pty`), envd-api.md §9.
//!
//! - `manager`: the table of processes, their lives, deadlines, signals, input and resizes;
//! - `spawn`: how a command starts (user, cwd, environment, priority, process group);
//! - `pty`: pseudo-terminals;
//! - `output`: fan-out of a process's output to its streams, never blocked by a slow one;
//! - `rpc`: the Connect handlers.
//!
//! Each command runs in its own process group (a session for a terminal): signals and the
//! `Connect-Timeout-Ms` deadline reach everything it started, unlike envd, which signals one pid.

pub mod manager;
pub mod output;
pub mod pty;
pub mod rpc;
pub mod spawn;

pub use manager::{Input, ProcessInfo, Processes, Selector, StartSpec};
pub use output::{End, Event, Subscription};
pub use pty::PtySize;
pub use spawn::{ProcessConfig, ProcessOptions};
