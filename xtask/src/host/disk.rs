//! Free disk space where a run writes: `target/xtask` (run folders, image archives, the archive
//! cache) and the engine's image store (podman's configured `graphroot`, docker's root
//! folder). A run that fills the disk fails halfway, on "no space left on device" in a save or
//! a build; this check stops it before anything is created, and names what frees space.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::host::tools::Engine;

const GB: u64 = 1_000_000_000;
/// Below this a run is refused (`XTASK_MIN_FREE_GB` sets it; 0 turns the check off).
const REFUSE_BELOW_GB: u64 = 2;
/// Below this a run says that space is low.
const WARN_BELOW_GB: u64 = 8;

/// A place a run writes to, and the space free on its filesystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub what: String,
    pub path: PathBuf,
    pub free: u64,
}

/// Refuses a run when a place has less than the minimum free; `Ok(Some(line))` when one has
/// less than the warning level.
pub fn check(engine: &Engine, target: &Path) -> Result<Option<String>> {
    let refuse = match std::env::var("XTASK_MIN_FREE_GB") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!("XTASK_MIN_FREE_GB={v:?} is not a whole number of GB; unset it or give one, e.g. 2 (0 turns the check off)")
        })?,
        Err(_) => REFUSE_BELOW_GB,
    };
    if refuse == 0 {
        return Ok(None);
    }
    let mut seen = BTreeSet::new();
    let places: Vec<Place> = places(engine, target)
        .into_iter()
        .filter_map(|(what, path)| {
            let (fs, free) = available(&path)?;
            seen.insert(fs).then_some(Place { what, path, free })
        })
        .collect();
    verdict(&places, refuse * GB, WARN_BELOW_GB.max(refuse) * GB)
}

/// The decision, from the places' free space: pure, for the tests.
pub fn verdict(places: &[Place], refuse: u64, warn: u64) -> Result<Option<String>> {
    let show = |p: &Place| {
        format!(
            "{} free on the filesystem of {} ({})",
            human_bytes(p.free),
            p.path.display(),
            p.what
        )
    };
    let next = "`cargo xtask clean-images --older-than 1h` removes this tool's images and \
                archives that no live run uses";
    let short: Vec<String> = places
        .iter()
        .filter(|p| p.free < refuse)
        .map(show)
        .collect();
    if !short.is_empty() {
        bail!(
            "not enough disk space to start a run: {}; a run needs at least {} GB to save \
             and load its images. {next}; or set XTASK_MIN_FREE_GB=0 to run anyway",
            short.join(", "),
            refuse / GB
        );
    }
    let low: Vec<String> = places.iter().filter(|p| p.free < warn).map(show).collect();
    Ok((!low.is_empty()).then(|| format!("disk space is low: {}; {next}", low.join(", "))))
}

/// Where a run writes: the target folder, and the engine's image store if it is found.
fn places(engine: &Engine, target: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![("run folders and archives".to_string(), target.to_path_buf())];
    let store = if engine.is_podman() {
        podman_store()
    } else {
        docker_store(engine)
    };
    if let Some(s) = store.filter(|s| s.is_dir()) {
        out.push((format!("{}'s image store", engine.name()), s));
    }
    out
}

/// podman's `graphroot`: from the storage.conf podman reads (`CONTAINERS_STORAGE_CONF`, else
/// the user's for rootless podman, else the system's), else its default. Read here: `podman
/// info` would measure the store, ~0.5 s.
fn podman_store() -> Option<PathBuf> {
    let root = crate::host::packages::is_root();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut files: Vec<PathBuf> = std::env::var_os("CONTAINERS_STORAGE_CONF")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if root {
        files.extend(
            [
                "/etc/containers/storage.conf",
                "/usr/share/containers/storage.conf",
            ]
            .map(PathBuf::from),
        );
    } else if let Some(h) = &home {
        let config =
            std::env::var_os("XDG_CONFIG_HOME").map_or_else(|| h.join(".config"), PathBuf::from);
        files.push(config.join("containers/storage.conf"));
    }
    // The first file that exists decides, as in podman.
    let configured = files
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| graphroot(&text));
    configured.or_else(|| {
        if root {
            Some(PathBuf::from("/var/lib/containers/storage"))
        } else {
            home.map(|h| h.join(".local/share/containers/storage"))
        }
    })
}

