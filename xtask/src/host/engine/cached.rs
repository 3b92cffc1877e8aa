//! What the input cache asks of the engine: an image's id, another name for an image, a
//! committed container (a data image), and taking a run's name off a cached image.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{ImageInfo, Ours};
use crate::exec::process::{Cmd, Uninterruptible};
use crate::host::tools::Engine;

impl Engine {
    /// `commit`: a container's file system as an image with our labels (paused meanwhile).
    pub fn commit_cmd(
        &self,
        container: &str,
        reference: &str,
        labels: &BTreeMap<String, String>,
    ) -> Cmd<Uninterruptible> {
        let mut c = self.cmd().args(["commit", "--pause=true"]);
        for (k, v) in labels {
            c = c.arg("--change").arg(format!("LABEL {k}=\"{v}\""));
        }
        c.args([container, reference]).uninterruptible()
    }

    /// `tag SOURCE TARGET`: another name for an image (a state change: uninterruptible).
    pub fn tag_cmd(&self, source: &str, target: &str) -> Cmd<Uninterruptible> {
        self.cmd().args(["tag", source, target]).uninterruptible()
    }

    /// Runs a `tag_cmd` and checks the name is there afterwards. Podman 4.3 loses one of two
    /// names given to one image at the same moment (two components of one image, two runs
    /// naming one cached image): tags are serialised by a host-wide lock, and a lost name is
    /// given again.
    pub fn tag(&self, cmd: &Cmd<Uninterruptible>, target: &str) -> Result<()> {
        let _lock = tag_lock();
        for _ in 0..3 {
            cmd.run()?;
            if self.image_id(target).is_some() {
                return Ok(());
            }
        }
        anyhow::bail!("`{cmd}` succeeded but {target} is not in local storage; run it again")
    }

    /// The cached image with `key`: looked up by the name the cache gave it (one `inspect`),
    /// else by label (a listing, ~7x slower: the name may have been taken off). Only an image
    /// whose labels say it is ours with this key counts.
    pub fn cached_image(&self, name: &str, key: &str) -> Result<Option<Ours<ImageInfo>>> {
        let filter = crate::plan::labels::Filter::cache_key(key);
        let by_name = self
            .cmd()
            .args(["image", "inspect", name])
            .output()
            .ok()
            .filter(|o| o.success())
            .and_then(|o| super::parse_json_array(&o).ok())
            .and_then(|items| items.first().map(super::parse_image))
            .filter(|i| filter.matches(&i.labels));
        match by_name {
            Some(i) => Ok(Some(Ours(i))),
            None => Ok(self.images(&filter)?.into_iter().next()),
        }
    }

    /// The images that `names` name, asked in one `image inspect` (the engine prints those
    /// it has and names the others on stderr), each once, and only those `filter` selects.
    pub fn images_named(
        &self,
        names: &[String],
        filter: &crate::plan::labels::Filter,
    ) -> Result<Vec<Ours<ImageInfo>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.cmd().args(["image", "inspect"]).args(names).output()?;
        let mut items: Vec<ImageInfo> = super::parse_json_array(&out)
            .context("reading image details")?
            .iter()
            .map(super::parse_image)
            .collect();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        items.dedup_by(|a, b| a.id == b.id);
        Ok(items
            .into_iter()
            .filter(|i| filter.matches(&i.labels))
            .map(Ours)
            .collect())
    }

    /// The image id of `reference`, if it is in local storage.
    pub fn image_id(&self, reference: &str) -> Option<String> {
        let out = self
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .ok()?;
        out.success().then(|| out.stdout.trim().to_string())
    }

    /// Takes one of our names off a cached image (the image stays for other runs). Only names
    /// the image carries, of an image selected by our labels.
    pub fn untag(&self, image: &Ours<ImageInfo>, reference: &str) -> Result<()> {
        if !image.tags.iter().any(|t| t == reference) {
            anyhow::bail!("{} does not carry the name {reference}", image.id);
        }
        let c = if self.is_podman() {
            self.cmd().args(["untag", &image.id, reference])
        } else {
            // docker: `rmi` of one of several names removes only that name.
            self.cmd().args(["rmi", reference])
        };
        c.uninterruptible()
            .run()
            .with_context(|| format!("removing the name {reference}"))?;
        Ok(())
    }

    /// `push` of a local image to its registry reference; the digest goes to `digest_file`
    /// (podman; docker prints it). Credentials come from the engine's own auth file.
    pub fn push_cmd(
        &self,
        reference: &str,
        digest_file: &std::path::Path,
    ) -> Cmd<crate::exec::process::Timed> {
        let c = if self.is_podman() {
            self.cmd()
                .args([
                    "--log-level=debug",
                    "push",
                    &crate::host::shared::tls_flag(reference),
                ])
                .arg("--digestfile")
                .arg(digest_file)
                .arg(reference)
        } else {
            self.cmd().args(["push", reference])
        };
        c.timeout(std::time::Duration::from_secs(1800))
    }
}

/// A lock on `$TMPDIR/xtask-engine-tag.lock`, held while it lives; none when the file cannot be
/// opened (then the check after the tag still catches a lost name).
fn tag_lock() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join("xtask-engine-tag.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}
