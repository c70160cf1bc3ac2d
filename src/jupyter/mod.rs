//! A Jupyter client over ZeroMQ: `wire` (framing and signing), `connection` (sockets and routing),
//! `kernelspec` (what to launch) and `process` (a running kernel's life).

pub mod connection;
pub mod kernelspec;
pub mod process;
pub mod wire;

pub use connection::{Channel, ConnectionError, Incoming, KernelConnection, Subscription};
pub use kernelspec::{InterruptMode, KernelSpec, KernelSpecError};
pub use process::{Kernel, KernelError, LaunchOptions};
pub use wire::Message;
