//! The system packages runs need, whether they are installed, and installing them: as root on
//! apt hosts after a line naming them (`--no-install` / `XTASK_NO_INSTALL=1` refuses);
//! everywhere else the run stops before doing anything, with the one command to run.
//!
//! Packages, not commands: on Debian, podman finds other containers by name only through
//! aardvark-dns, which apt brings merely as a recommendation, and netavark calls iptables,
//! which podman only suggests. A new machine without them fails every networked container.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use crate::exec::process::{find_in_path, Cmd};
use crate::host::tools::{os_family, OsFamily};

/// A system package, under its name per package manager, with the file that shows it is there
/// on hosts without dpkg, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub apt: &'static str,
    pub dnf: &'static str,
    /// `None`: not available through brew (a Linux-only piece).
    pub brew: Option<&'static str>,
    /// A program or absolute path that exists when the package is installed.
    pub probe: &'static str,
    pub why: &'static str,
}

pub const PODMAN: Package = Package {
    apt: "podman",
    dnf: "podman",
    brew: Some("podman"),
    probe: "podman",
    why: "the container engine",
};
pub const RUNC: Package = Package {
    apt: "runc",
    dnf: "runc",
    brew: None,
    probe: "runc",
    why: "an OCI runtime that works where crun cannot (hybrid cgroups)",
};
pub const NETAVARK: Package = Package {
    apt: "netavark",
    dnf: "netavark",
    brew: None,
    probe: "/usr/lib/podman/netavark",
    why: "podman's networks",
};
pub const AARDVARK: Package = Package {
    apt: "aardvark-dns",
    dnf: "aardvark-dns",
    brew: None,
    probe: "/usr/lib/podman/aardvark-dns",
    why: "containers find each other by name (DataStorage finds PostgreSQL)",
};
pub const IPTABLES: Package = Package {
    apt: "iptables",
    dnf: "iptables-nft",
    brew: None,
    probe: "iptables",
    why: "netavark sets up networks and published ports with it",
};
pub const DEBOOTSTRAP: Package = Package {
    apt: "debootstrap",
    dnf: "debootstrap",
    brew: None,
    probe: "debootstrap",
    why: "stand-in images from Debian packages where no registry answers",
};
/// Priority "required" on Debian but not Essential: a trimmed image can lack it.
pub const MOUNT: Package = Package {
    apt: "mount",
    dnf: "util-linux",
    brew: None,
    probe: "mount",
    why: "mounts /proc in the stand-ins' build root (and unmounts it)",
};
pub const GIT: Package = Package {
    apt: "git",
    dnf: "git",
    brew: Some("git"),
    probe: "git",
    why: "the git7 part of image tags",
};
pub const DOCKER: Package = Package {
    apt: "docker.io",
    dnf: "moby-engine",
    brew: None,
    probe: "dockerd",
    why: "the docker engine, for the docker half of `cargo xtask test`",
};
pub const SKOPEO: Package = Package {
    apt: "skopeo",
    dnf: "skopeo",
    brew: Some("skopeo"),
    probe: "skopeo",
    why: "reads and removes a run's images in a registry (`e2e --cluster`)",
};

pub const DOCKER_REGISTRY: Package = Package {
    apt: "docker-registry",
    dnf: "docker-distribution",
    brew: None,
    probe: "/usr/bin/docker-registry",
    why: "a real registry for fake-kube's pull-by-digest test (`cargo xtask test`)",
};

/// What a podman run needs (docker runs need a docker engine that answers, nothing installed).
pub const PODMAN_RUN: &[Package] = &[PODMAN, RUNC, NETAVARK, AARDVARK, IPTABLES, GIT];

/// Everything `cargo xtask test` calls.
pub const TEST: &[Package] = &[
    PODMAN,
    RUNC,
    NETAVARK,
    AARDVARK,
    IPTABLES,
    GIT,
    DEBOOTSTRAP,
    MOUNT,
    DOCKER,
    SKOPEO,
    DOCKER_REGISTRY,
];

impl Package {
    pub fn name(&self, os: OsFamily) -> Option<&'static str> {
        match os {
            OsFamily::Apt => Some(self.apt),
            OsFamily::Dnf => Some(self.dnf),
            OsFamily::Brew => self.brew,
            OsFamily::Other => None,
        }
    }
}

/// Of `wanted`, the packages that are not installed. On apt hosts dpkg says (one call);
/// elsewhere the probe file or program decides.
pub fn missing(wanted: &[Package], os: OsFamily) -> Vec<Package> {
    let wanted: BTreeSet<Package> = wanted.iter().copied().collect();
    if os == OsFamily::Apt {
        if let Some(installed) = dpkg_installed(&wanted) {
            return wanted
                .into_iter()
                .filter(|p| !installed.contains(p.apt))
                .collect();
        }
    }
    wanted.into_iter().filter(|p| !present(p)).collect()
}

fn present(p: &Package) -> bool {
    if p.probe.starts_with('/') {
        // Distributions put podman's helpers in different folders.
        let file = p.probe.rsplit('/').next().unwrap_or(p.probe);
        return [
            "/usr/lib/podman",
            "/usr/libexec/podman",
            "/usr/local/lib/podman",
        ]
        .iter()
        .any(|d| std::path::Path::new(d).join(file).is_file());
    }
    find_in_path(p.probe, None).is_some()
}

