//! From a packed rootfs to an image: `podman import --change ...`, image ids, and removing the
//! image a `--force` build replaced.
//!
//! The import changes the engine's state, so it is uninterruptible like every such command
//! (ARCHITECTURE.md): never signalled, output to files, and therefore without a time limit.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::recipes::{Recipe, DESCRIPTION};
use crate::exec::process::{Cmd, Uninterruptible};
use crate::exec::progress::{Line, Progress};
use crate::host::tools::Engine;

/// `podman import --change ... --message ... TAR REFERENCE`.
pub fn import_cmd(
    engine: &Engine,
    changes: &[String],
    tar: &Path,
    reference: &str,
) -> Cmd<Uninterruptible> {
    let mut c = engine.cmd().arg("import");
    for change in changes {
        c = c.arg("--change").arg(change);
    }
    c.arg("--message")
        .arg(DESCRIPTION)
        .arg(tar)
        .arg(reference)
        .uninterruptible()
}

/// What one import needs.
pub struct Import<'a> {
    pub engine: &'a Engine,
    pub recipe: &'a Recipe,
    pub owner: &'a str,
    pub created: u64,
}

impl Import<'_> {
    /// Imports `tar` as the recipe's image; the line shows podman's output.
    pub fn run(&self, tar: &Path, line: &Arc<Line>) -> Result<()> {
        let reference = self.recipe.reference;
        line.state("importing", reference);
        let changes = self.recipe.changes(self.owner, self.created);
        let l = Arc::clone(line);
        import_cmd(self.engine, &changes, tar, reference)
            .run_streaming(move |s| l.detail(s))
            .with_context(|| {
                format!("importing {reference} failed; check `podman info` and free disk space")
            })?;
        Ok(())
    }
}

/// The image id of `reference`, or `None` when there is no such image.
pub fn image_id(engine: &Engine, reference: &str) -> Result<Option<String>> {
    if engine.is_podman() {
        let out = engine.cmd().args(["image", "exists", reference]).output()?;
        match out.status.code() {
            Some(0) => {}
            Some(1) => return Ok(None),
            _ => bail!(
                "`podman image exists {reference}` failed: {}; check podman with `podman info`",
                out.tail(5)
            ),
        }
    }
    let out = engine
        .cmd()
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string))
}

/// The image's size, for the progress line.
pub fn image_size(engine: &Engine, reference: &str) -> String {
    engine
        .cmd()
        .args(["image", "inspect", "--format", "{{.Size}}", reference])
        .read()
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(crate::cmd::clean_images::human_bytes)
        .unwrap_or_else(|| "size unknown".to_string())
}

/// After `--force`: removes the image the new one replaced, when it is a stand-in and unused.
pub fn remove_replaced(engine: &Engine, reference: &str, old: &str, progress: &Progress) {
    let new = image_id(engine, reference).ok().flatten();
    if new.as_deref() == Some(old) {
        return;
    }
    // Selected by our stand-in label only, like every removal (engine.rs).
    let old_id = old.trim_start_matches("sha256:");
    let ours: Vec<_> = match engine.images(&crate::plan::labels::Filter::standins()) {
        Ok(all) => all
            .into_iter()
            .filter(|i| i.id.starts_with(old_id) || old_id.starts_with(i.id.as_str()))
            .collect(),
        Err(_) => return,
    };
    if ours.is_empty() || !ours.iter().all(|i| i.tags.is_empty()) {
        return;
    }
    if let Err(e) = engine.remove_images(&ours) {
        progress.println(&format!(
            "the replaced image {old} of {reference} was kept ({}); `cargo xtask clean-images` does not touch stand-ins: remove it with `podman rmi {old}` when unused",
            format!("{e:#}").lines().last().map(str::trim).unwrap_or("in use")
        ));
    }
}
