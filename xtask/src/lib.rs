//! `cargo xtask`: parses the command line and hands over to the module of each command. A
//! library, which `main.rs` only calls: cargo starts compiling a library as soon as its
//! dependencies' metadata is ready (pipelining), a binary only when they are fully built.

mod cmd;
mod exec;
mod flags;
mod host;
mod standins;

// The pure layers live in their own crate (xtask/model); at the root here they keep their
// paths: `crate::config`, `crate::plan`, `crate::graph`.
use xtask_model::{config, graph, plan};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config::Config;
use crate::flags::Command;

/// The whole program: `main.rs` calls this and nothing else.
pub fn main() -> ExitCode {
    let args = flags::Xtask::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: flags::Xtask) -> Result<ExitCode> {
    if args.no_install {
        // Children (the runs `cargo xtask test` starts) inherit the refusal. No other thread
        // runs yet.
        std::env::set_var("XTASK_NO_INSTALL", "1");
    }
    let config_path = args.config.clone().unwrap_or_else(default_config);
    let load = || Config::load(&config_path);
    let load_with = |sets: &[String]| -> Result<Config> {
        let mut c = load()?;
        c.apply_overrides(sets)?;
        Ok(c)
    };
    match &args.command {
        Command::Tag(a) => cmd::tag::run(&load()?, a)?,
        Command::Check(_) => cmd::check::run(&load()?)?,
        Command::Ports(_) => cmd::ports::run(&load()?)?,
        Command::Doctor(_) => cmd::doctor::run(load().ok().as_ref())?,
        Command::Standins(a) => standins::run(
            &load()?,
            a,
            &exec::progress::Progress::new(args.progress, 10),
        )?,
        Command::Integration(a) => {
            return cmd::integration::run(&load_with(&a.set)?, a, args.progress)
        }
        Command::E2e(a) => return cmd::e2e::run(&load_with(&a.set)?, a, args.progress),
        Command::Cluster(a) => cmd::cluster::run(&load()?, a)?,
        Command::Render(a) => cmd::e2e::render(&load_with(&a.set)?, a)?,
        Command::Clean(a) => cmd::clean::run(&load()?, a)?,
        Command::CleanImages(a) => cmd::clean_images::run(&load()?, a)?,
        Command::Test(a) => return cmd::test::run(&load()?, a, args.progress),
        Command::Bench(a) => cmd::bench::run(&load()?, a)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `infra.toml` at the root of the repository this xtask was built from.
fn default_config() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    root.join("infra.toml")
}
