//! `cargo xtask`: parses the command line and hands over to the module of each command.

mod check;
mod config;
mod dag;
mod doctor;
mod engine;
mod flags;
mod labels;
mod ports;
mod process;
mod progress;
mod record;
mod report;
mod signals;
mod tag;
mod tags;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::config::Config;
use crate::flags::Command;

fn main() -> ExitCode {
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
    let config_path = args.config.clone().unwrap_or_else(default_config);
    let load = || Config::load(&config_path);
    match &args.command {
        Command::Tag(a) => tag::run(&load()?, a)?,
        Command::Check(_) => check::run(&load()?)?,
        Command::Ports(_) => ports::run(&load()?)?,
        Command::Doctor(_) => doctor::run()?,
        _ => anyhow::bail!("not implemented yet"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `infra.toml` at the root of the repository this xtask was built from.
fn default_config() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    root.join("infra.toml")
}
