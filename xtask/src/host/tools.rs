//! The external tools the commands need: how to find them, what each is for, and how to
//! install one that is missing on this OS family. `doctor` prints all of it; every command
//! calls [`require`] before doing any work, so a missing tool stops it with the same advice.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use crate::host::packages::Package;
use anyhow::{bail, Result};

use crate::exec::process::{find_in_path, Cmd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Podman,
    Docker,
    Kind,
    Kubectl,
    Git,
    Debootstrap,
}

/// What a command needs. `Engine` is podman or docker (see [`Engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Engine,
    Tool(Tool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsFamily {
    Apt,
    Dnf,
    Brew,
    Other,
}

impl Tool {
    pub const ALL: [Tool; 6] = [
        Tool::Podman,
        Tool::Docker,
        Tool::Kind,
        Tool::Kubectl,
        Tool::Git,
        Tool::Debootstrap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Docker => "docker",
            Tool::Kind => "kind",
            Tool::Kubectl => "kubectl",
            Tool::Git => "git",
            Tool::Debootstrap => "debootstrap",
        }
    }

    fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Podman | Tool::Docker | Tool::Git | Tool::Debootstrap => &["--version"],
            Tool::Kind => &["version"],
            Tool::Kubectl => &["version", "--client"],
        }
    }

    /// The commands that need this tool.
    pub fn needed_by(self) -> &'static str {
        match self {
            Tool::Podman | Tool::Docker => {
                "integration, e2e, standins, clean, clean-images, bench, test (podman or docker: one is enough)"
            }
            Tool::Kind => "e2e, clean (of E2E runs)",
            Tool::Kubectl => "e2e",
            Tool::Git => "tag, integration, e2e, render (the git7 part of tags; `unknown` without it)",
            Tool::Debootstrap => "standins",
        }
    }

    /// The system packages that bring it (and what it needs to work), on apt and dnf hosts.
    fn packages(self) -> Option<&'static [Package]> {
        use crate::host::packages as p;
        match self {
            Tool::Podman => Some(&[p::PODMAN, p::RUNC, p::NETAVARK, p::AARDVARK, p::IPTABLES]),
            Tool::Docker => Some(&[p::DOCKER]),
            Tool::Git => Some(&[p::GIT]),
            Tool::Debootstrap => Some(&[p::DEBOOTSTRAP, p::MOUNT]),
            Tool::Kind | Tool::Kubectl => None,
        }
    }

    /// How to install it on this OS family (with `sudo` only when not root).
    pub fn install(self, os: OsFamily) -> String {
        use OsFamily::*;
        if let (Some(pk), Apt | Dnf) = (self.packages(), os) {
            return crate::host::packages::install_command(
                pk,
                os,
                crate::host::packages::is_root(),
            );
        }
        let sudo = if crate::host::packages::is_root() {
            ""
        } else {
            "sudo "
        };
        let kind_bin = format!(
            "curl -Lo ./kind https://kind.sigs.k8s.io/dl/v0.27.0/kind-linux-amd64 && \
             chmod +x ./kind && {sudo}mv ./kind /usr/local/bin/kind"
        );
        match (self, os) {
            (Tool::Podman, Brew) => {
                "brew install podman && podman machine init && podman machine start".into()
            }
            (Tool::Docker, Brew) => "brew install --cask docker".into(),
            (Tool::Kind, Brew) => "brew install kind".into(),
            (Tool::Kind, Apt | Dnf) => {
                format!("{kind_bin}   (or: go install sigs.k8s.io/kind@v0.27.0)")
            }
            (Tool::Kubectl, Brew) => "brew install kubectl".into(),
            (Tool::Kubectl, Apt) => format!(
                "{sudo}apt-get install -y kubectl   (from the Kubernetes apt \
                repository: https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/)"
            ),
            (Tool::Kubectl, Dnf) => format!(
                "{sudo}dnf install -y kubectl   (from the Kubernetes yum \
                repository: https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/)"
            ),
            (Tool::Git, Brew) => "brew install git".into(),
            (Tool::Debootstrap, Brew) => {
                "not available on macOS: build stand-ins on a Linux host".into()
            }
            (t, _) => format!("install `{}` with your system's package manager", t.name()),
        }
    }
}

