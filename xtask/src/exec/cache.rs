//! Input-addressed images: a key over everything that goes into an image (every file of its
//! build context, the Dockerfile, build arguments, the base image's id), so that an image whose
//! key exists is not built again, and an explanation of what changed when it is.
//!
//! The inputs of every image built are kept in `target/xtask/cache/inputs/<key>.json` (to say
//! which input changed next time) and each use touches `target/xtask/cache/used/<key>` (its
//! modification time is the last use, for `clean-images`). File hashes are remembered by path,
//! size and modification time (`hashes.json`), so a warm run hashes nothing it hashed before.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};

/// Build arguments that change on every commit or second without changing what an image does
/// (the OCI labels' values): left out of the key, so a reused image keeps the revision and
/// time of the build that made it.
pub const VOLATILE_ARGS: [&str; 2] = ["REVISION", "CREATED"];

/// What went into one image: `kind:name` -> a hash or value. Kinds: `file` (a context file,
/// relative), `dockerfile`, `arg`, `base`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inputs(pub BTreeMap<String, String>);

impl Inputs {
    /// Sixteen hex digits over every input (two independent 64-bit hashes).
    pub fn key(&self) -> String {
        let text = serde_json::to_string(&self.0).unwrap_or_default();
        let (mut a, mut b) = (
            Fnv::new(0xcbf2_9ce4_8422_2325),
            Fnv::new(0x8422_2325_cbf2_9ce4),
        );
        a.write(text.as_bytes());
        b.write(text.as_bytes());
        b.write(b"second");
        format!("{:016x}{:016x}", a.finish(), b.finish())[..16].to_string()
    }

    /// Why `self` differs from `old`, in words: `binary changed`, `migrations/0002_x.sql
    /// added`, `base image changed`, `build arg GREETING changed`.
    pub fn explain(&self, old: &Inputs, binary: Option<&str>) -> Vec<String> {
        let mut why = Vec::new();
        let name = |k: &str| -> String {
            match k.split_once(':') {
                Some(("file", f)) if Some(f) == binary => "binary".into(),
                Some(("file", f)) => f.to_string(),
                Some(("arg", a)) => format!("build arg {a}"),
                Some(("base", _)) => "base image".into(),
                Some(("dockerfile", _)) => "Dockerfile".into(),
                _ => k.to_string(),
            }
        };
        for (k, v) in &self.0 {
            match old.0.get(k) {
                None => why.push(format!("{} added", name(k))),
                Some(o) if o != v => why.push(format!("{} changed", name(k))),
                _ => {}
            }
        }
        for k in old.0.keys().filter(|k| !self.0.contains_key(*k)) {
            why.push(format!("{} removed", name(k)));
        }
        why
    }
}

/// FNV-1a, 64 bits: stable across toolchains and machines (std's hashers are not).
struct Fnv(u64);

impl Fnv {
    fn new(seed: u64) -> Fnv {
        Fnv(seed)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The cache's folder: inputs, last uses, remembered file hashes, archives.
pub struct Cache {
    dir: PathBuf,
    hashes: Mutex<BTreeMap<String, (u64, u128, String)>>,
}

impl Cache {
    pub fn open(target: &Path) -> Cache {
        let dir = target.join("xtask").join("cache");
        let hashes = std::fs::read_to_string(dir.join("hashes.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Cache {
            dir,
            hashes: Mutex::new(hashes),
        }
    }

    /// `file:<relative path>` -> hash for every file under `dir` (sorted, symlinks as links).
    pub fn tree(&self, dir: &Path) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        self.walk(dir, dir, &mut out)?;
        Ok(out)
    }

    fn walk(&self, root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let meta = std::fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                self.walk(root, &p, out)?;
            } else if meta.file_type().is_symlink() {
                out.insert(
                    format!("file:{rel}"),
                    format!("link:{}", std::fs::read_link(&p)?.display()),
                );
            } else {
                out.insert(format!("file:{rel}"), self.file(&p, &meta)?);
            }
        }
        Ok(())
    }

