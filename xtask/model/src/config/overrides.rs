//! `--set` on the command line: changes one run without editing the file. They are kept apart
//! from the components (in [`Config::sets`]) and applied by `Config::stack` after the
//! consumer's own `override`, so the command line always wins.

use anyhow::{Context, Result};

use super::{names, parse_duration, placeholder_component, placeholders, suggest, Config};

const EXPECTED: &str = "expected <component>.env.<VAR>=<value> or <component>.timeout=<duration>";

impl Config {
    /// Applies `--set` overrides: `<component>.env.<VAR>=<value>` (the value may use the same
    /// `{...}` templates as the file) or `<component>.timeout=<duration>`.
    pub fn apply_overrides(&mut self, sets: &[String]) -> Result<()> {
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .with_context(|| format!("--set `{set}`: {EXPECTED}"))?;
            let parts: Vec<&str> = key.splitn(3, '.').collect();
            if !self.components.contains_key(parts[0]) {
                let known = self.components.keys().cloned().collect::<Vec<_>>();
                anyhow::bail!(
                    "--set `{set}`: unknown component `{}`{}; known: {}",
                    parts[0],
                    suggest(parts[0], &known),
                    known.join(", ")
                );
            }
            let o = self.sets.entry(parts[0].to_string()).or_default();
            match parts.as_slice() {
                [_, "env", var] if !var.is_empty() => {
                    names::env_var(var).map_err(|e| anyhow::anyhow!("--set `{set}`: {e}"))?;
                    check_template(set, value)?;
                    o.env.insert(var.to_string(), value.to_string());
                }
                [_, "timeout"] => {
                    o.timeout =
                        Some(parse_duration(value).with_context(|| format!("--set `{set}`"))?)
                }
                _ => anyhow::bail!("--set `{set}`: {EXPECTED}"),
            }
        }
        Ok(())
    }
}

/// The placeholders a value on the command line may use.
fn check_template(set: &str, value: &str) -> Result<()> {
    for p in placeholders(value) {
        let ok = matches!(
            p.as_str(),
            "postgres.user" | "postgres.password" | "postgres.database"
        ) || placeholder_component(&p).is_some();
        if !ok {
            anyhow::bail!("--set `{set}`: unknown placeholder `{{{p}}}`");
        }
    }
    Ok(())
}
