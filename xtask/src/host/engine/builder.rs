//! How the engine builds images, decided once per process from what is installed: podman's own
//! builder, docker's BuildKit, or docker's legacy builder. What differs between them is only
//! here: the build flags, the environment of `docker build`, and what a build leaves behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::host::tools::Engine;

/// The builder `build` uses with this engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    /// podman (buildah): `--pull=never --layers=false`, so no intermediate image is kept.
    Podman,
    /// docker with BuildKit (`DOCKER_BUILDKIT=1`): no intermediate images, our labels only on
    /// the final image. `how`: through the buildx plugin, or the daemon's own (clients < 23).
    BuildKit { how: &'static str },
    /// docker's legacy builder: one image per Dockerfile step, the last ones carrying our
    /// labels (listing takes top-level images only, so teardown names only the tagged one and
    /// docker deletes its parents with it). A build that fails leaves its unlabelled steps
    /// behind, as docker's cache. `why`: why BuildKit is not used.
    Legacy { why: String },
}

impl Builder {
    /// The flags `build` gets after the verb.
    pub fn flags(&self) -> &'static [&'static str] {
        match self {
            // No registry is needed or wanted: bases must already be local. No intermediate
            // images: they would carry our labels and be shared as cache between runs.
            Builder::Podman => &["--pull=never", "--layers=false"],
            // docker's `--pull` is a boolean ("always"): missing bases are pulled either way.
            Builder::BuildKit { .. } => &[],
            // Intermediate containers go even when a step fails.
            Builder::Legacy { .. } => &["--force-rm"],
        }
    }

    /// The environment `docker build` needs to use this builder.
    pub fn env(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Builder::Podman => None,
            Builder::BuildKit { .. } => Some(("DOCKER_BUILDKIT", "1")),
            Builder::Legacy { .. } => Some(("DOCKER_BUILDKIT", "0")),
        }
    }

    /// One line for `doctor` and the README's wording.
    pub fn describe(&self) -> String {
        match self {
            Builder::Podman => "podman's (--layers=false: no intermediate images)".into(),
            Builder::BuildKit { how } => {
                format!("BuildKit ({how}): no intermediate images")
            }
            Builder::Legacy { why } => format!(
                "docker's legacy builder ({why}): it keeps one image per Dockerfile step; a failed \
                 build leaves unlabelled ones behind (install the buildx plugin to get BuildKit)"
            ),
        }
    }
}

/// The builder for docker (pure): `DOCKER_BUILDKIT` as set by the user, whether the buildx
/// plugin answers, and the client's major version. Clients before 23 have BuildKit built in
/// (through the daemon); later ones only through buildx, and fail with `DOCKER_BUILDKIT=1`
/// without it.
pub fn decide(user_setting: Option<&str>, buildx: bool, client_major: Option<u32>) -> Builder {
    if user_setting.is_some_and(|v| matches!(v.trim(), "0" | "false")) {
        return Builder::Legacy {
            why: "DOCKER_BUILDKIT=0 is set".into(),
        };
    }
    if buildx {
        return Builder::BuildKit {
            how: "buildx plugin",
        };
    }
    match client_major {
        Some(m) if m < 23 => Builder::BuildKit {
            how: "the daemon's own, with DOCKER_BUILDKIT=1",
        },
        Some(m) => Builder::Legacy {
            why: format!("docker client {m}.x without the buildx plugin"),
        },
        None => Builder::Legacy {
            why: "the docker client's version could not be read".into(),
        },
    }
}