    /// A file's hash (with its executable bit), from memory when size and time are unchanged.
    pub fn file(&self, p: &Path, meta: &std::fs::Metadata) -> Result<String> {
        use std::os::unix::fs::PermissionsExt;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = std::fs::canonicalize(p)
            .unwrap_or(p.to_path_buf())
            .display()
            .to_string();
        if let Ok(h) = self.hashes.lock() {
            if let Some((size, t, hash)) = h.get(&id) {
                if *size == meta.len() && *t == mtime {
                    return Ok(hash.clone());
                }
            }
        }
        let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
        let (mut a, mut buf) = (Fnv::new(0xcbf2_9ce4_8422_2325), vec![0u8; 1 << 16]);
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            a.write(&buf[..n]);
        }
        let exec = meta.permissions().mode() & 0o111 != 0;
        let hash = format!("{:016x}{}", a.finish(), if exec { "x" } else { "" });
        if let Ok(mut h) = self.hashes.lock() {
            h.insert(id, (meta.len(), mtime, hash.clone()));
        }
        Ok(hash)
    }

    /// Keeps what was hashed for the next run.
    pub fn save_hashes(&self) {
        if let Ok(h) = self.hashes.lock() {
            let _ = std::fs::create_dir_all(&self.dir);
            if let Ok(text) = serde_json::to_string(&*h) {
                let _ = crate::exec::record::write_atomically(
                    &self.dir.join("hashes.json"),
                    text.as_bytes(),
                );
            }
        }
    }

    /// Remembers the inputs of a key (for explaining the next miss) and marks it used now.
    pub fn remember(&self, key: &str, inputs: &Inputs, component: &str) -> Result<()> {
        let dir = self.dir.join("inputs");
        std::fs::create_dir_all(&dir)?;
        let text = serde_json::to_string_pretty(inputs)?;
        std::fs::write(dir.join(format!("{key}.json")), text)?;
        std::fs::write(
            self.dir.join("inputs").join(format!("latest-{component}")),
            key,
        )?;
        self.used(key)
    }

    /// Marks a key used now (its file's modification time is the last use).
    pub fn used(&self, key: &str) -> Result<()> {
        let dir = self.dir.join("used");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(key), b"")?;
        Ok(())
    }

    /// The inputs of the last image built or reused for `component` here, if any.
    pub fn latest(&self, component: &str) -> Option<Inputs> {
        let key =
            std::fs::read_to_string(self.dir.join("inputs").join(format!("latest-{component}")))
                .ok()?;
        let text =
            std::fs::read_to_string(self.dir.join("inputs").join(format!("{}.json", key.trim())))
                .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Unix seconds of the last use of `key` here, if known.
    pub fn last_use(&self, key: &str) -> Option<u64> {
        let m = std::fs::metadata(self.dir.join("used").join(key)).ok()?;
        m.modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    pub fn archives(&self) -> PathBuf {
        self.dir.join("archives")
    }

    /// What names an image's cached archive (`archives/<key>.tar`, its use stamp
    /// `archive-<key>`): the image id's first 16 hex digits.
    pub fn archive_key(image_id: &str) -> String {
        image_id
            .trim_start_matches("sha256:")
            .chars()
            .take(16)
            .collect()
    }

    /// Removes the cached archive of an image that is gone (a newer image of its key replaced
    /// it): no run can copy it again.
    pub fn forget_archive(&self, image_id: &str) -> Result<()> {
        let key = Cache::archive_key(image_id);
        for path in [
            self.archives().join(format!("{key}.tar")),
            self.archives().join(format!("{key}.lock")),
            self.dir.join("used").join(format!("archive-{key}")),
        ] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(
                        anyhow::Error::new(e).context(format!("removing {}", path.display()))
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Inputs {
        Inputs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_key_follows_every_input_and_nothing_else() {
        let a = inputs(&[("file:ds", "1"), ("base", "sha256:aa"), ("arg:X", "y")]);
        assert_eq!(a.key(), a.clone().key());
        assert_eq!(a.key().len(), 16);
        for changed in [
            inputs(&[("file:ds", "2"), ("base", "sha256:aa"), ("arg:X", "y")]),
            inputs(&[("file:ds", "1"), ("base", "sha256:bb"), ("arg:X", "y")]),
            inputs(&[("file:ds", "1"), ("base", "sha256:aa"), ("arg:X", "z")]),
            inputs(&[("file:ds", "1"), ("base", "sha256:aa")]),
        ] {
            assert_ne!(a.key(), changed.key(), "{changed:?}");
        }
    }

    #[test]
    fn misses_are_explained_in_words() {
        let old = inputs(&[
            ("file:ds", "1"),
            ("file:migrations/0001_a.sql", "a"),
            ("base:BASE_IMAGE", "sha256:aa"),
        ]);
        let new = inputs(&[
            ("file:ds", "2"),
            ("file:migrations/0001_a.sql", "a"),
            ("file:migrations/0002_x.sql", "x"),
            ("base:BASE_IMAGE", "sha256:bb"),
        ]);
        assert_eq!(
            new.explain(&old, Some("ds")),
            [
                "base image changed",
                "binary changed",
                "migrations/0002_x.sql added"
            ]
        );
    }

    #[test]
    fn trees_hash_content_and_remember_unchanged_files() {
        let dir = std::env::temp_dir().join(format!("xtask-cache-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        std::fs::write(dir.join("sub/b"), "two").unwrap();
        let c = Cache::open(&dir.join("target"));
        let t1 = c.tree(&dir.join("sub")).unwrap();
        assert_eq!(t1.keys().collect::<Vec<_>>(), ["file:b"]);
        std::fs::write(dir.join("sub/b"), "TWO, longer").unwrap();
        let t2 = c.tree(&dir.join("sub")).unwrap();
        assert_ne!(t1, t2, "a changed file changes its hash");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_gone_images_archive_and_its_stamp_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("xtask-archive-{}", std::process::id()));
        let c = Cache::open(&dir);
        let id = "sha256:0123456789abcdef0123456789abcdef";
        assert_eq!(Cache::archive_key(id), "0123456789abcdef");
        std::fs::create_dir_all(c.archives()).unwrap();
        let tar = c.archives().join("0123456789abcdef.tar");
        let other = c.archives().join("fedcba9876543210.tar");
        std::fs::write(&tar, "x").unwrap();
        std::fs::write(c.archives().join("0123456789abcdef.lock"), "").unwrap();
        std::fs::write(&other, "y").unwrap();
        c.used("archive-0123456789abcdef").unwrap();
        c.forget_archive(id).unwrap();
        assert!(!tar.exists() && other.exists());
        assert!(!c.archives().join("0123456789abcdef.lock").exists());
        assert_eq!(c.last_use("archive-0123456789abcdef"), None);
        c.forget_archive(id).expect("forgetting twice is no error");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
