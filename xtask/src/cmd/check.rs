//! `cargo xtask check`: validates `infra.toml` and reports every error found.

use anyhow::Result;

use crate::config::{Config, Source};

/// Prints a one-line summary of a valid file (loading already reported any errors).
pub fn run(config: &Config) -> Result<()> {
    let count =
        |f: fn(&Source) -> bool| config.components.values().filter(|c| f(&c.source)).count();
    let infra = count(|k| matches!(k, Source::Image { .. }));
    let services = count(|k| matches!(k, Source::Rust(_) | Source::Dockerfile { .. }));
    let jobs = count(|k| matches!(k, Source::Job { .. }));
    let host_ports: usize = config
        .consumers
        .values()
        .map(|c| {
            let i = c.integration.as_ref();
            i.map_or(0, |t| t.ports.len() + t.own_ports.len())
                + c.e2e.as_ref().map_or(0, |t| t.ports.len())
        })
        .sum();
    println!(
        "{}: ok ({services} services, {infra} infrastructure, {jobs} jobs, {} consumers, {host_ports} host ports, all unique)",
        config.file.display(),
        config.consumers.len()
    );
    Ok(())
}
