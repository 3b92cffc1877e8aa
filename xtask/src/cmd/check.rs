//! `cargo xtask check`: validates `infra.toml` and reports every error found.

use anyhow::Result;

use crate::config::{ComponentKind, Config};

/// Prints a one-line summary of a valid file (loading already reported any errors).
pub fn run(config: &Config) -> Result<()> {
    let count =
        |f: fn(&ComponentKind) -> bool| config.components.values().filter(|c| f(&c.kind)).count();
    let infra = count(|k| matches!(k, ComponentKind::Infra { .. }));
    let services = count(|k| matches!(k, ComponentKind::Service(_)));
    let jobs = count(|k| matches!(k, ComponentKind::Job { .. }));
    let host_ports: usize = config
        .consumers
        .values()
        .map(|c| c.integration.len() + c.e2e.len())
        .sum();
    println!(
        "{}: ok ({services} services, {infra} infrastructure, {jobs} jobs, {} consumers, {host_ports} host ports, all unique)",
        config.file.display(),
        config.consumers.len()
    );
    Ok(())
}
