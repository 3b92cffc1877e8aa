//! `cargo xtask doctor`: what this machine has and lacks for runs, and how to get it: the
//! system packages (found/missing, with the install command), the tools (kind, kubectl, ...)
//! with versions, the engine in use with its version and API version, the podman settings this
//! host needs (found by trying), and a smoke test of the engine for real (a network, a container
//! reached by name from another, a published port reached from the host, an image build).

use anyhow::Result;

use crate::config::Config;
use crate::host::packages;
use crate::host::smoke;
use crate::host::tools::{os_family, probe, Engine, Found, OsFamily, Tool};

pub fn run(config: Option<&Config>) -> Result<()> {
    let os = os_family();
    let found: Vec<Found> = Tool::ALL.iter().map(|t| probe(*t)).collect();
    let dns = Engine::detect_in(Some("podman"), None)
        .ok()
        .and_then(|e| e.name_resolution_problem(None));
    let picked = Engine::pick();
    let mut out = packages_report(os);
    let summary = picked.as_ref().ok().map(|(e, why)| (e.tool, why.as_str()));
    out.push_str(&report(&found, os, dns.as_deref(), summary));
    if let Ok((engine, why)) = &picked {
        out.push_str(&engine_report(engine, why, config, os));
    }
    print!("{out}");
    Ok(())
}

/// Every package a run or the test suite calls, found or missing, and one install command.
fn packages_report(os: OsFamily) -> String {
    let missing = packages::missing(packages::TEST, os);
    let mut out = String::from("system packages (what runs and `cargo xtask test` call):\n");
    for p in packages::TEST {
        let state = if missing.contains(p) {
            "MISSING"
        } else {
            "found"
        };
        out.push_str(&format!("  {:<16} {state:<8} {}\n", p.apt, p.why));
    }
    if !missing.is_empty() {
        let runs_lack = packages::missing(packages::PODMAN_RUN, os);
        out.push_str(&format!(
            "  install: {}\n  ({})\n",
            packages::install_command(&missing, os, packages::is_root()),
            if runs_lack.is_empty() {
                "integration and e2e runs have what they need; these are for `cargo xtask test`"
                    .to_string()
            } else if packages::may_install(os, crate::cmd::setup::install_refused()) {
                "`cargo xtask integration` and `test` install them themselves as root on this host"
                    .to_string()
            } else {
                "runs stop until they are installed".to_string()
            }
        ));
    }
    out.push('\n');
    out
}

/// The engine in use (and why), its version and API version, where it is reached, its builder,
/// podman's settings, and the smoke test.
fn engine_report(engine: &Engine, why: &str, config: Option<&Config>, os: OsFamily) -> String {
    let mut out = format!("\nengine in use: {} ({why})\n", engine.describe());
    if !engine.is_podman() {
        out.push_str(&format!(
            "  reached at: {}\n",
            std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "the default socket (DOCKER_HOST is not set)".into())
        ));
    }
    out.push_str(&format!("  builder:    {}\n", engine.builder().describe()));
    let Some(config) = config else {
        out.push_str(
            "smoke test: skipped (infra.toml could not be read; see `cargo xtask check`)\n",
        );
        return out;
    };
    let env = |k: &str| std::env::var(k).ok();
    let image = |name: &str| config.images.get(name).map(|i| i.resolve(&env));
    let standin = |name: &str| crate::standins::recipe(name).map(|r| r.reference.to_string());
    let local = |name: &str| {
        [image(name), standin(name)]
            .into_iter()
            .flatten()
            .find(|r| engine.image_exists(r))
    };
    let scratch = crate::exec::record::target_dir(&config.root).join("xtask");
    if engine.is_podman() {
        match local("runtime") {
            Some(img) => match crate::host::settings::detect(&engine.program, &scratch.join("engine"), &img, true) {
                Ok(s) => out.push_str(&format!("podman settings: {}\n", s.describe())),
                Err(e) => out.push_str(&format!("podman settings: PROBLEM: {e:#}\n")),
            },
            None => out.push_str("podman settings: not tried (no runtime image here yet; the first run builds the stand-ins)\n"),
        }
    }
    match (local("redis"), local("runtime")) {
        (Some(redis), Some(base)) => {
            if let Ok(s) = crate::host::settings::detect(
                &engine.program,
                &scratch.join("engine"),
                &base,
                false,
            ) {
                if let Some(conf) = &s.conf {
                    std::env::set_var("CONTAINERS_CONF", conf);
                }
            }
            out.push_str("smoke test:\n");
            let checks = smoke::run(engine, &smoke::Images { redis, base }, &scratch);
            out.push_str(&smoke::report(&checks, os));
        }
        _ => out.push_str(
            "smoke test: skipped: no Redis and runtime images here yet (the first `cargo xtask \
             integration` builds stand-ins; or `sudo -E cargo xtask standins`)\n",
        ),
    }
    out
}

