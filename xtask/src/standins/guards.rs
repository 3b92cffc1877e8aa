//! File-system guards of the stand-in builds: proc mounted in a chroot (unmounted on drop), an
//! image's work tree and tar (removed on drop), the one-build-at-a-time lock, and removing a
//! tree only once nothing is mounted in it.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::process::Cmd;
use crate::exec::progress::Progress;

/// The mount points at or below `dir` in a `/proc/self/mountinfo` text, deepest first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts every mount point under `dir` (leftovers of a killed run), then removes it. Refuses
/// to remove a tree that still has something mounted in it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() && !dir.is_symlink() {
        return Ok(());
    }
    for m in mounts_under(&mountinfo(), dir) {
        let _ = Cmd::new("umount").arg(&m).output();
    }
    let left = mounts_under(&mountinfo(), dir);
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} still has file systems mounted ({}); unmount them (`umount -l PATH`) and run again",
            dir.display(),
            list.join(", ")
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// proc mounted in a chroot; unmounted on drop, also when the install failed.
pub struct ProcMount {
    target: PathBuf,
}

impl ProcMount {
    pub fn mount(root: &Path) -> Result<ProcMount> {
        let target = root.join("proc");
        fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
        Cmd::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target)
            .run()
            .context("mounting proc in the chroot")?;
        Ok(ProcMount { target })
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let ok = Cmd::new("umount")
            .arg(&self.target)
            .output()
            .is_ok_and(|o| o.success());
        if !ok {
            // Something still runs in the chroot: detach now, the kernel finishes later.
            let _ = Cmd::new("umount").arg("-l").arg(&self.target).output();
        }
    }
}

/// The work tree and tar file of one image; both removed on drop.
pub struct Work<'a> {
    pub root: PathBuf,
    pub tar: PathBuf,
    progress: &'a Progress,
}

impl<'a> Work<'a> {
    /// `work-<service>` and `<service>.tar` in `dir`, left over ones removed first.
    pub fn new(dir: &Path, service: &str, progress: &'a Progress) -> Result<Work<'a>> {
        let root = dir.join(format!("work-{service}"));
        let tar = dir.join(format!("{service}.tar"));
        remove_tree(&root)?;
        let _ = fs::remove_file(&tar);
        Ok(Work {
            root,
            tar,
            progress,
        })
    }

    pub fn remove_root(&self) -> Result<()> {
        remove_tree(&self.root)
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.root) {
            self.progress.println(&format!("warning: {e:#}"));
        }
        let _ = fs::remove_file(&self.tar);
    }
}

/// One `standins` build at a time per workspace (flock, released when the process ends).
pub struct DirLock {
    _file: fs::File,
}

impl DirLock {
    pub fn take(path: &Path) -> Result<DirLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            bail!(
                "another `cargo xtask standins` is building (it holds {}); wait for it to finish, then run again",
                path.display()
            );
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_tree_deepest_first() {
        let info = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
90 30 0:5 / /w/target/work-postgres/proc rw - proc proc rw
91 90 0:6 / /w/target/work-postgres/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw
92 30 0:7 / /w/target/work\\040two/proc rw - proc proc rw
93 30 0:8 / /w/target/work-postgres2/proc rw - proc proc rw
";
        let m = mounts_under(info, Path::new("/w/target/work-postgres"));
        assert_eq!(
            m,
            vec![
                PathBuf::from("/w/target/work-postgres/proc/sys/fs/binfmt_misc"),
                PathBuf::from("/w/target/work-postgres/proc")
            ]
        );
        assert_eq!(
            mounts_under(info, Path::new("/w/target/work two")),
            vec![PathBuf::from("/w/target/work two/proc")]
        );
        assert!(mounts_under(info, Path::new("/elsewhere")).is_empty());
    }
}