/// Reads /etc/os-release (or notices macOS) to pick apt, dnf or brew.
pub fn os_family() -> OsFamily {
    if cfg!(target_os = "macos") {
        return OsFamily::Brew;
    }
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os_family_from(&text)
}

pub fn os_family_from(os_release: &str) -> OsFamily {
    let mut ids = String::new();
    for line in os_release.lines() {
        if let Some(v) = line
            .strip_prefix("ID=")
            .or_else(|| line.strip_prefix("ID_LIKE="))
        {
            ids.push(' ');
            ids.push_str(&v.trim_matches('"').to_lowercase());
        }
    }
    let has = |w: &str| ids.split_whitespace().any(|i| i == w);
    if has("debian") || has("ubuntu") {
        OsFamily::Apt
    } else if has("fedora") || has("rhel") || has("centos") || has("rocky") || has("almalinux") {
        OsFamily::Dnf
    } else {
        OsFamily::Other
    }
}

/// Where a tool is and what it says its version is.
#[derive(Debug, Clone)]
pub struct Found {
    pub tool: Tool,
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    /// For engines: whether the engine answers (`podman info` / `docker info`), or why not.
    pub engine: Option<std::result::Result<String, String>>,
}

pub fn probe(tool: Tool) -> Found {
    let path = find_in_path(tool.name(), None);
    let version = path
        .as_ref()
        .and_then(|p| crate::exec::process::quick::first_line(p, tool.version_args()));
    let engine = match (tool, &path) {
        (Tool::Podman | Tool::Docker, Some(p)) => {
            let format = if tool == Tool::Podman {
                "{{.Host.OCIRuntime.Name}}"
            } else {
                "{{.ServerVersion}}"
            };
            let out = Cmd::new(p)
                .args(["info", "--format", format])
                .timeout(std::time::Duration::from_secs(20))
                .output();
            Some(match out {
                Ok(o) if o.success() => Ok(o.stdout.trim().to_string()),
                Ok(o) => Err(o.tail(1)),
                Err(e) => Err(format!("{e:#}")),
            })
        }
        _ => None,
    };
    Found {
        tool,
        path,
        version,
        engine,
    }
}

/// The container engine: podman (preferred) or docker. `XTASK_ENGINE` picks one explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub tool: Tool,
    pub program: PathBuf,
}

