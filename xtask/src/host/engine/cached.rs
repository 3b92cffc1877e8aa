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
