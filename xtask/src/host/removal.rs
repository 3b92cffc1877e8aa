//! Removing what runs created: always selected by our labels (see `labels::Filter` and
//! `engine::Ours`), never by name alone. Used by every teardown, `--down`, stale-run removal,
//! `clean --run` and `clean --orphans`.

use std::borrow::Borrow;
use std::fmt;

use anyhow::Result;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::host::engine::{ImageInfo, Ours};
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

/// Whether `used` (an id, a short id, or a reference as `ps` shows it) names this image.
pub fn used_by(i: &ImageInfo, used: &str) -> bool {
    let id_match = used.len() >= 12
        && used.chars().all(|c| c.is_ascii_hexdigit())
        && (i.id.starts_with(used) || used.starts_with(&i.id));
    id_match
        || i.tags
            .iter()
            .any(|t| t == used || t.strip_prefix("localhost/") == Some(used))
}

/// Cached images that a newer image of their key replaced: a `--rebuild`, or two runs
/// building one key at once, moves the key's cache name to the new image and leaves the old
/// one without any name. Such an image is never looked up again (lookups go by the cache name
/// while an image carries it), so it goes at once, unless a container uses it. One with a
/// run's name, whose key no image names, or that another listed image was built on (a
/// layered build's intermediate image), is not selected.
pub fn superseded<'a, I: Borrow<ImageInfo>>(
    images: &'a [I],
    in_use: &BTreeSet<String>,
) -> Vec<&'a I> {
    let key = |i: &ImageInfo| i.labels.get(labels::CACHE_KEY).cloned().unwrap_or_default();
    let named: BTreeSet<String> = images
        .iter()
        .map(Borrow::borrow)
        .filter(|i| i.tags.iter().any(|t| t.starts_with(labels::CACHE_NAMES)))
        .map(key)
        .collect();
    let parents: BTreeSet<&str> = images.iter().map(|i| i.borrow().parent.as_str()).collect();
    images
        .iter()
        .filter(|i| {
            let i: &ImageInfo = (*i).borrow();
            i.tags.is_empty()
                && !parents.contains(i.id.as_str())
                && !key(i).is_empty()
                && named.contains(&key(i))
                && !in_use.iter().any(|u| used_by(i, u))
        })
        .collect()
}

/// Removes the superseded cached images among those `filter` selects (see [`superseded`]);
/// the images removed.
pub fn remove_superseded(engine: &Engine, filter: &Filter) -> Result<Vec<Ours<ImageInfo>>> {
    let images = engine.images(filter)?;
    if images.iter().all(|i| !i.tags.is_empty()) {
        return Ok(Vec::new());
    }
    let in_use: BTreeSet<String> = engine.images_in_use()?.into_iter().collect();
    let gone: Vec<Ours<ImageInfo>> = superseded(&images, &in_use).into_iter().cloned().collect();
    if !gone.is_empty() {
        engine.remove_images(&gone)?;
    }
    Ok(gone)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(id: &str, key: &str, tags: &[&str]) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: [
                (labels::CACHE.to_string(), "1".to_string()),
                (labels::CACHE_KEY.to_string(), key.to_string()),
            ]
            .into(),
            size: 1,
            created: 0,
            parent: String::new(),
        }
    }

    #[test]
    fn only_an_image_a_newer_one_of_its_key_replaced_is_superseded() {
        let name = "localhost/xtask-cache/postgres-data:k1";
        let images = vec![
            // The key's image now, and the one a --rebuild left without a name.
            cached("1111111111111111", "k1", &[name]),
            cached("2222222222222222", "k1", &[]),
            // Still named by a live run: stays.
            cached(
                "3333333333333333",
                "k1",
                &["localhost/postgres-data:notification-1884d074"],
            ),
            // A key no image names (its name was taken off): lookups find it by label.
            cached("4444444444444444", "k2", &[]),
            // Replaced, but a container runs from it.
            cached("5555555555555555", "k1", &[]),
            // A layered build's intermediate image, under the key's image now.
            cached("6666666666666666", "k1", &[]),
        ];
        let mut images = images;
        images[0].parent = "6666666666666666".into();
        let in_use: BTreeSet<String> = ["555555555555".to_string()].into();
        let ids: Vec<&str> = superseded(&images, &in_use)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["2222222222222222"]);
        assert!(
            superseded(&images[1..], &in_use).is_empty(),
            "no image names k1"
        );
    }

    #[test]
    fn in_use_by_id_or_reference() {
        let i = ImageInfo {
            id: "0123456789abcdef0123".into(),
            tags: vec!["localhost/datastorage:gateway-1884d074".into()],
            labels: Default::default(),
            size: 1,
            created: 1,
            parent: String::new(),
        };
        assert!(used_by(&i, "0123456789abcdef0123"));
        assert!(used_by(&i, "0123456789ab"));
        assert!(used_by(&i, "localhost/datastorage:gateway-1884d074"));
        assert!(!used_by(&i, "01234"), "too short to be an id");
        assert!(!used_by(&i, "localhost/datastorage:gateway-ffffffff"));
    }
}