impl Engine {
    pub fn name(&self) -> &'static str {
        self.tool.name()
    }

    pub fn cmd(&self) -> Cmd {
        Cmd::new(&self.program)
    }

    /// `podman 4.3.1 (API 4.3.1) at /usr/bin/podman`, from the engine itself (server version
    /// and API version for docker).
    pub fn describe(&self) -> String {
        let v = self
            .server_version()
            .unwrap_or_else(|e| format!("does not answer: {e}"));
        format!("{} {v} at {}", self.name(), self.program.display())
    }

    pub fn is_podman(&self) -> bool {
        self.tool == Tool::Podman
    }

    /// Finds the engine (see [`Engine::pick`]), or explains how to install one.
    pub fn detect() -> Result<Engine> {
        Ok(Engine::pick()?.0)
    }

    /// The engine to use and why, in words: `XTASK_ENGINE` if set; else the engine that answers
    /// (podman first, then docker, at `DOCKER_HOST` if set); else podman if installed (its own
    /// error then says what is wrong), else docker.
    pub fn pick() -> Result<(Engine, String)> {
        let choice = std::env::var("XTASK_ENGINE").ok();
        let (tool, why) = pick(choice.as_deref(), &|| presence(Tool::Podman), &|| {
            presence(Tool::Docker)
        })?;
        let engine = Engine::detect_in(Some(tool.name()), None)?;
        Ok((engine, why))
    }

    /// Why the engine does not answer (its server's version within 20 s), if it does not.
    /// (`version`, not `info`: podman's `info` measures its storage, which takes seconds.)
    pub fn answer(&self) -> std::result::Result<(), String> {
        self.server_version().map(|_| ())
    }

    /// The server's version and API version (`4.3.1 (API 4.3.1)`), or why it does not answer.
    /// One `version` call per engine and process once it answered: choosing, checking and
    /// describing the engine share it; a silent engine is asked again (waits poll it).
    pub(crate) fn server_version(&self) -> std::result::Result<String, String> {
        static ANSWERED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
        let answered = || ANSWERED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, v)) = answered().iter().find(|(p, _)| *p == self.program) {
            return Ok(v.clone());
        }
        let format = if self.is_podman() {
            "{{.Server.Version}} (API {{.Server.APIVersion}})"
        } else {
            "{{.Server.Version}} (API {{.Server.APIVersion}}; client {{.Client.Version}}, API {{.Client.APIVersion}})"
        };
        let one_line = |s: &str| crate::host::ready::one_line(s, 160);
        match self
            .cmd()
            .args(["version", "--format", format])
            .timeout(std::time::Duration::from_secs(20))
            .output()
        {
            Ok(o) if o.success() => {
                let v = o.stdout.trim().to_string();
                answered().push((self.program.clone(), v.clone()));
                Ok(v)
            }
            Ok(o) => Err(one_line(&o.tail(1))),
            Err(e) => Err(one_line(&format!("{e:#}"))),
        }
    }

    /// The engine named `choice` (or the first of podman, docker) on `path` (or PATH), or how
    /// to install one.
    pub fn detect_in(choice: Option<&str>, path: Option<&OsStr>) -> Result<Engine> {
        let candidates: Vec<Tool> = match choice.map(str::trim) {
            None | Some("") => vec![Tool::Podman, Tool::Docker],
            Some("podman") => vec![Tool::Podman],
            Some("docker") => vec![Tool::Docker],
            Some(other) => bail!("XTASK_ENGINE=`{other}` is not supported; use podman or docker"),
        };
        for t in &candidates {
            if let Some(program) = find_in_path(t.name(), path) {
                return Ok(Engine { tool: *t, program });
            }
        }
        let os = os_family();
        let names: Vec<&str> = candidates.iter().map(|t| t.name()).collect();
        bail!(
            "no container engine found in PATH (looked for {}); install one: {}\n\
             (then run `cargo xtask doctor` to check)",
            names.join(", "),
            candidates[0].install(os)
        )
    }
}

/// What one engine is on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Missing,
    /// Installed, but `info` fails (why).
    Silent(String),
    Answers,
}

/// Whether `tool` (an engine) is installed and answers.
pub fn presence(tool: Tool) -> Presence {
    match find_in_path(tool.name(), None) {
        None => Presence::Missing,
        Some(program) => match (Engine { tool, program }).answer() {
            Ok(()) => Presence::Answers,
            Err(why) => Presence::Silent(why),
        },
    }
}

/// Which engine, and why (pure but for the probes, each called only when needed): see
/// [`Engine::pick`].
pub fn pick(
    choice: Option<&str>,
    podman: &dyn Fn() -> Presence,
    docker: &dyn Fn() -> Presence,
) -> Result<(Tool, String)> {
    match choice.map(str::trim) {
        None | Some("") => {}
        Some("podman") => return Ok((Tool::Podman, "XTASK_ENGINE=podman".into())),
        Some("docker") => return Ok((Tool::Docker, "XTASK_ENGINE=docker".into())),
        Some(other) => bail!("XTASK_ENGINE=`{other}` is not supported; use podman or docker"),
    }
    let at = std::env::var("DOCKER_HOST")
        .map(|h| format!(" at {h}"))
        .unwrap_or_default();
    let p = podman();
    if p == Presence::Answers {
        return Ok((Tool::Podman, "podman answers".into()));
    }
    let podman_state = match &p {
        Presence::Silent(why) => format!("podman does not answer ({why})"),
        _ => "podman is not installed".to_string(),
    };
    // A docker client without a daemon (common: the client comes alone with many images and
    // CI machines) is no engine: podman is installed then, or named with its install command.
    Ok(match docker() {
        Presence::Answers => (Tool::Docker, format!("docker answers{at}; {podman_state}")),
        Presence::Silent(why) => (
            Tool::Podman,
            format!(
                "no engine answers; podman is preferred ({podman_state}; docker is installed \
                 but does not answer{at}: {why})"
            ),
        ),
        Presence::Missing => (
            Tool::Podman,
            format!("no engine answers; podman is preferred ({podman_state})"),
        ),
    })
}

