//! Host-wide admission control for cluster creation: at most N `kind create cluster` at once
//! on one host, across every user's runs. A slot is an exclusive lock on one of N files in a
//! shared folder; the kernel releases it when the holder exits, even after kill -9, so a slot can
//! never leak. The holder writes who it is into the file, so waiters can say whom they wait for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _file: File,
}

/// `XTASK_SLOT_DIR`, or a folder under the system's temporary folder shared by all users.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XTASK_SLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kubernaut-xtask-cluster-slots"))
}

fn open_slot(dir: &Path, i: usize) -> Result<File> {
    let path = dir.join(format!("slot-{i}.lock"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(&path)
        .with_context(|| format!("opening the cluster slot {}", path.display()))?;
    // Other users must be able to lock it too, whatever our umask.
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
    Ok(f)
}

/// Tries each of the `n` slots once.
pub fn try_acquire(dir: &Path, n: usize, me: &str) -> Result<Option<Slot>> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    for i in 0..n.max(1) {
        let mut f = open_slot(dir, i)?;
        if f.try_lock().is_ok() {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            let _ = f.write_all(me.as_bytes());
            return Ok(Some(Slot { _file: f }));
        }
    }
    Ok(None)
}

/// Who holds the slots now (what holders wrote), for the waiting message.
pub fn holders(dir: &Path, n: usize) -> Vec<String> {
    (0..n.max(1))
        .filter_map(|i| {
            let mut s = String::new();
            File::open(dir.join(format!("slot-{i}.lock")))
                .ok()?
                .read_to_string(&mut s)
                .ok()?;
            let s = s.trim().to_string();
            (!s.is_empty()).then_some(s)
        })
        .collect()
}

/// Waits for a slot, reporting the wait through `waiting`, until `stopped` says to give up.
pub fn acquire(
    dir: &Path,
    n: usize,
    me: &str,
    timeout: Duration,
    waiting: &dyn Fn(&[String]),
    stopped: &dyn Fn() -> bool,
) -> Result<Slot> {
    let start = Instant::now();
    loop {
        if let Some(s) = try_acquire(dir, n, me)? {
            return Ok(s);
        }
        waiting(&holders(dir, n));
        if stopped() {
            anyhow::bail!("stopped while waiting for a cluster slot");
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "no cluster slot became free in {}s ({n} slots in {}; held by: {}); raise \
                 --cluster-slots if this host can take more clusters at once",
                timeout.as_secs(),
                dir.display(),
                holders(dir, n).join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn at_most_n_holders_and_release_on_drop() {
        let dir =
            std::env::temp_dir().join(format!("xtask-slots-{}", crate::host::facts::random_id()));
        let a = try_acquire(&dir, 2, "alice gateway")
            .unwrap()
            .expect("first slot");
        let b = try_acquire(&dir, 2, "bob notification")
            .unwrap()
            .expect("second slot");
        assert!(
            try_acquire(&dir, 2, "carol").unwrap().is_none(),
            "both taken"
        );
        let mut h = holders(&dir, 2);
        h.sort();
        assert_eq!(h, ["alice gateway", "bob notification"]);
        drop(a);
        let c = try_acquire(&dir, 2, "carol")
            .unwrap()
            .expect("freed by drop");
        drop((b, c));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_reports_and_times_out() {
        let dir =
            std::env::temp_dir().join(format!("xtask-slots-{}", crate::host::facts::random_id()));
        let _held = try_acquire(&dir, 1, "alice").unwrap().unwrap();
        let reported = Cell::new(0);
        let err = acquire(
            &dir,
            1,
            "bob",
            Duration::from_millis(300),
            &|h| {
                assert_eq!(h, ["alice"]);
                reported.set(reported.get() + 1);
            },
            &|| false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("held by: alice"), "{err}");
        assert!(reported.get() >= 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
