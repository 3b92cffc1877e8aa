//! `cargo xtask standins`: local stand-ins for the third-party images of `infra.toml`, built from Debian packages.
//!
//! For hosts where no registry answers. One `debootstrap --variant=minbase` of Debian bookworm is
//! cached under `target/xtask/standins/`; every image starts from a copy of it, gets its packages
//! with `apt-get` in a chroot (proc mounted for that time only), is packed with `tar` and becomes
//! an image through the engine's `import --change ...` (podman or docker: docker's import takes
//! fewer instructions, see `import.rs`). The images are built in parallel, each on its own
//! progress line; images that exist are skipped unless `--force`.
//!
//! `infra.toml` is never edited: the command prints `export XTASK_IMAGE_...=...` lines on stdout
//! (everything else goes to stderr), so `eval "$(cargo xtask standins --print-env)"` points the
//! workspace at the stand-ins.
//!
//! - `recipes.rs`: what each image is (packages, files, image config);
//! - `mirror.rs`: the Debian mirror, from apt's own sources;
//! - `rootfs.rs`: base, chroot install, trimming, packing;
//! - `import.rs`: the tar becomes an image (per engine), image ids;
//! - `build.rs`: the lock, the base, the images in parallel;
//! - `guards.rs`: mounts, work trees and the lock, released on drop;
//! - `resolve.rs`: per image of a run: explicit, local, stand-in, pull, or build.

mod build;
mod guards;
mod import;
mod mirror;
mod recipes;
pub mod resolve;
mod rootfs;

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::{Config, Image};
use crate::exec::process::shell_quote;
use crate::exec::progress::Progress;
use crate::flags;
use crate::host::tools::{Engine, Need, Tool};

pub use recipes::{recipe, recipe_of, Recipe};

const NEED_ROOT: &str =
    "stand-ins need root for debootstrap and chroot; run as root, e.g. `sudo -E cargo xtask standins`";

pub fn run(config: &Config, args: &flags::Standins, progress: &Progress) -> Result<()> {
    let needs: &[Need] = if args.print_env {
        &[Need::Engine]
    } else {
        &[Need::Engine, Need::Tool(Tool::Debootstrap)]
    };
    let engine = crate::host::tools::require(needs)?
        .context("no container engine; run `cargo xtask doctor`")?;
    let wanted = wanted(config, progress);
    if args.print_env {
        return print_env(&engine, &wanted, progress);
    }
    let recipes: Vec<Recipe> = wanted.iter().map(|(r, _)| *r).collect();
    build(config, &engine, &recipes, args.force, progress)?;
    print_exports(&engine, &wanted, progress)?;
    Ok(())
}

/// The images of infra.toml we have a recipe for (the others are named on a line).
fn wanted<'a>(config: &'a Config, progress: &Progress) -> Vec<(Recipe, &'a Image)> {
    let mut wanted = Vec::new();
    for (name, image) in &config.images {
        match recipe_of(image) {
            Some(r) => wanted.push((r, image)),
            None => progress.println(&format!(
                "[images.{name}] names no stand-in (`standin = \"{}\"` picks a recipe); skipped",
                crate::config::STANDIN_RECIPES.join("\" | \"")
            )),
        }
    }
    wanted
}

/// Builds the stand-ins of `recipes` that do not exist yet (all of them with `force`), with the
/// engine in use (podman or docker). Needs root and debootstrap; says how to get them otherwise.
pub fn build(
    config: &Config,
    engine: &Engine,
    recipes: &[Recipe],
    force: bool,
    progress: &Progress,
) -> Result<()> {
    if !crate::host::packages::is_root() {
        bail!("{NEED_ROOT}");
    }
    crate::exec::signals::install(
        "the stand-in builds".to_string(),
        "run `cargo xtask standins` again to finish",
    )?;
    let mut todo = Vec::new();
    for r in recipes {
        let line = Arc::new(progress.line(r.service));
        match import::image_id(engine, r.reference)? {
            Some(_) if !force => line.finish(true, &format!("exists, skipped ({})", r.reference)),
            old_id => todo.push(build::Job {
                recipe: *r,
                line,
                old_id,
            }),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let dir = crate::exec::record::target_dir(&config.root)
        .join("xtask")
        .join("standins");
    build::build_all(engine, &dir, &todo, force, progress)
}

/// `--print-env`: the export lines of the stand-ins that exist; an error names missing ones.
fn print_env(engine: &Engine, wanted: &[(Recipe, &Image)], progress: &Progress) -> Result<()> {
    let missing = print_exports(engine, wanted, progress)?;
    if !missing.is_empty() {
        bail!(
            "stand-in images not built yet: {}; build them with `sudo -E cargo xtask standins`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Prints an export line (stdout) for every stand-in that exists; returns the missing ones.
fn print_exports(
    engine: &Engine,
    wanted: &[(Recipe, &Image)],
    progress: &Progress,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut lines = Vec::new();
    for (r, image) in wanted {
        if import::image_id(engine, r.reference)?.is_none() {
            missing.push(r.reference.to_string());
            continue;
        }
        match &image.env {
            Some(env) => lines.push(export_line(env, r.reference)),
            None => progress.println(&format!(
                "[images.{}] has no `env` in infra.toml, so it cannot be pointed at {} from the \
                 environment; add `env = \"XTASK_IMAGE_{}\"` there",
                image.name,
                r.reference,
                r.service.to_ascii_uppercase()
            )),
        }
    }
    if !lines.is_empty() {
        progress.println("to use the stand-ins: eval \"$(cargo xtask standins --print-env)\"");
        for l in &lines {
            println!("{l}");
        }
    }
    Ok(missing)
}

/// `export NAME=value`, quoted for a POSIX shell when needed.
pub fn export_line(env: &str, reference: &str) -> String {
    format!("export {env}={}", shell_quote(reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_are_shell_safe() {
        assert_eq!(
            export_line(
                "XTASK_IMAGE_POSTGRES",
                "localhost/xtask-standin/postgres:15-bookworm"
            ),
            "export XTASK_IMAGE_POSTGRES=localhost/xtask-standin/postgres:15-bookworm"
        );
        assert_eq!(export_line("X", "a b"), "export X='a b'");
    }
}
