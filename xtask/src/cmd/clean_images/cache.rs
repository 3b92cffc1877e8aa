//! `clean-images` for the input cache: cached images (and the archives saved of them) that no
//! run has used for `--older-than` go; one that a run still names, or a container uses, stays.
//! Last use: the later of the image's `created` label and its key's use stamp in
//! `target/xtask/cache/used/`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;

use crate::exec::cache::Cache;
use crate::host::engine::{ImageInfo, Ours};
use crate::host::removal;
use crate::host::tools::Engine;
use crate::plan::labels::{self, Filter};

/// Why a cached image stays, or `None` when it goes.
pub fn keep(
    i: &ImageInfo,
    last_use: u64,
    now: u64,
    older: u64,
    in_use: &BTreeSet<String>,
) -> Option<String> {
    if now.saturating_sub(last_use) < older {
        return Some(format!(
            "used {} ago",
            crate::host::preflight::human_age(now.saturating_sub(last_use))
        ));
    }
    if let Some(name) = i.tags.iter().find(|t| !t.starts_with(labels::CACHE_NAMES)) {
        return Some(format!(
            "a run names it {name} (`cargo xtask clean --orphans` removes names of dead runs)"
        ));
    }
    if in_use.iter().any(|u| removal::used_by(i, u)) {
        return Some("used by a container".into());
    }
    None
}

/// Removes (or with `dry_run` lists) cached images and archives unused for `older` seconds.
pub fn age_out(
    engine: &Engine,
    target: &Path,
    owner: Option<&str>,
    older: u64,
    dry_run: bool,
) -> Result<usize> {
    let cache = Cache::open(target);
    let filter = match owner {
        Some(o) => Filter::cache().and(labels::OWNER, o),
        None => Filter::cache(),
    };
    let in_use: BTreeSet<String> = engine.images_in_use()?.into_iter().collect();
    let now = crate::host::facts::unix_now();
    let mut remove: Vec<Ours<ImageInfo>> = Vec::new();
    let images = engine.images(&filter)?;
    let replaced = replaced(engine, &cache, &images, &in_use, dry_run);
    for i in images.into_iter().filter(|i| !replaced.contains(&i.id)) {
        let key = i.labels.get(labels::CACHE_KEY).cloned().unwrap_or_default();
        let last = cache.last_use(&key).unwrap_or(0).max(i.created);
        let name = i.tags.first().cloned().unwrap_or_else(|| i.id.clone());
        match keep(&i, last, now, older, &in_use) {
            Some(why) => println!("kept cached {name} ({why})"),
            None => remove.push(i),
        }
    }
    for i in &remove {
        let name = i.tags.first().map_or(i.short_id(), String::as_str);
        println!(
            "{} cached {name}",
            if dry_run { "would remove" } else { "removed" }
        );
    }
    if !dry_run {
        engine.remove_images(&remove)?;
    }
    Ok(remove.len() + replaced.len() + archives(&cache, now, older, dry_run)?)
}

/// Removes (or lists) the cached images a newer image of their key replaced, whatever their
/// age (see `removal::superseded`); their ids. One that cannot go (an image built on it by
/// docker's legacy builder) is named and kept: the rest of the clean goes on.
fn replaced(
    engine: &Engine,
    cache: &Cache,
    images: &[Ours<ImageInfo>],
    in_use: &BTreeSet<String>,
    dry_run: bool,
) -> BTreeSet<String> {
    let gone: Vec<Ours<ImageInfo>> = removal::superseded(images, in_use)
        .into_iter()
        .cloned()
        .collect();
    for i in &gone {
        println!(
            "{} cached {} (a newer image of its key took its name)",
            if dry_run { "would remove" } else { "removed" },
            i.short_id()
        );
    }
    if !dry_run && !gone.is_empty() {
        // Their archives too, once the images are gone: no run copies them again.
        let forgotten = engine
            .remove_images(&gone)
            .and_then(|_| gone.iter().try_for_each(|i| cache.forget_archive(&i.id)));
        if let Err(e) = forgotten {
            println!("kept some of them: {e:#}");
        }
    }
    gone.iter().map(|i| i.id.clone()).collect()
}

/// Cached archives whose last copy is older than `older` (and partial saves and save locks of
/// an hour).
fn archives(cache: &Cache, now: u64, older: u64, dry_run: bool) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(cache.archives()) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let key = name
            .trim_end_matches(".partial")
            .trim_end_matches(".lock")
            .trim_end_matches(".tar");
        let mtime = e
            .metadata()?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let last = cache
            .last_use(&format!("archive-{key}"))
            .unwrap_or(0)
            .max(mtime);
        let limit = if name.ends_with(".partial") || name.ends_with(".lock") {
            3600.min(older)
        } else {
            older
        };
        if now.saturating_sub(last) < limit {
            continue;
        }
        n += 1;
        println!(
            "{} cached archive {name}",
            if dry_run { "would remove" } else { "removed" }
        );
        if !dry_run {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str]) -> ImageInfo {
        ImageInfo {
            id: "abcdef0123456789".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: Default::default(),
            size: 1,
            created: 0,
            parent: String::new(),
        }
    }

    #[test]
    fn cached_images_go_only_when_unused_and_unnamed() {
        let day = 86_400;
        let cached = image(&["localhost/xtask-cache/datastorage:0123456789abcdef"]);
        let none = BTreeSet::new();
        assert_eq!(keep(&cached, 0, 2 * day, day, &none), None);
        assert!(keep(&cached, day + day / 2, 2 * day, day, &none)
            .unwrap()
            .starts_with("used "));
        let named = image(&[
            "localhost/xtask-cache/datastorage:0123456789abcdef",
            "localhost/datastorage:notification-1884d074",
        ]);
        assert!(keep(&named, 0, 2 * day, day, &none)
            .unwrap()
            .contains("a run names it"));
        let used: BTreeSet<String> = ["abcdef012345".to_string()].into();
        assert_eq!(
            keep(&cached, 0, 2 * day, day, &used).unwrap(),
            "used by a container"
        );
    }
}
