//! Building stand-ins: one build per workspace at a time (a lock), the shared base rootfs, then
//! every image in its own thread (copy, install, pack, import), each on its own progress line.
//! A failed image does not stop the others; the error names every failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::guards::{DirLock, Work};
use super::import::{image_size, remove_replaced, Import};
use super::recipes::{Recipe, SUITE};
use super::{mirror, rootfs};
use crate::exec::progress::{Line, Progress};
use crate::host::tools::Engine;

const INTERRUPTED: &str =
    "interrupted: nothing half-built was kept; run `sudo -E cargo xtask standins` again to finish";

/// One image to build: its recipe, its progress line, and the id of the image it replaces.
pub struct Job {
    pub recipe: Recipe,
    pub line: Arc<Line>,
    pub old_id: Option<String>,
}

/// What every image of one build shares.
struct Shared<'a> {
    engine: &'a Engine,
    /// `target/xtask/standins`: the base, the work trees and tars.
    dir: PathBuf,
    base: PathBuf,
    /// The owner and created labels.
    owner: String,
    created: u64,
    progress: &'a Progress,
}

/// Builds every job: the base rootfs first, then the images in parallel.
pub fn build_all(
    engine: &Engine,
    dir: &Path,
    todo: &[Job],
    force: bool,
    progress: &Progress,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = DirLock::take(&dir.join(".lock"))?;
    let base = match prepare_base(dir, todo, force, progress) {
        Ok(base) => base,
        // A debootstrap stopped by Ctrl-C is no mirror problem.
        Err(_) if crate::exec::signals::interrupted() => bail!("{INTERRUPTED}"),
        Err(e) => return Err(e),
    };
    let shared = Shared {
        engine,
        dir: dir.to_path_buf(),
        base,
        owner: crate::plan::facts::sanitize_user(&crate::host::facts::login_name()),
        created: crate::host::facts::unix_now(),
        progress,
    };
    let results = build_in_threads(&shared, todo);
    if crate::exec::signals::interrupted() {
        bail!("{INTERRUPTED}");
    }
    summarize(&results)
}

/// The base rootfs from the host's mirror; on failure every line says so.
fn prepare_base(dir: &Path, todo: &[Job], force: bool, progress: &Progress) -> Result<PathBuf> {
    let lines: Vec<Arc<Line>> = todo.iter().map(|j| Arc::clone(&j.line)).collect();
    let base = mirror::host_mirror(SUITE)
        .and_then(|m| rootfs::ensure_base(dir, &m, force, &lines, progress));
    if base.is_err() {
        for l in &lines {
            l.finish(false, "failed: no base rootfs");
        }
    }
    base
}

fn build_in_threads(shared: &Shared, todo: &[Job]) -> Vec<(Recipe, Result<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .iter()
            .map(|job| (job.recipe, s.spawn(move || build_reported(shared, job))))
            .collect();
        handles
            .into_iter()
            .map(|(r, h)| {
                let res = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the build thread panicked")));
                (r, res)
            })
            .collect()
    })
}

/// [`build_one`], its outcome on its line.
fn build_reported(shared: &Shared, job: &Job) -> Result<String> {
    let started = Instant::now();
    let res = build_one(shared, job);
    match &res {
        Ok(size) => job.line.finish(
            true,
            &format!(
                "built {} ({size}) in {}s",
                job.recipe.reference,
                started.elapsed().as_secs()
            ),
        ),
        Err(e) => {
            let first = format!("{e:#}");
            let first = first.lines().next().unwrap_or_default().to_string();
            job.line.finish(false, &format!("failed: {first}"));
        }
    }
    res
}

/// One image: copy the base, install, clean, pack, import. Returns the image size.
fn build_one(shared: &Shared, job: &Job) -> Result<String> {
    let r = &job.recipe;
    let work = Work::new(&shared.dir, r.service, shared.progress)?;
    rootfs::make(r, &shared.base, &work.root, &job.line)?;
    rootfs::pack(&work.root, &work.tar, &job.line)?;
    // The tree is not needed any more: free the disk space before the engine copies the tar.
    work.remove_root()?;
    rootfs::stop_if_interrupted()?;
    let import = Import {
        engine: shared.engine,
        recipe: r,
        owner: &shared.owner,
        created: shared.created,
    };
    import.run(&work.tar, &job.line)?;
    drop(work);
    if let Some(old) = &job.old_id {
        remove_replaced(shared.engine, r.reference, old, shared.progress);
    }
    Ok(image_size(shared.engine, r.reference))
}

fn summarize(results: &[(Recipe, Result<String>)]) -> Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(r, res)| res.as_ref().err().map(|e| format!("{}: {e:#}", r.service)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} stand-ins failed:\n{}\nfix the cause above and run `sudo -E cargo xtask standins` again \
             (images that were built are kept and skipped)",
            failed.len(),
            results.len(),
            failed.join("\n")
        );
    }
    Ok(())
}