/// The apt names of `wanted` that dpkg lists as installed; `None` without dpkg-query.
fn dpkg_installed(wanted: &BTreeSet<Package>) -> Option<BTreeSet<String>> {
    let out = Cmd::new("dpkg-query")
        .args(["--show", "--showformat", "${Package} ${Status}\\n"])
        .args(wanted.iter().map(|p| p.apt))
        .output()
        .ok()?;
    Some(parse_dpkg(&out.stdout))
}

/// Package names whose status is `install ok installed`, from dpkg-query's lines.
pub fn parse_dpkg(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The one command that installs `packages` on this OS family.
pub fn install_command(packages: &[Package], os: OsFamily, root: bool) -> String {
    let sudo = if root { "" } else { "sudo " };
    let names = |os| {
        packages
            .iter()
            .filter_map(|p| p.name(os))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match os {
        OsFamily::Apt => format!(
            "{sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {}",
            names(os)
        ),
        OsFamily::Dnf => format!("{sudo}dnf install -y {}", names(os)),
        OsFamily::Brew => {
            let linux_only: Vec<&str> = packages
                .iter()
                .filter(|p| p.brew.is_none())
                .map(|p| p.apt)
                .collect();
            let mut c = format!("brew install {}", names(os));
            if !linux_only.is_empty() {
                c.push_str(&format!(
                    " (and a Linux host or `podman machine` for {})",
                    linux_only.join(", ")
                ));
            }
            c
        }
        OsFamily::Other => format!(
            "install these with your system's package manager: {}",
            packages.iter().map(|p| p.apt).collect::<Vec<_>>().join(" ")
        ),
    }
}

/// Whether this process may install packages: root on an apt host, not refused.
pub fn may_install(os: OsFamily, refused: bool) -> bool {
    os == OsFamily::Apt && is_root() && !refused
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure `wanted` is installed: nothing to do, installed now (root, apt, not refused,
/// after `announce` names them), or an error with the exact command to run.
pub fn ensure(wanted: &[Package], refused: bool, announce: &dyn Fn(&str)) -> Result<()> {
    let os = os_family();
    let missing = missing(wanted, os);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.apt).collect();
    let reasons: Vec<String> = missing
        .iter()
        .map(|p| format!("{} ({})", p.apt, p.why))
        .collect();
    if !may_install(os, refused) {
        let why_not = if refused {
            "installing was refused (--no-install / XTASK_NO_INSTALL)"
        } else if os != OsFamily::Apt {
            "this tool installs packages only on apt hosts"
        } else {
            "installing needs root"
        };
        bail!(
            "missing packages: {}\n{why_not}; install them with:\n    {}\nthen run the same \
             command again (nothing was started)",
            reasons.join(", "),
            install_command(&missing, os, is_root())
        );
    }
    announce(&format!(
        "installing packages this run needs: {} (XTASK_NO_INSTALL=1 refuses)",
        reasons.join(", ")
    ));
    let apt = |args: &[&str]| {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .run_streaming(|_| {})
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&names);
    apt(&install)?;
    let still = missing_after(&missing, os);
    if !still.is_empty() {
        bail!(
            "apt-get finished but {} is still not installed",
            still.join(", ")
        );
    }
    Ok(())
}

fn missing_after(packages: &[Package], os: OsFamily) -> Vec<&'static str> {
    missing(packages, os).iter().map(|p| p.apt).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lines() {
        let text = "podman install ok installed\niptables deinstall ok config-files\n\
                    runc install ok installed\n";
        assert_eq!(
            parse_dpkg(text),
            ["podman".to_string(), "runc".to_string()].into()
        );
    }

    #[test]
    fn one_command_per_family() {
        let c = install_command(&[PODMAN, IPTABLES], OsFamily::Apt, false);
        assert_eq!(
            c,
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends podman iptables"
        );
        assert!(install_command(&[IPTABLES], OsFamily::Apt, true).starts_with("apt-get update"));
        assert_eq!(
            install_command(&[PODMAN, IPTABLES], OsFamily::Dnf, false),
            "sudo dnf install -y podman iptables-nft"
        );
        let brew = install_command(&[PODMAN, AARDVARK], OsFamily::Brew, false);
        assert!(
            brew.starts_with("brew install podman") && brew.contains("aardvark-dns"),
            "{brew}"
        );
    }

    #[test]
    fn only_root_on_apt_installs_and_only_when_not_refused() {
        assert!(!may_install(OsFamily::Dnf, false));
        assert!(!may_install(OsFamily::Apt, true));
        assert_eq!(may_install(OsFamily::Apt, false), is_root());
    }

    #[test]
    fn every_package_says_why() {
        for p in TEST {
            assert!(!p.why.is_empty() && !p.apt.is_empty() && !p.dnf.is_empty());
        }
        // iptables is what a new Debian machine lacked: podman merely suggests it.
        assert!(PODMAN_RUN.contains(&IPTABLES) && PODMAN_RUN.contains(&AARDVARK));
    }
}
