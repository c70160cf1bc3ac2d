//! The operating-system layer shared by everything that runs programs: kernels today, the sandbox
//! API's commands later. Process groups, death with the parent, signals, a guard that kills a
//! process group when dropped, files only the agent's user may read, pipes, and environment variables.
//!
//! Nothing here knows about Jupyter, HTTP or E2B; every other module may use it.

pub mod env;
pub mod fs;
pub mod process;
pub mod time;

pub use fs::{pipe, private_dir, write_private};
pub use process::{
    deprioritize, die_with_parent, killpg, new_process_group, signal, ProcessGuard, Signal,
};
