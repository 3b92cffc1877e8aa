//! What registry runs (kept and shared clusters) do at run time: push each image (over a
//! run-labelled config, so its digest is this run's alone) and note the digest and the bytes
//! really sent; take an admission slot; apply manifests with every image pinned by the digest
//! its push returned; keep `kubectl port-forward`s up for the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Runner;
use crate::exec::dag::Ctx;
use crate::exec::process::{Background, Cmd};
use crate::exec::record::Event;
use crate::host::kube::Kubectl;
use crate::plan::e2e::shared::Forward;

/// A push: the run's local image, its registry reference, the run labels for the config.
#[derive(Debug, Clone)]
pub struct Push {
    pub local: String,
    pub remote: String,
    pub labels: BTreeMap<String, String>,
    pub context: std::path::PathBuf,
}

/// A supervised port-forward: restarted on the same local port whenever it drops.
pub struct Forwarding {
    pub var: String,
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Runner<'_> {
    /// Builds the run-labelled image over `local`, pushes it, notes digest and bytes sent.
    pub(super) fn push(&self, task: &str, p: &Push, ctx: &Ctx) -> Result<String> {
        std::fs::create_dir_all(&p.context)?;
        let dockerfile = p.context.join("Dockerfile");
        std::fs::write(&dockerfile, format!("FROM {}\n", p.local))?;
        self.record.add(&Event::Image {
            reference: p.remote.clone(),
        })?;
        let spec = crate::plan::specs::BuildSpec {
            reference: p.remote.clone(),
            dockerfile,
            context: p.context.clone(),
            labels: p.labels.clone(),
            ..Default::default()
        };
        let build = self.engine.build_cmd(&spec);
        self.log(&build);
        ctx.line.state("labelling", &p.remote);
        build
            .run()
            .with_context(|| format!("building {}", p.remote))?;
        self.record.add(&Event::Pushed {
            reference: p.remote.clone(),
        })?;
        let digest_file = p.context.join("digest");
        let push = self.engine.push_cmd(&p.remote, &digest_file);
        self.log(&push);
        ctx.line.state("pushing", &p.remote);
        let out = push
            .run()
            .with_context(|| format!("pushing {} (does the registry answer?)", p.remote))?;
        let digest = std::fs::read_to_string(&digest_file)
            .ok()
            .map(|d| d.trim().to_string())
            .filter(|d| d.starts_with("sha256:"))
            .or_else(|| docker_digest(&out.stdout))
            .with_context(|| format!("the push of {} gave no digest", p.remote))?;
        let pinned = format!(
            "{}@{digest}",
            p.remote
                .rsplit_once(':')
                .map_or(p.remote.as_str(), |(r, _)| r)
        );
        let sent = bytes_sent(&pinned, &format!("{}{}", out.stdout, out.stderr))?;
        self.pins
            .lock()
            .map_err(|_| anyhow::anyhow!("pins lock poisoned"))?
            .insert(p.remote.clone(), pinned.clone());
        self.set_bytes(task, sent);
        Ok(format!(
            "{pinned} ({} sent)",
            crate::host::disk::human_bytes(sent)
        ))
    }

    /// Applies `text` with every image of `images` replaced by its pinned digest.
    pub(super) fn apply_pinned(
        &self,
        kubectl: &Kubectl,
        text: &str,
        images: &BTreeSet<String>,
    ) -> Result<()> {
        let pins = self
            .pins
            .lock()
            .map_err(|_| anyhow::anyhow!("pins lock poisoned"))?
            .clone();
        let pinned = pin(text, &pins, images)?;
        let cmd = kubectl.apply(&pinned).timeout(Duration::from_secs(60));
        self.log(&cmd);
        cmd.run().context("applying the pinned manifests")?;
        Ok(())
    }

