//! Removing what runs created: always selected by our labels (see `labels::Filter` and
//! `engine::Ours`), never by name alone. Used by every teardown, `--down`, stale-run removal,
//! `clean --run` and `clean --orphans`.

use std::fmt;

use anyhow::Result;

use crate::engine::{ContainerInfo, ImageInfo, NetworkInfo, Ours};
use crate::labels::Filter;
use crate::tools::Engine;

/// What a selection found (and removed, unless it was a dry run).
#[derive(Debug, Default)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub images: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.images.is_empty()
    }
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "containers: {}; networks: {}; images: {}",
            list(&self.containers),
            list(&self.networks),
            list(&self.images)
        )
    }
}

/// Everything selected by `filter`: containers first, then networks, then images.
pub fn remove(engine: &Engine, filter: &Filter, dry_run: bool) -> Result<Removed> {
    let containers: Vec<Ours<ContainerInfo>> = engine.containers(filter)?;
    let networks: Vec<Ours<NetworkInfo>> = engine.networks(filter)?;
    let images: Vec<Ours<ImageInfo>> = engine.images(filter)?;
    let removed = Removed {
        containers: containers.iter().map(|c| c.name.clone()).collect(),
        networks: networks.iter().map(|n| n.name.clone()).collect(),
        images: images
            .iter()
            .flat_map(|i| {
                if i.tags.is_empty() {
                    vec![i.id.clone()]
                } else {
                    i.tags.clone()
                }
            })
            .collect(),
    };
    if !dry_run {
        engine.remove_containers(&containers)?;
        engine.remove_networks(&networks)?;
        engine.remove_images(&images)?;
    }
    Ok(removed)
}

/// Everything of one run.
pub fn remove_run(engine: &Engine, run_id: &str, dry_run: bool) -> Result<Removed> {
    remove(engine, &Filter::run(run_id), dry_run)
}
