//! Engine settings this host needs, found by trying: podman's default OCI runtime or default
//! ulimits fail on some hosts (crun: "cgroups in hybrid mode not supported"; runc: "error
//! setting rlimit ... operation not permitted"). What works is written to the project's own
//! `target/xtask/engine/containers.conf` and applied only to this tool's engine calls (the
//! `CONTAINERS_CONF` of this process and its children); `/etc` is never edited. A
//! `CONTAINERS_CONF` the user set is respected as it is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::process::{find_in_path, Cmd};

/// One adjustment to podman's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fix {
    /// `[engine] runtime = "runc"`.
    Runc,
    /// `[containers] default_ulimits = []`.
    NoUlimits,
}

/// What was found: the adjustments, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub fixes: Vec<Fix>,
    /// The file podman is pointed at (`None`: podman's defaults work as they are).
    pub conf: Option<PathBuf>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The user's `CONTAINERS_CONF`.
    User,
    /// Tried just now.
    Tried,
    /// Tried earlier with the same podman; read back from the cache.
    Cached,
}

/// The fix an error from `podman run` calls for, if it is one we know.
pub fn fix_for(error: &str) -> Option<Fix> {
    let e = error.to_ascii_lowercase();
    if e.contains("cgroups in hybrid mode") || (e.contains("crun") && e.contains("cgroup")) {
        Some(Fix::Runc)
    } else if e.contains("rlimit") || e.contains("ulimit") {
        Some(Fix::NoUlimits)
    } else {
        None
    }
}

/// The containers.conf text for `fixes`.
pub fn conf_text(fixes: &[Fix]) -> String {
    let mut s = String::from(
        "# Written by cargo xtask: what podman needs on this host, found by trying.\n\
         # Used only for this tool's own engine calls (CONTAINERS_CONF); /etc is not edited.\n",
    );
    if fixes.contains(&Fix::NoUlimits) {
        s.push_str("[containers]\ndefault_ulimits = []\n");
    }
    if fixes.contains(&Fix::Runc) {
        s.push_str("[engine]\nruntime = \"runc\"\n");
    }
    s
}

/// The settings for podman on this host: the user's file, the cached result for this podman
/// version, or found now by running `image` (which must be local) with more fixes until it
/// starts. `fresh` ignores the cache (doctor).
pub fn detect(podman: &Path, dir: &Path, image: &str, fresh: bool) -> Result<Settings> {
    if let Some(user) = std::env::var_os("CONTAINERS_CONF").filter(|v| !v.is_empty()) {
        if !user_is_ours(Path::new(&user), dir) {
            return Ok(Settings {
                fixes: Vec::new(),
                conf: Some(PathBuf::from(user)),
                source: Source::User,
            });
        }
    }
    let version = Cmd::new(podman).arg("--version").read().unwrap_or_default();
    let stamp = dir.join("stamp");
    let conf = dir.join("containers.conf");
    if !fresh {
        if let Some(fixes) = cached(&stamp, &conf, &version) {
            return Ok(settings(fixes, &conf, Source::Cached));
        }
    }
    let fixes = try_until_it_runs(podman, dir, image)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&conf, conf_text(&fixes))?;
    std::fs::write(&stamp, format!("{version}\n{}\n", encode(&fixes)))?;
    Ok(settings(fixes, &conf, Source::Tried))
}

fn user_is_ours(user: &Path, dir: &Path) -> bool {
    user.starts_with(dir)
}

fn settings(fixes: Vec<Fix>, conf: &Path, source: Source) -> Settings {
    Settings {
        conf: (!fixes.is_empty()).then(|| conf.to_path_buf()),
        fixes,
        source,
    }
}