/// The doctor's text for these probe results.
pub fn report(
    found: &[Found],
    os: OsFamily,
    dns: Option<&str>,
    picked: Option<(Tool, &str)>,
) -> String {
    let mut out = String::new();
    let family = match os {
        OsFamily::Apt => "apt (Debian/Ubuntu)",
        OsFamily::Dnf => "dnf (Fedora/RHEL)",
        OsFamily::Brew => "brew (macOS)",
        OsFamily::Other => "unknown (no install commands known)",
    };
    out.push_str(&format!("package manager: {family}\n\n"));
    let width = found.iter().map(|f| f.tool.name().len()).max().unwrap_or(0);
    for f in found {
        let status = match (&f.path, &f.version) {
            (Some(p), Some(v)) => format!("found    {v}  ({})", p.display()),
            (Some(p), None) => format!("found    (no version answer)  ({})", p.display()),
            (None, _) => "MISSING".to_string(),
        };
        out.push_str(&format!("{:<width$}  {status}\n", f.tool.name()));
        match &f.engine {
            Some(Ok(detail)) if f.tool == Tool::Podman => out.push_str(&format!(
                "{:<width$}    engine:    answers (OCI runtime {detail})\n",
                ""
            )),
            Some(Ok(detail)) => out.push_str(&format!(
                "{:<width$}    engine:    answers (server {detail})\n",
                ""
            )),
            Some(Err(why)) => out.push_str(&format!(
                "{:<width$}    engine:    DOES NOT ANSWER ({}): only the client is usable\n",
                "",
                why.trim()
            )),
            None => {}
        }
        out.push_str(&format!(
            "{:<width$}    needed by: {}\n",
            "",
            f.tool.needed_by()
        ));
        if f.path.is_none() {
            out.push_str(&format!(
                "{:<width$}    install:   {}\n",
                "",
                f.tool.install(os)
            ));
        }
    }
    let has = |t: Tool| {
        found
            .iter()
            .any(|f| f.tool == t && f.path.is_some() && !matches!(f.engine, Some(Err(_))))
    };
    out.push('\n');
    match picked {
        Some((tool, why)) if has(tool) => {
            out.push_str(&format!("engine: {} ({why})\n", tool.name()));
            if let (Tool::Podman, Some(problem)) = (tool, dns) {
                out.push_str(&format!("PROBLEM: {problem}\n"));
            }
        }
        Some((tool, why)) => out.push_str(&format!(
            "engine: NONE usable: {} was picked ({why}) but is missing or does not answer; \
             integration and e2e need podman or docker\n",
            tool.name()
        )),
        None => {
            out.push_str("engine: NONE: install podman or docker; integration and e2e need one\n")
        }
    }
    let missing: Vec<&str> = found
        .iter()
        .filter(|f| f.path.is_none())
        .map(|f| f.tool.name())
        .collect();
    if missing.is_empty() {
        out.push_str("all tools found\n");
    } else {
        out.push_str(&format!("missing: {}\n", missing.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn missing_tools_get_install_advice_and_users() {
        let found = vec![
            Found {
                tool: Tool::Kubectl,
                path: Some(PathBuf::from("/usr/bin/kubectl")),
                version: Some("Client Version: v1.32.0".into()),
                engine: None,
            },
            Found {
                tool: Tool::Kind,
                path: None,
                version: None,
                engine: None,
            },
            Found {
                tool: Tool::Docker,
                path: Some(PathBuf::from("/usr/bin/docker")),
                version: Some("Docker 28".into()),
                engine: Some(Err("Cannot connect to the Docker daemon".into())),
            },
        ];
        let text = report(
            &found,
            OsFamily::Apt,
            None,
            Some((Tool::Docker, "XTASK_ENGINE=docker")),
        );
        let podman = Found {
            tool: Tool::Podman,
            path: Some(PathBuf::from("/usr/bin/podman")),
            version: None,
            engine: Some(Ok("runc".into())),
        };
        let warned = report(
            &[podman],
            OsFamily::Apt,
            Some("podman's aardvark-dns is not installed"),
            Some((Tool::Podman, "podman answers")),
        );
        assert!(
            warned.contains("engine: podman (podman answers)"),
            "{warned}"
        );
        assert!(
            warned.contains("PROBLEM: podman's aardvark-dns is not installed"),
            "{warned}"
        );
        assert!(
            text.contains("kubectl  found    Client Version: v1.32.0"),
            "{text}"
        );
        assert!(text.contains("kind     MISSING"), "{text}");
        assert!(text.contains("install:   curl -Lo ./kind"), "{text}");
        assert!(text.contains("needed by: e2e"), "{text}");
        assert!(text.contains("missing: kind"), "{text}");
        assert!(
            !text.contains("install:   sudo apt-get install -y kubectl"),
            "{text}"
        );
        assert!(
            text.contains("engine:    DOES NOT ANSWER (Cannot connect to the Docker daemon)"),
            "{text}"
        );
        assert!(
            text.contains("engine: NONE usable: docker was picked (XTASK_ENGINE=docker)"),
            "a docker client without an engine is no engine: {text}"
        );
    }
}
