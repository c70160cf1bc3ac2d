//! The operating-system layer shared by everything that runs programs: kernels today, the sandbox
//! API's commands later. Process groups, death with the parent, signals, a guard that kills a
//! process group when dropped, files only the agent's user may read, and environment variables.
//!
//! Nothing here knows about Jupyter, HTTP or E2B; every other module may use it.

pub mod env;
pub mod fs;
pub mod process;

pub use fs::{private_dir, write_private};
pub use process::{
    deprioritize, die_with_parent, killpg, new_process_group, signal, ProcessGuard, Signal,
};

/// Largest allocation the C allocator serves from its heaps rather than `mmap` (see
/// [`keep_freed_memory`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;
/// Free memory an allocator heap keeps at its top instead of returning it (see
/// [`keep_freed_memory`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 * 1024 * 1024;

/// Makes glibc's allocator keep a few MB it freed instead of handing them back to the kernel at
/// once. A large upload reads the socket into fresh buffers of up to ~400 KB (hyper's) while the
/// disk thread still holds the previous ones; with the defaults, each free at a heap's top
/// trims it and each new buffer faults its pages in again: ~80,000 page faults and about half
/// of the agent's CPU for 1 GB on the reference machine (a VM, where a page fault costs the
/// most). With these two settings: almost none, and 0.55–1.06 s of agent CPU per GB instead of
/// 0.76–2.4 s. Memory stays bounded: at most `TRIM_THRESHOLD` more per heap. Call before any
/// thread starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tunables; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
