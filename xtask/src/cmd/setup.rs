//! What the commands that run containers (`integration`, `e2e`, `test`, `bench`) do first, on
//! any machine, saying what they do: pick the engine, install or name the system packages it
//! needs, decide every third-party image (stand-ins where nothing can be pulled), find the podman
//! settings this host needs by trying, and check container name resolution. All before anything
//! of a run is created; a failure stops with the one command that fixes it.
//!
//! The choices reach every later engine call and child process through this process's
//! environment (`CONTAINERS_CONF`, `XTASK_IMAGE_*`), set here once, before any other thread.

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::progress::Progress;
use crate::host::packages::{self, Package};
use crate::host::settings;
use crate::host::tools::{self, Engine, Tool};
use crate::standins::resolve;

/// What the command will do with the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A run of stacks (integration, e2e, bench).
    Run,
    /// `cargo xtask test`: also what the test suite itself calls (docker, a registry,
    /// debootstrap).
    Test,
}

/// Whether installing packages was refused (`--no-install` sets `XTASK_NO_INSTALL` for this
/// process and its children).
pub fn install_refused() -> bool {
    std::env::var("XTASK_NO_INSTALL").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off" | "n" | "f"
        )
    })
}

/// Prepares the host and returns the engine to use.
pub fn prepare(config: &Config, purpose: Purpose) -> Result<Engine> {
    let no_install = install_refused();
    let say = |s: &str| Progress::plain().println(s);
    let engine = choose_engine(purpose, no_install, &say)?;
    images(config, &engine, &say)?;
    if engine.is_podman() {
        podman_settings(config, &engine, &say)?;
        if let Some(problem) = engine.name_resolution_problem(Some(&engine_dir(config))) {
            bail!("{problem}\nnothing was started (`cargo xtask doctor` checks this too)");
        }
    }
    Ok(engine)
}

/// `XTASK_ENGINE` if set; else the engine that answers (podman first); else podman, installed
/// now (root on apt) or named with its install command. Says which engine, and why.
fn choose_engine(purpose: Purpose, no_install: bool, say: &dyn Fn(&str)) -> Result<Engine> {
    let choice = std::env::var("XTASK_ENGINE").ok();
    let (tool, why) = tools::pick(
        choice.as_deref(),
        &|| tools::presence(Tool::Podman),
        &|| tools::presence(Tool::Docker),
    )?;
    let docker = tool == Tool::Docker;
    let needed: Vec<Package> = match (purpose, docker) {
        (Purpose::Test, _) => packages::TEST.to_vec(),
        (Purpose::Run, false) => packages::PODMAN_RUN.to_vec(),
        // A docker run needs a docker that answers (checked below) and git; podman's network
        // pieces are podman's.
        (Purpose::Run, true) => vec![packages::GIT],
    };
    packages::ensure(&needed, no_install, say)?;
    let engine = Engine::detect_in(Some(tool.name()), None)?;
    if let Err(silent) = engine.answer() {
        if docker {
            bail!(
                "docker does not answer at {} ({silent}); start one (or set DOCKER_HOST), or \
                 unset XTASK_ENGINE to use podman",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into())
            );
        }
    }
    say(&format!("engine: {} ({why})", engine.describe()));
    Ok(engine)
}

/// What a dry run shows of [`prepare`]'s image decisions, without pulling or building: the
/// same choice where it can be made from what is local, the stand-in where the real run would
/// build it. Points this process at them like `prepare`, so the dry run's commands are the run's.
pub fn preview_images(config: &Config, engine: &Engine) -> Result<Vec<String>> {
    struct NoPull<'a>(resolve::Local<'a>);
    impl resolve::Store for NoPull<'_> {
        fn exists(&self, r: &str) -> bool {
            self.0.exists(r)
        }
        fn pull(&self, _: &str) -> std::result::Result<(), String> {
            Err("the dry run pulls nothing".into())
        }
    }
    let env = |k: &str| std::env::var(k).ok();
    let mut notes = Vec::new();
    let mut build = |needed: &[(crate::standins::Recipe, String)]| -> Result<()> {
        for (r, _) in needed {
            notes.push(format!(
                "the run would pull or build the stand-in {}",
                r.reference
            ));
        }
        Ok(())
    };
    let choices = resolve::resolve(
        config,
        &env,
        &NoPull(resolve::Local::check(engine, config)),
        &mut build,
    )?;
    point_at(config, &choices);
    Ok(notes)
}

fn point_at(config: &Config, choices: &[resolve::Choice]) {
    for c in choices {
        let image = &config.images[&c.image];
        if let (Some(var), resolve::Source::StandIn { .. }) = (&image.env, &c.source) {
            // Before any other thread: see the module documentation.
            std::env::set_var(var, &c.reference);
        }
    }
}

/// Decides every `[images.*]` (stand-ins where nothing can be pulled) and points this process
/// at them through their `XTASK_IMAGE_*` variables.
fn images(config: &Config, engine: &Engine, say: &dyn Fn(&str)) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let mut build = |needed: &[(crate::standins::Recipe, String)]| -> Result<()> {
        let names: Vec<&str> = needed.iter().map(|(r, _)| r.service).collect();
        say(&format!(
            "building stand-in images for {} (no registry answered: {}); once, then cached",
            names.join(", "),
            needed
                .first()
                .map(|(_, why)| why.as_str())
                .unwrap_or_default()
        ));
        if !packages::is_root() {
            bail!(
                "stand-ins are built as root (debootstrap, chroot): run `sudo -E cargo xtask \
                 standins` once, or set {} to images you have",
                config
                    .images
                    .values()
                    .filter_map(|i| i.env.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        packages::ensure(&[packages::DEBOOTSTRAP, packages::MOUNT], false, say)?;
        let recipes: Vec<_> = needed.iter().map(|(r, _)| *r).collect();
        crate::standins::build(config, engine, &recipes, false, &Progress::plain())
    };
    let choices = resolve::resolve(
        config,
        &env,
        &resolve::Local::check(engine, config),
        &mut build,
    )?;
    for c in &choices {
        if let Some(line) = c.line(&config.images[&c.image]) {
            say(&line);
        }
    }
    point_at(config, &choices);
    Ok(())
}

/// `target/xtask/engine`: what was found about the engine on this host (settings, backend).
fn engine_dir(config: &Config) -> std::path::PathBuf {
    crate::exec::record::target_dir(&config.root)
        .join("xtask")
        .join("engine")
}

/// Finds (or reads back) what podman needs here and points this process at it.
fn podman_settings(config: &Config, engine: &Engine, say: &dyn Fn(&str)) -> Result<()> {
    let runtime = config
        .images
        .get("runtime")
        .map(|i| i.resolve(&|k| std::env::var(k).ok()))
        .context("infra.toml has no [images.runtime]; it is the image podman is tried with")?;
    let s = settings::detect(&engine.program, &engine_dir(config), &runtime, false)?;
    if s.source == settings::Source::Tried {
        say(&format!("podman settings for this host: {}", s.describe()));
    }
    match &s.conf {
        Some(conf) if s.source != settings::Source::User => {
            std::env::set_var("CONTAINERS_CONF", conf)
        }
        _ => {}
    }
    Ok(())
}

/// Refuses a run on a nearly full disk and says when space is low (both tiers, before
/// anything is created); `runs_dir` is `target/xtask/runs`.
pub fn disk_check(engine: &Engine, runs_dir: &std::path::Path) -> Result<()> {
    let target = runs_dir.parent().unwrap_or(runs_dir);
    if let Some(line) = crate::host::disk::check(engine, target)? {
        Progress::plain().println(&line);
    }
    Ok(())
}
