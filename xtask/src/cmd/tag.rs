//! `cargo xtask tag`: prints the tag a run would generate.

use anyhow::{bail, Result};

use crate::config::{Config, Source};
use crate::flags;
use crate::plan::facts::Facts;

pub fn run(config: &Config, args: &flags::Tag) -> Result<()> {
    let facts = crate::host::facts::gather(&config.root)?;
    println!("{}", tag(config, args, &facts)?);
    Ok(())
}

/// The line `tag` prints, from facts gathered once.
pub fn tag(config: &Config, args: &flags::Tag, facts: &Facts) -> Result<String> {
    let component = config.component(&args.name)?;
    match &args.consumer {
        None => {
            if !matches!(
                component.source,
                Source::Rust(_) | Source::Dockerfile { .. }
            ) {
                bail!(
                    "`{}` is not a service, so it has no service tag; for an infrastructure image \
                     built for a consumer use `cargo xtask tag {} --consumer <service>`",
                    args.name,
                    args.name
                );
            }
            Ok(facts.service_tag(&args.name))
        }
        Some(consumer) => {
            config.consumer(consumer)?;
            if component.is_job() {
                bail!(
                    "`{}` is a job; it runs the image of `{}`",
                    args.name,
                    component.image_service().unwrap_or("?")
                );
            }
            Ok(facts.infra_ref(&args.name, consumer))
        }
    }
}