impl Engine {
    /// This engine's builder, probed once per process (`docker buildx version`, `docker
    /// version`).
    pub fn builder(&self) -> Builder {
        if self.is_podman() {
            return Builder::Podman;
        }
        static SEEN: OnceLock<Mutex<BTreeMap<PathBuf, Builder>>> = OnceLock::new();
        let seen = SEEN.get_or_init(Default::default);
        if let Some(b) = seen.lock().ok().and_then(|m| m.get(&self.program).cloned()) {
            return b;
        }
        let answers = |args: &[&str]| {
            self.cmd()
                .args(args)
                .timeout(Duration::from_secs(20))
                .read()
                .ok()
        };
        let buildx = answers(&["buildx", "version"]).is_some();
        let major = answers(&["version", "--format", "{{.Client.Version}}"])
            .and_then(|v| v.split('.').next()?.trim().parse().ok());
        let user = std::env::var("DOCKER_BUILDKIT").ok();
        let b = decide(user.as_deref(), buildx, major);
        if let Ok(mut m) = seen.lock() {
            m.insert(self.program.clone(), b.clone());
        }
        b
    }

    /// The network of `RUN` steps, when not the builder's default: a docker daemon without a
    /// default bridge (`--bridge none`, like the private dockerd of `cargo xtask test`) gives
    /// them no network at all (only loopback), so a step that fetches packages fails; they
    /// then build on the host's network (`--network host`). Probed once per daemon.
    pub fn build_network(&self) -> Option<&'static str> {
        if self.is_podman() {
            return None;
        }
        static SEEN: OnceLock<Mutex<BTreeMap<String, Option<&'static str>>>> = OnceLock::new();
        let seen = SEEN.get_or_init(Default::default);
        let daemon = format!(
            "{} {}",
            self.program.display(),
            std::env::var("DOCKER_HOST").unwrap_or_default()
        );
        if let Some(n) = seen.lock().ok().and_then(|m| m.get(&daemon).copied()) {
            return n;
        }
        let answer = self
            .cmd()
            .args(["network", "inspect", "--format", "{{.Name}}", "bridge"])
            .timeout(Duration::from_secs(20))
            .output();
        let n = answer
            .ok()
            .and_then(|o| network_for(o.success(), &o.stderr));
        if let Ok(mut m) = seen.lock() {
            m.insert(daemon, n);
        }
        n
    }
}

/// `--network` for builds from `docker network inspect bridge` (pure): `host` when the daemon
/// says it has no such network; the default otherwise (also when it did not answer).
pub fn network_for(bridge_found: bool, stderr: &str) -> Option<&'static str> {
    let e = stderr.to_lowercase();
    let missing = e.contains("no such network") || e.contains("network bridge not found");
    (!bridge_found && missing).then_some("host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_where_the_client_has_it() {
        assert_eq!(
            decide(None, true, Some(28)),
            Builder::BuildKit {
                how: "buildx plugin"
            }
        );
        assert!(matches!(
            decide(None, false, Some(20)),
            Builder::BuildKit { .. }
        ));
        let legacy = decide(None, false, Some(28));
        assert!(matches!(&legacy, Builder::Legacy { why } if why.contains("28.x")));
        assert_eq!(legacy.env(), Some(("DOCKER_BUILDKIT", "0")));
        assert!(matches!(
            decide(Some("0"), true, Some(28)),
            Builder::Legacy { .. }
        ));
        assert!(matches!(decide(None, false, None), Builder::Legacy { .. }));
        assert_eq!(Builder::Podman.flags(), ["--pull=never", "--layers=false"]);
    }

    #[test]
    fn run_steps_use_the_host_network_only_where_the_daemon_has_no_bridge() {
        // dockerd 20.10 with `--bridge none`, measured: `network inspect bridge` with the
        // clients 20.10 and 28.
        for missing in [
            "Error: No such network: bridge\n",
            "Error response from daemon: network bridge not found\n",
        ] {
            assert_eq!(network_for(false, missing), Some("host"));
        }
        assert_eq!(network_for(true, ""), None);
        // A daemon that does not answer says nothing about its networks.
        let down =
            "Cannot connect to the Docker daemon at unix:///x/sock. Is the docker daemon running?";
        assert_eq!(network_for(false, down), None);
    }
}
