//! Reading a run's facts from the host, once: the user, the git revision, the clock and a
//! random run id ([`Facts::gather`]). Planners get the [`Facts`] and derive every name from
//! them; nothing else reads these.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::exec::process::quick;
use crate::plan::facts::{check_tag, sanitize_user, Facts};

impl Facts {
    /// Reads the user, git revision, time, `IMAGE_TAG` and a random run id.
    pub fn gather(root: &Path) -> Result<Facts> {
        let image_tag = std::env::var("IMAGE_TAG").ok().filter(|t| !t.is_empty());
        if let Some(t) = &image_tag {
            check_tag(t).map_err(|e| anyhow::anyhow!("IMAGE_TAG: {e}"))?;
        }
        let revision = git_revision(root);
        Ok(Facts {
            user: sanitize_user(&login_name()),
            git7: if revision == "unknown" {
                revision.clone()
            } else {
                revision[..7].to_string()
            },
            revision,
            unix: unix_now(),
            image_tag,
            run_id: random_id(),
        })
    }
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
}
