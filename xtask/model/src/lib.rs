//! The xtask's pure layers, a library of their own: `config` (`infra.toml` typed and validated),
//! `plan` (everything a run will do, as data) and `graph` (the task graph's algorithms). Nothing
//! here starts a process or touches the host; the xtask imports these modules at its root,
//! so `crate::config`, `crate::plan` and `crate::graph` mean the same there as here.

pub mod config;
pub mod graph;
pub mod plan;

/// The repository this crate sits in (`xtask/model`), for tests that read its files.
#[cfg(test)]
pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