/// Fails before any work when a needed tool is missing, with doctor's advice for each.
pub fn require(needs: &[Need]) -> Result<Option<Engine>> {
    let os = os_family();
    let mut engine = None;
    let mut missing = Vec::new();
    for need in needs {
        match need {
            Need::Engine => match Engine::detect() {
                Ok(e) => engine = Some(e),
                Err(e) => missing.push(format!("{e:#}")),
            },
            Need::Tool(t) => {
                if find_in_path(t.name(), None).is_none() {
                    missing.push(format!(
                        "`{}` not found in PATH (needed by: {}); install it: {}",
                        t.name(),
                        t.needed_by(),
                        t.install(os)
                    ));
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}\nnothing was done; run `cargo xtask doctor` to see every tool",
            missing.join("\n")
        );
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_family_from_os_release() {
        assert_eq!(os_family_from("ID=debian\nVERSION_ID=12\n"), OsFamily::Apt);
        assert_eq!(
            os_family_from("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            OsFamily::Apt
        );
        assert_eq!(
            os_family_from("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            OsFamily::Dnf
        );
        assert_eq!(os_family_from("ID=alpine\n"), OsFamily::Other);
    }

    #[test]
    fn every_tool_has_advice_for_every_family() {
        for t in Tool::ALL {
            for os in [
                OsFamily::Apt,
                OsFamily::Dnf,
                OsFamily::Brew,
                OsFamily::Other,
            ] {
                assert!(!t.install(os).is_empty());
            }
            assert!(!t.needed_by().is_empty());
        }
        assert!(Tool::Kind
            .install(OsFamily::Apt)
            .contains("kind.sigs.k8s.io"));
        assert_eq!(Tool::Kind.install(OsFamily::Brew), "brew install kind");
    }

    #[test]
    fn a_reachable_engine_wins_and_the_reason_is_said() {
        use Presence::*;
        let never = || -> Presence { panic!("not asked when XTASK_ENGINE is set") };
        let (t, why) = pick(Some("docker"), &never, &never).unwrap();
        assert_eq!((t, why.as_str()), (Tool::Docker, "XTASK_ENGINE=docker"));
        // Podman answering settles it: docker is not asked (a probe costs a process a run).
        let docker_unasked = || -> Presence { panic!("docker asked though podman answers") };
        let (t, why) = pick(None, &|| Answers, &docker_unasked).unwrap();
        assert_eq!((t, why.as_str()), (Tool::Podman, "podman answers"));
        let (t, why) = pick(None, &|| Silent("no socket".into()), &|| Answers).unwrap();
        assert_eq!(t, Tool::Docker);
        assert!(why.contains("podman does not answer (no socket)"), "{why}");
        let (t, why) = pick(None, &|| Missing, &|| Answers).unwrap();
        assert!(
            t == Tool::Docker && why.contains("podman is not installed"),
            "{why}"
        );
        let (t, _) = pick(None, &|| Missing, &|| Missing).unwrap();
        assert_eq!(
            t,
            Tool::Podman,
            "then installed, or named with its install command"
        );
        // A docker client alone (no daemon) must not win over installing podman: on a new
        // machine with only the client, the main job failed with "docker does not answer".
        let (t, why) = pick(None, &|| Missing, &|| Silent("refused".into())).unwrap();
        assert!(
            t == Tool::Podman && why.contains("docker is installed but does not answer"),
            "{why}"
        );
        assert!(pick(Some("lxc"), &never, &never).is_err());
    }

    #[test]
    fn engine_choice_is_honoured_and_explained() {
        let empty = std::env::temp_dir().join(format!("xtask-empty-path-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = Engine::detect_in(None, Some(empty.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no container engine found"), "{err}");
        assert!(err.contains("podman, docker"), "{err}");
        let err = Engine::detect_in(Some("lxc"), Some(empty.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("XTASK_ENGINE=`lxc`"), "{err}");
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