/// `graphroot = "..."` of the `[storage]` table of a storage.conf (pure).
pub fn graphroot(text: &str) -> Option<PathBuf> {
    let mut table = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if table == "[storage]" && k.trim() == "graphroot" {
            let v = v
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            return (!v.is_empty()).then(|| PathBuf::from(v));
        }
    }
    None
}

/// The daemon's root folder, as it says (`docker info`, 5 s at most): right for a daemon
/// started with its own `--data-root`, as this project's tests start one.
fn docker_store(engine: &Engine) -> Option<PathBuf> {
    let out = engine
        .cmd()
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .timeout(std::time::Duration::from_secs(5))
        .output()
        .ok()?;
    let dir = out.stdout.trim();
    (out.success() && dir.starts_with('/')).then(|| PathBuf::from(dir))
}

/// Bytes as this tool writes them (decimal units, as the engines print image sizes).
pub fn human_bytes(b: u64) -> String {
    match b {
        0..=999_999 => format!("{} kB", b / 1000),
        1_000_000..=999_999_999 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// The filesystem holding `path` (its nearest existing ancestor): its id and the bytes an
/// unprivileged user may still write.
fn available(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path; statvfs only writes into `st`, which we
    // read only when it reports success.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_fsid as u64, st.f_bavail as u64 * st.f_frsize as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(what: &str, gb_tenths: u64) -> Place {
        Place {
            what: what.into(),
            path: PathBuf::from(format!("/{what}")),
            free: gb_tenths * GB / 10,
        }
    }

    #[test]
    fn graphroot_is_read_from_the_storage_table_only() {
        let text = "[storage]\ndriver = \"overlay\"\n# graphroot = \"/commented\"\n\
                    graphroot = \"/srv/containers/storage\" # a big disk\n\
                    [storage.options]\ngraphroot = \"/not/this\"\n";
        assert_eq!(
            graphroot(text),
            Some(PathBuf::from("/srv/containers/storage"))
        );
        assert_eq!(graphroot("[storage.options]\ngraphroot = \"/x\"\n"), None);
        assert_eq!(graphroot("[storage]\ngraphroot = \"\"\n"), None);
        assert_eq!(
            graphroot("[storage]\ngraphroot='/single'\n"),
            Some(PathBuf::from("/single"))
        );
    }

    #[test]
    fn refuses_below_the_minimum_and_warns_below_the_low_mark() {
        let (refuse, warn) = (2 * GB, 8 * GB);
        let plenty = [place("target", 400), place("store", 90)];
        assert_eq!(verdict(&plenty, refuse, warn).unwrap(), None);
        let low = [place("target", 400), place("store", 51)];
        let line = verdict(&low, refuse, warn).unwrap().expect("a warning");
        assert!(
            line.contains("5.10 GB free on the filesystem of /store (store)"),
            "{line}"
        );
        assert!(!line.contains("/target"), "{line}");
        let short = [place("target", 15), place("store", 51)];
        let e = verdict(&short, refuse, warn).unwrap_err().to_string();
        assert!(
            e.contains("1.50 GB free on the filesystem of /target (target)"),
            "{e}"
        );
        assert!(e.contains("clean-images --older-than 1h") && e.contains("XTASK_MIN_FREE_GB=0"));
    }

    #[test]
    fn the_free_space_of_a_path_not_made_yet_is_its_parents() {
        let dir = std::env::temp_dir();
        let (fs, free) = available(&dir).expect("statvfs of the temp folder");
        assert!(free > 0);
        assert_eq!(
            available(&dir.join("not-made-yet/deeper")).map(|a| a.0),
            Some(fs)
        );
    }
}