    /// Waits for one of the cluster's `max` admission slots (`docs[i]` creates slot i).
    pub(super) fn admit(
        &self,
        kubectl: &Kubectl,
        system_doc: &str,
        docs: &[String],
        here: &str,
        ctx: &Ctx,
    ) -> Result<String> {
        kubectl
            .apply(system_doc)
            .timeout(Duration::from_secs(60))
            .run()?;
        // Dead and expired runs go first: their slots and namespaces would hold this run back.
        ctx.line
            .state("sweeping", "namespaces of dead or expired runs");
        let now = crate::host::facts::unix_now();
        match crate::host::shared::sweep(kubectl, here, now, &|_| false, false) {
            Ok(gone) if !gone.is_empty() => ctx.line.state("swept", &gone.join(", ")),
            Ok(_) => {}
            Err(e) => ctx.line.state("sweep failed (going on)", &format!("{e:#}")),
        }
        let start = Instant::now();
        loop {
            let now = crate::host::facts::unix_now();
            if let Some(slot) =
                crate::host::shared::try_slot(kubectl, docs.len(), here, now, &|i| docs[i].clone())?
            {
                self.record.add(&Event::Slot {
                    name: slot.clone(),
                    kubeconfig: kubectl.kubeconfig.clone(),
                    context: kubectl.context.clone(),
                })?;
                return Ok(slot);
            }
            let holders: Vec<String> = crate::host::shared::slots(kubectl)?
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s.label(crate::plan::labels::RUN),
                        s.label(crate::plan::labels::OWNER)
                    )
                })
                .collect();
            ctx.line
                .state("waiting for a run slot", &holders.join(", "));
            if start.elapsed() > Duration::from_secs(1800) {
                bail!(
                    "no run slot in 30 minutes (held by {}); raise --max-runs or wait",
                    holders.join(", ")
                );
            }
            ctx.pause(Duration::from_secs(2))?;
        }
    }

    /// Starts a supervised port-forward and notes the URL the tests get.
    pub(super) fn forward(
        &self,
        kubectl: &Kubectl,
        namespace: &str,
        f: &Forward,
        ctx: &Ctx,
    ) -> Result<String> {
        let first = kubectl.port_forward(namespace, &f.service, 0, f.target_port);
        self.log(&first);
        let (child, local) = start_forward(&first)?;
        let stop = Arc::new(AtomicBool::new(false));
        let again = kubectl.port_forward(namespace, &f.service, local, f.target_port);
        supervise(child, again, Arc::clone(&stop));
        let url = f.url.replace("{local}", &local.to_string());
        ctx.line.state("forwarding", &url);
        self.forwards
            .lock()
            .map_err(|_| anyhow::anyhow!("forwards lock poisoned"))?
            .push(Forwarding {
                var: f.var.clone(),
                url: url.clone(),
                stop,
            });
        Ok(url)
    }

    /// The tests' URLs of the port-forwards that are up.
    pub fn forwarded_urls(&self) -> BTreeMap<String, String> {
        self.forwards
            .lock()
            .map(|f| f.iter().map(|f| (f.var.clone(), f.url.clone())).collect())
            .unwrap_or_default()
    }

    /// Stops every port-forward.
    pub fn stop_forwards(&self) {
        if let Ok(mut f) = self.forwards.lock() {
            f.clear();
        }
    }
}

/// Starts `kubectl port-forward` and reads the local port from `Forwarding from 127.0.0.1:N`.
fn start_forward(cmd: &Cmd) -> Result<(Background, u16)> {
    let child = cmd.background()?;
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(line) = child.line(Duration::from_millis(500)) else {
            if !child.running() {
                break;
            }
            continue;
        };
        if let Some(port) = forwarded_port(&line) {
            return Ok((child, port));
        }
        said.push(line);
    }
    bail!(
        "`{cmd}` did not start forwarding:\n{}",
        crate::exec::process::indent(&said.join("\n"))
    )
}

/// `Forwarding from 127.0.0.1:34567 -> 8080` -> 34567.
pub fn forwarded_port(line: &str) -> Option<u16> {
    let rest = line.trim().strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Restarts the forward on the same local port whenever it exits, until `stop`.
fn supervise(mut child: Background, again: Cmd, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut pause = Duration::from_millis(200);
        while !stop.load(Ordering::SeqCst) {
            if child.running() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
            if let Ok((c, _)) = start_forward(&again) {
                child = c;
                pause = Duration::from_millis(200);
            }
        }
        child.stop();
    });
}

