//! Removing what runs created: always selected by our labels (see `labels::Filter` and
//! `engine::Ours`), never by name alone. Used by every teardown, `--down`, stale-run removal,
//! `clean --run` and `clean --orphans`.

use std::fmt;

use anyhow::Result;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::host::tools::Engine;
use crate::plan::labels::{self, Filter};

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

/// Everything selected by `filter`: containers first, then networks, then images. Each kind
/// is listed and removed on its own, so one failure does not leave the rest standing; the
/// error names every failure.
pub fn remove(engine: &Engine, filter: &Filter, dry_run: bool) -> Result<Removed> {
    let mut removed = Removed::default();
    let mut errors = Vec::new();
    match engine.containers(filter) {
        Ok(cs) => {
            removed.containers = cs.iter().map(|c| c.name.clone()).collect();
            if !dry_run {
                if let Err(e) = engine.remove_containers(&cs) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        Err(e) => errors.push(format!("listing containers: {e:#}")),
    }
    match engine.networks(filter) {
        Ok(ns) => {
            removed.networks = ns.iter().map(|n| n.name.clone()).collect();
            if !dry_run {
                if let Err(e) = engine.remove_networks(&ns) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        Err(e) => errors.push(format!("listing networks: {e:#}")),
    }
    match engine.images(filter) {
        Ok(is) => {
            removed.images = is
                .iter()
                .flat_map(|i| {
                    if i.tags.is_empty() {
                        vec![i.id.clone()]
                    } else {
                        i.tags.clone()
                    }
                })
                .collect();
            if !dry_run {
                if let Err(e) = engine.remove_images(&is) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        Err(e) => errors.push(format!("listing images: {e:#}")),
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(removed)
}

/// Run ids, with the pid label, of every container, network and image that `filter` selects.
pub fn labelled_runs(engine: &Engine, filter: &Filter) -> Result<BTreeMap<String, u32>> {
    let mut runs = BTreeMap::new();
    let mut note = |l: &BTreeMap<String, String>| {
        if let Some(run) = l.get(labels::RUN) {
            let pid = l.get(labels::PID).and_then(|p| p.parse().ok()).unwrap_or(0);
            runs.entry(run.clone()).or_insert(pid);
        }
    };
    for c in engine.containers(filter)? {
        note(&c.labels);
    }
    for n in engine.networks(filter)? {
        note(&n.labels);
    }
    for i in engine.images(filter)? {
        note(&i.labels);
    }
    Ok(runs)
}

/// Everything of one run.
pub fn remove_run(engine: &Engine, run_id: &str, dry_run: bool) -> Result<Removed> {
    remove(engine, &Filter::run(run_id), dry_run)
}

/// Everything of one run, and the names it gave cached images (read from its record in
/// `run_dir`: a cached image carries no run label, only the run's name for it; the image
/// itself stays for other runs and `clean-images`). The names go after the containers:
/// docker refuses to take a container's image's last name (two runs that built one key at
/// once leave the first image with only its run's name).
pub fn remove_run_recorded(
    engine: &Engine,
    run_dir: &Path,
    run_id: &str,
    dry_run: bool,
) -> Result<Removed> {
    let removed = remove_run(engine, run_id, dry_run);
    let untagged = untag_names(
        engine,
        &recorded_images(&run_dir.join("record.jsonl")),
        dry_run,
    );
    let mut removed = removed?;
    removed.images.extend(untagged?);
    Ok(removed)
}

/// Takes `names` off the cached images that carry them (only images selected by the cache
/// label, only the given names). The names are looked up, not every cached image: a shared
/// host keeps many, and listing them all cost a teardown seconds.
pub fn untag_names(
    engine: &Engine,
    names: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<String>> {
    let mut untagged = Vec::new();
    let mut errors = Vec::new();
    if names.is_empty() {
        return Ok(untagged);
    }
    let names_list: Vec<String> = names.iter().cloned().collect();
    for image in engine.images_named(&names_list, &Filter::cache())? {
        for name in image.tags.iter().filter(|t| names.contains(*t)) {
            untagged.push(format!("{name} (a name of a cached image)"));
            if !dry_run {
                if let Err(e) = engine.untag(&image, name) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(untagged)
}

/// The image names a run recorded before creating them.
pub fn recorded_images(record: &Path) -> BTreeSet<String> {
    crate::exec::record::read(record)
        .map(|r| {
            r.resources
                .into_iter()
                .filter_map(|e| match e {
                    crate::exec::record::Event::Image { reference } => Some(reference),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
