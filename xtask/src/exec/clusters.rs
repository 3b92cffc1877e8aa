//! Records of kept clusters (`cargo xtask cluster up`): `target/xtask/clusters/<name>/`
//! holds `cluster.json` (written before anything is created) and the cluster's kubeconfig.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub name: String,
    /// The registry as this host (and the cluster's containerd) sees it: `localhost:<port>`.
    pub registry: String,
    pub registry_port: u16,
    pub registry_container: String,
    pub network: String,
    pub kubeconfig: PathBuf,
    pub context: String,
    pub owner: String,
    pub created: u64,
}

pub fn dir(target: &Path, name: &str) -> PathBuf {
    target.join("xtask").join("clusters").join(name)
}

pub fn load(target: &Path, name: &str) -> Option<Kept> {
    let text = std::fs::read_to_string(dir(target, name).join("cluster.json")).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn save(target: &Path, k: &Kept) -> Result<()> {
    let d = dir(target, &k.name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    crate::exec::record::write_atomically(
        &d.join("cluster.json"),
        serde_json::to_string_pretty(k)?.as_bytes(),
    )
}

/// Every kept cluster recorded here.
pub fn all(target: &Path) -> Vec<Kept> {
    let Ok(entries) = std::fs::read_dir(target.join("xtask").join("clusters")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| load(target, &e.file_name().to_string_lossy()))
        .collect()
}