/// docker push prints `<tag>: digest: sha256:... size: N`.
fn docker_digest(out: &str) -> Option<String> {
    let i = out.find("digest: sha256:")?;
    out[i + "digest: ".len()..]
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// `text` with every image of `images` replaced by the digest reference its push returned
/// (plain or quoted YAML scalars); an error if one was not pushed or is still named by tag.
fn pin(text: &str, pins: &BTreeMap<String, String>, images: &BTreeSet<String>) -> Result<String> {
    let mut pinned = text.to_string();
    for image in images {
        let Some(digest_ref) = pins.get(image) else {
            bail!("{image} was not pushed by this run; nothing is applied");
        };
        for q in ["", "\"", "'"] {
            pinned = pinned.replace(
                &format!("image: {q}{image}{q}\n"),
                &format!("image: {q}{digest_ref}{q}\n"),
            );
        }
        // Digest references contain no tag, so any mention left is an unpinned image.
        if pinned.contains(image.as_str()) {
            bail!("{image} is still named by tag after pinning; nothing is applied");
        }
    }
    Ok(pinned)
}

/// What the push really uploaded: the manifest, and every blob of it the engine uploaded.
/// Podman's debug log names each upload (`Upload of layer X complete`, `PUT ...&digest=X`);
/// blobs it skipped or mounted from another repository are not counted. Docker names the
/// blobs it did not send (`X: Layer already exists`, `X: Mounted from`).
fn bytes_sent(pinned: &str, push_output: &str) -> Result<u64> {
    let raw = Cmd::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &crate::host::shared::tls_flag(pinned),
            &format!("docker://{pinned}"),
        ])
        .timeout(Duration::from_secs(60))
        .read()
        .with_context(|| format!("reading the manifest of {pinned}"))?;
    Ok(sent_of_manifest(&raw, push_output)? + raw.len() as u64)
}

/// The sizes of a manifest's blobs (layers and config) the push output shows as sent.
fn sent_of_manifest(manifest: &str, push_output: &str) -> Result<u64> {
    let m: serde_json::Value = serde_json::from_str(manifest).context("the pushed manifest")?;
    let mut blobs: Vec<&serde_json::Value> = m["layers"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    blobs.push(&m["config"]);
    let podman = push_output.contains("level=debug");
    let sent = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        if podman {
            push_output.contains(&format!("Upload of layer {digest} complete"))
                || push_output.contains(&format!("digest=sha256%3A{hex}"))
        } else {
            let short = &hex[..12.min(hex.len())];
            !push_output.contains(&format!("{short}: Layer already exists"))
                && !push_output.contains(&format!("{short}: Mounted from"))
        }
    };
    Ok(blobs
        .iter()
        .filter(|b| sent(b["digest"].as_str().unwrap_or_default()))
        .map(|b| b["size"].as_u64().unwrap_or(0))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_pinned_quoted_or_not() {
        let r = "localhost:5001/redis:n-1".to_string();
        let d = "localhost:5001/redis@sha256:ab".to_string();
        let pins = [(r.clone(), d.clone())].into();
        let images = [r.clone()].into();
        let text = format!("a:\n  image: \"{r}\"\nb:\n  image: {r}\n");
        let out = pin(&text, &pins, &images).unwrap();
        assert_eq!(out, format!("a:\n  image: \"{d}\"\nb:\n  image: {d}\n"));
        let odd = format!("env: {r}\n");
        assert!(
            pin(&odd, &pins, &images).is_err(),
            "a mention left unpinned"
        );
        assert!(pin(&text, &BTreeMap::new(), &images).is_err(), "not pushed");
    }

    #[test]
    fn only_uploaded_blobs_count_as_sent() {
        let manifest = r#"{"config":{"digest":"sha256:c0","size":900},
            "layers":[{"digest":"sha256:aa","size":1000},{"digest":"sha256:bb","size":50}]}"#;
        let podman = "level=debug msg=\"Skipping blob sha256:11 (already present):\"\n\
            level=debug msg=\"PUT http://r/v2/x/blobs/uploads/u?_state=s&digest=sha256%3Abb\"\n\
            level=debug msg=\"Upload of layer sha256:c0 complete\"";
        assert_eq!(sent_of_manifest(manifest, podman).unwrap(), 950);
        let again = "level=debug msg=\"Skipping blob sha256:11 (already present):\"";
        assert_eq!(sent_of_manifest(manifest, again).unwrap(), 0);
        let docker = "aa: Layer already exists\nbb: Pushed\n";
        assert_eq!(sent_of_manifest(manifest, docker).unwrap(), 950);
    }

    #[test]
    fn forwarded_ports_and_docker_digests_are_read() {
        assert_eq!(
            forwarded_port("Forwarding from 127.0.0.1:34567 -> 8080"),
            Some(34567)
        );
        assert_eq!(forwarded_port("Forwarding from [::1]:34567 -> 8080"), None);
        assert_eq!(
            docker_digest("two: digest: sha256:abcd size: 528\n").as_deref(),
            Some("sha256:abcd")
        );
    }
}
