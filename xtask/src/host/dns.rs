//! Whether containers on one network can find each other by name: podman resolves container
//! names only with the netavark backend and aardvark-dns (on Debian a mere recommendation of a
//! recommendation of podman); docker always can. Asking podman for its backend (`podman info`)
//! is a run's slowest fixed cost (~0.5 s), so the answer is remembered while nothing that
//! decides it changes.

use std::path::{Path, PathBuf};

use crate::host::tools::{os_family, Engine, OsFamily};

impl Engine {
    /// Why containers on one network could not find each other by name, if they cannot:
    /// podman resolves container names only with the netavark backend and aardvark-dns (on
    /// Debian a mere recommendation of a recommendation of podman). Docker always can.
    /// With `remember` (a folder), the backend is read back while nothing that decides it
    /// changed (see [`backend_key`]): `podman info` is a run's slowest fixed cost (~0.5 s).
    pub fn name_resolution_problem(&self, remember: Option<&Path>) -> Option<String> {
        if !self.is_podman() {
            return None;
        }
        let key = remember.and_then(|_| backend_key(&self.server_version().ok()?));
        let stamp = remember.map(|d| d.join("network-backend"));
        let known = stamp.as_ref().zip(key.as_ref()).and_then(|(s, k)| {
            std::fs::read_to_string(s)
                .ok()?
                .strip_prefix(k.as_str())?
                .strip_prefix('\n')
                .map(str::to_string)
        });
        let backend = match known {
            Some(b) => b,
            None => {
                let b = self
                    .cmd()
                    .args(["info", "--format", "{{.Host.NetworkBackend}}"])
                    .timeout(std::time::Duration::from_secs(20))
                    .read()
                    .ok()?;
                if let (Some(s), Some(k)) = (&stamp, &key) {
                    let _ = std::fs::create_dir_all(s.parent().unwrap_or(Path::new(".")));
                    let _ = std::fs::write(s, format!("{k}\n{}", b.trim()));
                }
                b
            }
        };
        let aardvark = [
            "/usr/lib/podman",
            "/usr/libexec/podman",
            "/usr/local/lib/podman",
            "/usr/local/libexec/podman",
        ]
        .iter()
        .any(|d| std::path::Path::new(d).join("aardvark-dns").is_file());
        dns_problem(backend.trim(), aardvark, os_family())
    }
}

/// What decides podman's network backend, as one line: its version, `CONTAINERS_CONF`, and
/// when each file it reads for it last changed (containers.conf and storage.conf, system and
/// user; the backend podman records in its storage on first use).
pub fn backend_key(version: &str) -> Option<String> {
    let home = std::env::var("HOME").unwrap_or_default();
    let conf = std::env::var("CONTAINERS_CONF").unwrap_or_default();
    let mut files: Vec<PathBuf> = [
        "/usr/share/containers/containers.conf",
        "/etc/containers/containers.conf",
        "/etc/containers/containers.conf.d",
        "/etc/containers/storage.conf",
        "/var/lib/containers/storage/defaultNetworkBackend",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for f in [
        ".config/containers/containers.conf",
        ".config/containers/containers.conf.d",
        ".config/containers/storage.conf",
        ".local/share/containers/storage/defaultNetworkBackend",
    ] {
        files.push(Path::new(&home).join(f));
    }
    if !conf.is_empty() {
        files.push(PathBuf::from(&conf));
    }
    files_key(&format!("{version}|{conf}"), &files)
}

/// `head` and each file's modification time (0: absent). `None` if a time cannot be read.
fn files_key(head: &str, files: &[PathBuf]) -> Option<String> {
    let mut key = head.to_string();
    for f in files {
        let nanos = match std::fs::metadata(f).and_then(|m| m.modified()) {
            Ok(t) => t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos(),
            Err(_) => 0,
        };
        key.push_str(&format!("|{nanos}"));
    }
    Some(key)
}

/// The advice for a podman network backend that cannot resolve container names (pure).
pub fn dns_problem(backend: &str, aardvark: bool, os: OsFamily) -> Option<String> {
    let install = match os {
        OsFamily::Apt => "sudo apt-get install -y netavark aardvark-dns",
        OsFamily::Dnf => "sudo dnf install -y netavark aardvark-dns",
        _ => "install netavark and aardvark-dns",
    };
    match (backend, aardvark) {
        ("netavark", true) => None,
        ("netavark", false) => Some(format!(
            "podman's aardvark-dns is not installed, so containers cannot reach each other by name \
             (DataStorage would not find PostgreSQL); install it: {install}"
        )),
        (other, _) => Some(format!(
            "podman uses the `{other}` network backend, which does not resolve container names \
             here; install netavark and aardvark-dns ({install}), then `podman system reset` \
             switches the backend (it removes all podman data: do it only on a machine of your own)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_dns_needs_netavark_and_aardvark() {
        assert_eq!(dns_problem("netavark", true, OsFamily::Apt), None);
        let missing = dns_problem("netavark", false, OsFamily::Apt).unwrap();
        assert!(
            missing.contains("apt-get install -y netavark aardvark-dns"),
            "{missing}"
        );
        let cni = dns_problem("cni", false, OsFamily::Dnf).unwrap();
        assert!(
            cni.contains("`cni` network backend") && cni.contains("dnf install"),
            "{cni}"
        );
    }

    #[test]
    fn the_backend_is_asked_again_when_a_file_deciding_it_changes() {
        let dir = std::env::temp_dir().join(format!("xtask-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("containers.conf");
        let files = [conf.clone(), dir.join("absent")];
        let before = files_key("4.3.1", &files).unwrap();
        std::fs::write(&conf, "[network]\nnetwork_backend = \"cni\"\n").unwrap();
        let written = files_key("4.3.1", &files).unwrap();
        assert_ne!(before, written, "a new file went unnoticed");
        assert_eq!(written, files_key("4.3.1", &files).unwrap());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&conf)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_ne!(
            written,
            files_key("4.3.1", &files).unwrap(),
            "an edit went unnoticed"
        );
        assert_ne!(
            written,
            files_key("5.0.0", &files).unwrap(),
            "an upgrade went unnoticed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