fn encode(fixes: &[Fix]) -> String {
    fixes
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn cached(stamp: &Path, conf: &Path, version: &str) -> Option<Vec<Fix>> {
    let text = std::fs::read_to_string(stamp).ok()?;
    let (v, fixes) = text.split_once('\n')?;
    if v != version || !conf.exists() {
        return None;
    }
    let mut out = Vec::new();
    for f in fixes.trim().split(',').filter(|f| !f.is_empty()) {
        out.push(match f {
            "Runc" => Fix::Runc,
            "NoUlimits" => Fix::NoUlimits,
            _ => return None,
        });
    }
    Some(out)
}

/// Runs `image` with the fixes found so far; each failure that names a known problem adds its
/// fix (at most one of each), anything else is reported as it is.
fn try_until_it_runs(podman: &Path, dir: &Path, image: &str) -> Result<Vec<Fix>> {
    let probe = dir.join("trying.conf");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut fixes: Vec<Fix> = Vec::new();
    loop {
        std::fs::write(&probe, conf_text(&fixes))?;
        let owner = format!(
            "{}={}",
            crate::plan::labels::OWNER,
            crate::plan::facts::sanitize_user(&crate::host::facts::login_name())
        );
        let service = format!("{}=engine-probe", crate::plan::labels::SERVICE);
        let out = Cmd::new(podman)
            .env("CONTAINERS_CONF", &probe)
            .args(["run", "--rm", "--network", "none", "--pull=never"])
            .args(["--label", &owner, "--label", &service, image, "true"])
            .uninterruptible()
            .output()?;
        if out.success() {
            let _ = std::fs::remove_file(&probe);
            return Ok(fixes);
        }
        let error = out.tail(3);
        match fix_for(&error) {
            Some(f) if !fixes.contains(&f) => {
                if f == Fix::Runc && find_in_path("runc", None).is_none() {
                    bail!(
                        "podman cannot start containers with its default runtime here ({error}); \
                         install runc (`sudo apt-get install -y runc`) and run again"
                    );
                }
                fixes.push(f);
                fixes.sort();
            }
            _ => bail!(
                "podman cannot start a container from {image} here, even with {}:\n{}\nrun \
                 `cargo xtask doctor` for what this host lacks",
                if fixes.is_empty() {
                    "its defaults".to_string()
                } else {
                    encode(&fixes)
                },
                crate::exec::process::indent(&error)
            ),
        }
    }
}

impl Settings {
    /// For doctor and the run's first lines.
    pub fn describe(&self) -> String {
        let what = if self.fixes.is_empty() {
            "podman's defaults".to_string()
        } else {
            self.fixes
                .iter()
                .map(|f| match f {
                    Fix::Runc => "runtime runc (crun cannot run here)",
                    Fix::NoUlimits => "no default ulimits (they cannot be set here)",
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (&self.source, &self.conf) {
            (Source::User, Some(c)) => format!("your CONTAINERS_CONF={}", c.display()),
            (Source::Tried, Some(c)) => format!("{what}, found by trying, in {}", c.display()),
            (Source::Cached, Some(c)) => format!("{what}, in {}", c.display()),
            (_, None) => "podman's defaults work here".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_fixes() {
        let crun =
            "Error: OCI runtime error: crun: cgroups in hybrid mode not supported, drop all \
                    controllers from cgroupv2";
        assert_eq!(fix_for(crun), Some(Fix::Runc));
        let runc = "Error: runc: runc create failed: unable to start container process: error \
                    during container init: error setting rlimits for ready process: error setting \
                    rlimit type 7: operation not permitted: OCI permission denied";
        assert_eq!(fix_for(runc), Some(Fix::NoUlimits));
        assert_eq!(fix_for("Error: image not known"), None);
    }

    #[test]
    fn the_file_holds_exactly_the_fixes() {
        let t = conf_text(&[Fix::NoUlimits, Fix::Runc]);
        assert!(t.contains("default_ulimits = []") && t.contains("runtime = \"runc\""));
        let t = conf_text(&[Fix::NoUlimits]);
        assert!(t.contains("default_ulimits") && !t.contains("runc"));
        let parsed: toml::Table = toml::from_str(&conf_text(&[Fix::Runc, Fix::NoUlimits])).unwrap();
        assert_eq!(parsed["engine"]["runtime"].as_str(), Some("runc"));
    }

    #[test]
    fn the_cache_is_per_podman_version() {
        let dir = std::env::temp_dir().join(format!("xtask-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (stamp, conf) = (dir.join("stamp"), dir.join("containers.conf"));
        std::fs::write(&conf, conf_text(&[Fix::NoUlimits])).unwrap();
        std::fs::write(&stamp, "podman version 4.3.1\nNoUlimits\n").unwrap();
        assert_eq!(
            cached(&stamp, &conf, "podman version 4.3.1"),
            Some(vec![Fix::NoUlimits])
        );
        assert_eq!(cached(&stamp, &conf, "podman version 5.0.0"), None);
        std::fs::write(&stamp, "podman version 4.3.1\nBogus\n").unwrap();
        assert_eq!(cached(&stamp, &conf, "podman version 4.3.1"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
