//! `cargo xtask clean-images`: removes old test images this tool created, and only those.
//!
//! Selection is by label only: an image must carry `io.kubernaut.xtask.run` (stand-ins and
//! anything foreign never do) and, unless `--all-users`, the current user as owner. Images a
//! container uses are skipped and named. Removal is one `rmi` for all of them.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::config::{parse_duration, Config};
use crate::flags;
use crate::host::disk::human_bytes;
use crate::host::engine::{ImageInfo, Ours};
use crate::host::facts::{login_name, unix_now};
use crate::host::preflight::human_age;
use crate::host::removal;
use crate::host::tools::{self, Need};
use crate::plan::facts::sanitize_user;
use crate::plan::labels::{self, Filter};

/// What to remove and what to skip, from a listing (pure).
pub fn select(
    images: Vec<Ours<ImageInfo>>,
    now: u64,
    older_than: u64,
    in_use: &BTreeSet<String>,
) -> (Vec<Ours<ImageInfo>>, Vec<Ours<ImageInfo>>) {
    let old: Vec<Ours<ImageInfo>> = images
        .into_iter()
        .filter(|i| i.created > 0 && now.saturating_sub(i.created) >= older_than)
        .collect();
    old.into_iter()
        .partition(|i| !in_use.iter().any(|u| removal::used_by(i, u)))
}

pub fn run(config: &Config, args: &flags::CleanImages) -> Result<()> {
    // The flag first: a typo is reported without asking any engine.
    let older = parse_duration(&args.older_than).context("--older-than")?;
    let engine = tools::require(&[Need::Engine])?.context("no container engine")?;
    let owner = sanitize_user(&login_name());
    let mut filter = if args.all_users {
        Filter::any_run()
    } else {
        Filter::owner(&owner)
    };
    if let Some(s) = &args.service {
        config.component(s)?;
        filter = filter.and(labels::SERVICE, s);
    }
    let target = crate::exec::record::target_dir(&config.root);
    let owner_only = (!args.all_users).then_some(owner.as_str());
    if args.service.is_none() {
        cache::age_out(&engine, &target, owner_only, older.as_secs(), args.dry_run)?;
    }
    let images = engine.images(&filter)?;
    let in_use: BTreeSet<String> = engine.images_in_use()?.into_iter().collect();
    let now = unix_now();
    let (remove, skipped) = select(images, now, older.as_secs(), &in_use);
    for i in &skipped {
        println!("skipped {} (used by a container)", describe(i, now));
    }
    // A run in progress may not have started the container of an image it just built.
    let (live, remove): (Vec<_>, Vec<_>) = remove.into_iter().partition(|i| {
        let pid = i
            .labels
            .get(labels::PID)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        crate::exec::process::pid_alive(pid)
    });
    for i in &live {
        println!(
            "skipped {} (its run {} is in progress)",
            describe(i, now),
            i.labels.get(labels::RUN).map_or("?", String::as_str)
        );
    }
    if remove.is_empty() {
        println!(
            "no test images of {} older than {} to remove",
            if args.all_users {
                "any user".to_string()
            } else {
                owner.clone()
            },
            args.older_than
        );
        return Ok(());
    }
    let bytes: u64 = remove.iter().map(|i| i.size).sum();
    if args.dry_run {
        for i in &remove {
            println!("would remove {}", describe(i, now));
        }
        println!(
            "would remove {} images, up to {} (layers shared with other images stay)",
            remove.len(),
            human_bytes(bytes)
        );
        return Ok(());
    }
    let before = engine.image_store_bytes();
    let result = engine.remove_images(&remove);
    // Count what is really gone (a concurrent run may have started using one meanwhile).
    let still: BTreeSet<String> = engine
        .images(&filter)?
        .iter()
        .map(|i| i.id.clone())
        .collect();
    let gone: Vec<&Ours<ImageInfo>> = remove.iter().filter(|i| !still.contains(&i.id)).collect();
    for i in &gone {
        println!("removed {}", describe(i, now));
    }
    let listed: u64 = gone.iter().map(|i| i.size).sum();
    match (before, engine.image_store_bytes()) {
        (Some(b), Some(a)) => println!(
            "removed {} images, freed {} (image store {} -> {})",
            gone.len(),
            human_bytes(b.saturating_sub(a)),
            human_bytes(b),
            human_bytes(a)
        ),
        _ => println!(
            "removed {} images, freed up to {} (layers shared with other images stay)",
            gone.len(),
            human_bytes(listed)
        ),
    }
    if let Err(e) = result {
        if gone.len() < remove.len() {
            return Err(e.context(format!(
                "{} images could not be removed",
                remove.len() - gone.len()
            )));
        }
    }
    Ok(())
}

mod cache;

fn describe(i: &ImageInfo, now: u64) -> String {
    let name = i
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{} (dangling)", i.short_id()));
    format!(
        "{name} [{}, owner {}, {} old, {}]",
        i.labels.get(labels::SERVICE).map_or("?", String::as_str),
        i.labels.get(labels::OWNER).map_or("?", String::as_str),
        human_age(now.saturating_sub(i.created)),
        human_bytes(i.size)
    )
}
