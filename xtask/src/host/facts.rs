//! Reading a run's facts from the host, once: the user, the git revision, the clock and a
//! random run id ([`gather`]). Planners get the [`Facts`] and derive every name from
//! them; nothing else reads these.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::exec::process::quick;
use crate::plan::facts::{check_tag, sanitize_user, Facts};

/// Reads the user, git revision, time, `IMAGE_TAG` and a random run id.
pub fn gather(root: &Path) -> Result<Facts> {
    let image_tag = std::env::var("IMAGE_TAG").ok().filter(|t| !t.is_empty());
    if let Some(t) = &image_tag {
        check_tag(t).map_err(|e| anyhow::anyhow!("IMAGE_TAG: {e}"))?;
    }
    let revision = git_revision(root);
    let user = sanitize_user(&login_name());
    Ok(Facts {
        unix: unique_second(&user, unix_now()),
        user,
        git7: if revision == "unknown" {
            revision.clone()
        } else {
            revision[..7].to_string()
        },
        revision,
        image_tag,
        run_id: random_id(),
    })
}

/// The second of a run's service tags (`{service}-{user}-{git7}-{unix}`), unique among this
/// user's runs on this host: two runs starting in one second (two consumers whose stacks both
/// build `notification`, two E2E runs in one kept cluster) would otherwise share a tag. The last
/// second given out is kept in `$TMPDIR/xtask-tag-second-{user}` (locked); a later run takes
/// `max(now, last + 1)`. Without that file (unwritable), the clock alone.
fn unique_second(user: &str, now: u64) -> u64 {
    use std::io::{Read, Seek, Write};
    let path = std::env::temp_dir().join(format!("xtask-tag-second-{user}"));
    let open = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path);
    let Ok(mut file) = open else {
        return now;
    };
    if file.lock().is_err() {
        return now;
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let last = text.trim().parse::<u64>().unwrap_or(0);
    // A clock set back by more than a day makes the file's second meaningless.
    let second = if last >= now && last - now < 86_400 {
        last + 1
    } else {
        now
    };
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(second.to_string().as_bytes()));
    second
}

/// This host's name (kernel hostname), for labels of things in shared clusters: a pid means
/// something only on its own host.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| crate::plan::facts::sanitize_user(h.trim()))
        .unwrap_or_else(|_| "unknown".into())
}

/// The login name: the password database first (what `whoami` prints), then `$USER`/`$LOGNAME`.
pub fn login_name() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes into our buffer and `pw`, which we only
    // read when it reports success and a non-null result.
    unsafe {
        let uid = libc::getuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 4096];
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0 && !result.is_null() && !pw.pw_name.is_null() {
            if let Ok(n) = std::ffi::CStr::from_ptr(pw.pw_name).to_str() {
                if !n.is_empty() {
                    return n.to_string();
                }
            }
        }
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The full hex revision of HEAD, or `unknown` (no git, not a checkout, or no commit yet).
pub fn git_revision(root: &Path) -> String {
    match quick::git_head(root) {
        Some(h) if h.len() >= 7 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            h.to_ascii_lowercase()
        }
        _ => "unknown".to_string(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Twelve hex digits from a v4 UUID (the OS's random source, not the clock).
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_random_and_48_bits() {
        let a = random_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!((0..8).map(|_| random_id()).any(|b| b != a));
    }

    #[test]
    fn outside_git_the_revision_is_unknown() {
        let dir = std::env::temp_dir().join(format!("xtask-nogit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = git_revision(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out, "unknown");
    }

    #[test]
    fn runs_in_one_second_get_different_tag_seconds() {
        let user = format!("test_{}", random_id());
        let now = unix_now();
        let seconds: Vec<u64> = (0..4).map(|_| unique_second(&user, now)).collect();
        assert_eq!(seconds, [now, now + 1, now + 2, now + 3]);
        assert_eq!(
            unique_second(&user, now + 10),
            now + 10,
            "the clock when it is ahead"
        );
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("xtask-tag-second-{user}")));
    }
}
