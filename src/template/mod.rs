//! Templates: what a sandbox's root filesystem is made of, built once and shared read-only by
//! every sandbox started from it.
//!
//! A template is a stack of *layers* (directories used as overlayfs lower dirs) plus what the
//! agent inside needs to know (default user, workdir). They live in a [`TemplateStore`] under
//! `$KERNELBOX_HOME/templates`:
//!
//! ```text
//! templates/
//!   layers/<layer id>/      one layer's tree; ids carry a hash of the recipe that made it
//!   <template id>.json      the manifest: layers (topmost first), user, workdir, env
//!   .lock-<template id>     flock(2) held while that template builds (parallel test runs)
//! ```
//!
//! Layers are built into a temporary folder and renamed into place, and a manifest is written
//! last, so a build cut short leaves nothing a sandbox could start from. A layer's id names its
//! recipe, so a changed recipe builds a new layer instead of reusing a stale one; the next issue's
//! `e2b.Dockerfile` builds add one layer per step on the same store.
//!
//! Files: [`store`] (layout, manifests, locking), [`debian`] (the `base` template: a Debian root
//! built by `mmdebstrap` against Debian's archive, with E2B's user `user`).
//!
//! This layer sits above [`crate::sandbox`] (it hands the backend a [`crate::sandbox::RootfsPlan`])
//! and below the control plane, which maps E2B's template ids onto it.

pub mod debian;
pub mod store;

pub use store::{Manifest, Template, TemplateStore};

/// Why a template could not be found, built or used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' not found")]
    NotFound(String),
    #[error("invalid template id {0:?} (1-64 of a-z, 0-9, '-', '_', '.')")]
    InvalidId(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template manifest {path}: {message}")]
    BadManifest { path: String, message: String },
    #[error("building template '{template}': {message}")]
    Build { template: String, message: String },
}

impl TemplateError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        TemplateError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
