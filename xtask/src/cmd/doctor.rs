//! `cargo xtask doctor`: which tools are there, which are missing, and how to install them.

use anyhow::Result;

use crate::host::tools::{os_family, probe, Found, OsFamily, Tool};

pub fn run() -> Result<()> {
    let os = os_family();
    let found: Vec<Found> = Tool::ALL.iter().map(|t| probe(*t)).collect();
    let dns = crate::host::tools::Engine::detect_in(Some("podman"), None)
        .ok()
        .and_then(|e| e.name_resolution_problem());
    print!("{}", report(&found, os, dns.as_deref()));
    Ok(())
}

/// The doctor's text for these probe results.
pub fn report(found: &[Found], os: OsFamily, dns: Option<&str>) -> String {
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
    if has(Tool::Podman) {
        out.push_str("engine: podman (set XTASK_ENGINE=docker to use docker)\n");
        if let Some(problem) = dns {
            out.push_str(&format!("PROBLEM: {problem}\n"));
        }
        out.push_str(
            "podman hosts without crun/cgroups v2 or with strict ulimits: export \
             CONTAINERS_CONF=$PWD/.ci/containers.conf (runc, no default ulimits)\n",
        );
    } else if has(Tool::Docker) {
        out.push_str("engine: docker (podman not found)\n");
    } else {
        out.push_str("engine: NONE: install podman or docker; integration and e2e need one\n");
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
        let text = report(&found, OsFamily::Apt, None);
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
            text.contains("engine: NONE"),
            "a docker client without an engine is no engine: {text}"
        );
    }
}
