//! Container engine operations, for podman and docker: every difference between the two is
//! decided here (and in `builder`, `parse`), never by callers.
//!
//! Argument vectors are built by pure functions (`*_args`), tested without an engine. Listing
//! always goes through a label [`Filter`]; what a listing returns is wrapped in [`Ours`], whose
//! constructor is private to this module, and the removal functions accept only `Ours`. So a
//! removal can only ever act on something that was selected by our labels (and re-checked).
//!
//! What differs, and how it is handled:
//! - `run`: both get `--pull=never` (a missing image fails at once instead of trying a
//!   registry); docker gets `--add-host host.containers.internal:host-gateway` (podman adds that
//!   name itself) and `host.docker.internal`, so a container reaches the host by the same name
//!   on both.
//! - `build`: see [`Builder`] (podman `--pull=never --layers=false`; docker BuildKit or legacy).
//! - image listing: podman `images --all` (older runs built with layers); docker top-level
//!   `images` only: its legacy builder's intermediate images carry our labels too, and are
//!   deleted with their tagged child. Removal then tolerates what went with another image.
//! - `rm --time 0` is podman's; docker's `rm --force` kills at once.
//! - sizes: podman's `system df` gives numbers, docker's human text ([`parse_human_size`]).
//! - which images containers use: podman's `ps {{.ImageID}}`; docker's container `inspect`.
//! - label filters: docker ANDs several `label=` terms, podman's `images` ORs them; every
//!   listing re-checks the labels it got back ([`Filter::matches`]), so both are safe.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::exec::process::{Cmd, Output, Uninterruptible};
use crate::host::tools::Engine;
use crate::plan::labels::Filter;
pub use crate::plan::specs::{BuildSpec, ContainerSpec};

/// A resource selected through one of our label filters. Only this module can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ours<T>(T);

impl<T> std::ops::Deref for Ours<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Pure selections (`removal::superseded`) take plain values in their tests and `Ours` here.
impl<T> std::borrow::Borrow<T> for Ours<T> {
    fn borrow(&self) -> &T {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub status: String,
    /// Host ports published by the container.
    pub host_ports: Vec<u16>,
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub size: u64,
    /// Unix seconds, from our `created` label (else 0).
    pub created: u64,
    /// The image it was built on, where the engine records one (a layered build's
    /// intermediate image, a commit's image); bare hex, or empty.
    pub parent: String,
}

impl ImageInfo {
    /// The id's first twelve hex digits, as the engines print it.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

impl Engine {
    pub fn run_args(&self, s: &ContainerSpec) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            "-d".into(),
            "--pull=never".into(),
            "--name".into(),
            s.name.clone(),
        ];
        a.extend(["--network".into(), s.network.clone()]);
        a.extend(self.host_alias_args());
        for (k, v) in &s.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        // Names only: the values (passwords among them) reach the engine through its own
        // environment (`run_cmd`), never its argv, logs or records.
        for k in s.env.keys() {
            a.extend(["--env".into(), k.clone()]);
        }
        for (h, c) in &s.publish {
            a.extend(["--publish".into(), format!("{h}:{c}")]);
        }
        for (src, dst) in &s.mounts {
            a.extend(["--volume".into(), format!("{}:{dst}:ro", src.display())]);
        }
        // docker takes one word for --entrypoint; the rest of `command` goes before `args`.
        if let Some((entry, rest)) = s.command.split_first() {
            a.extend(["--entrypoint".into(), entry.clone()]);
            a.push(s.image.clone());
            a.extend(rest.iter().cloned());
        } else {
            a.push(s.image.clone());
        }
        a.extend(s.args.iter().cloned());
        a
    }

    /// `--add-host` arguments that give a container the host under `host.containers.internal`
    /// (podman adds it by itself) and, on docker, `host.docker.internal` as well.
    pub fn host_alias_args(&self) -> Vec<String> {
        if self.is_podman() {
            return Vec::new();
        }
        [HOST_ALIAS, "host.docker.internal"]
            .iter()
            .flat_map(|n| ["--add-host".to_string(), format!("{n}:host-gateway")])
            .collect()
    }

    pub fn network_create_args(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut a = vec!["network".to_string(), "create".into()];
        for (k, v) in labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        a.push(name.to_string());
        a
    }

    pub fn run_cmd(&self, s: &ContainerSpec) -> Cmd<Uninterruptible> {
        self.cmd()
            .args(self.run_args(s))
            .envs(&s.env)
            .uninterruptible()
    }

    pub fn run_container(&self, s: &ContainerSpec) -> Result<String> {
        self.run_cmd(s)
            .read()
            .with_context(|| format!("starting container {}", s.name))
    }

    pub fn network_create_cmd(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Cmd<Uninterruptible> {
        self.cmd()
            .args(self.network_create_args(name, labels))
            .uninterruptible()
    }

    pub fn create_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.network_create_cmd(name, labels)
            .run()
            .with_context(|| format!("creating network {name}"))?;
        Ok(())
    }

    pub fn build_cmd(&self, s: &BuildSpec) -> Cmd<Uninterruptible> {
        let builder = self.builder();
        let network = self.build_network();
        let mut c = self.cmd().args(build_args_with(&builder, network, s));
        if let Some((k, v)) = builder.env() {
            c = c.env(k, v);
        }
        c.uninterruptible()
    }

    /// Waits for a container to exit (Ctrl-C may stop the waiting, not the container) and
    /// returns its exit code.
    pub fn wait_exit(&self, container: &str, timeout: Duration) -> Result<i64> {
        let out = self
            .cmd()
            .args(["wait", container])
            .timeout(timeout)
            .read()?;
        out.lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| {
                format!(
                    "`{} wait {container}` printed no exit code: {out}",
                    self.name()
                )
            })
    }

    pub fn image_exists(&self, reference: &str) -> bool {
        self.cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .is_ok_and(|o| o.success())
    }

    /// Which of `references` are in local storage, asked in one `image inspect` (a process
    /// each cost ~0.07 s of a 2-core host's CPU): the engine names each one it lacks on
    /// stderr. When its answer does not add up, each is asked on its own.
    pub fn images_exist(&self, references: &[String]) -> BTreeMap<String, bool> {
        let one_by_one = || {
            references
                .iter()
                .map(|r| (r.clone(), self.image_exists(r)))
                .collect()
        };
        let Ok(out) = self
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .args(references)
            .output()
        else {
            return one_by_one();
        };
        match parse::existing(references, &out.stdout, &out.stderr) {
            Some(found) => found,
            None => one_by_one(),
        }
    }

    /// `podman save` of one image into a docker-archive file.
    pub fn save_cmd(&self, reference: &str, archive: &Path) -> Cmd<Uninterruptible> {
        let mut c = self.cmd().arg("save");
        if self.is_podman() {
            c = c.arg("--format=docker-archive");
        }
        c.arg("--output")
            .arg(archive)
            .arg(reference)
            .uninterruptible()
    }

    /// `load` of a docker-archive, with `env` (where the engine is).
    pub fn load_cmd(&self, archive: &Path, env: &[(String, String)]) -> Cmd<Uninterruptible> {
        self.cmd()
            .arg("load")
            .arg("--input")
            .arg(archive)
            .envs(env.iter().cloned())
            .uninterruptible()
    }

    pub fn exec(&self, container: &str, argv: &[String], env: &[(String, String)]) -> Cmd {
        let mut c = self.cmd().arg("exec");
        for (k, v) in env {
            // The name on argv, the value in the engine's environment (see `run_args`).
            c = c.arg("--env").arg(k).env(k, v);
        }
        c.arg(container).args(argv)
    }

    /// The last `n` lines a container wrote (stdout and stderr), for error messages.
    pub fn logs_tail(&self, container: &str, n: usize) -> String {
        match self
            .cmd()
            .args(["logs", "--tail", &n.to_string(), container])
            .timeout(Duration::from_secs(10))
            .output()
        {
            Ok(o) => {
                let mut text = o.stdout;
                text.push_str(&o.stderr);
                text.trim_end().to_string()
            }
            Err(e) => format!("(could not read the logs of {container}: {e:#})"),
        }
    }

    /// Status (`running`, `exited`, ...) and exit code of a container.
    pub fn state(&self, container: &str) -> Result<(String, i64)> {
        let out = self
            .cmd()
            .args([
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                container,
            ])
            .read()?;
        let (status, code) = out.split_once(' ').unwrap_or((out.as_str(), "0"));
        Ok((status.to_string(), code.trim().parse().unwrap_or(-1)))
    }

    // ---- Listing: always through a label filter. ----

    pub fn containers(&self, filter: &Filter) -> Result<Vec<Ours<ContainerInfo>>> {
        let ids = self.ids(&["ps", "-a"], &filter.args(), "{{.ID}}")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .cmd()
            .args(["inspect", "--type", "container"])
            .args(&ids)
            .output()?;
        let items = parse_json_array(&out).context("reading container details")?;
        Ok(items
            .iter()
            .map(parse_container)
            .filter(|c| filter.matches(&c.labels))
            .map(Ours)
            .collect())
    }

    pub fn networks(&self, filter: &Filter) -> Result<Vec<Ours<NetworkInfo>>> {
        let names = self.ids(&["network", "ls"], &filter.args(), "{{.Name}}")?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .cmd()
            .args(["network", "inspect"])
            .args(&names)
            .output()?;
        let items = parse_json_array(&out).context("reading network details")?;
        Ok(items
            .iter()
            .map(|v| NetworkInfo {
                name: str_field(v, &["name", "Name"])
                    .trim_start_matches('/')
                    .to_string(),
                labels: labels_at(v, &[&["labels"], &["Labels"]]),
            })
            .filter(|n| filter.matches(&n.labels))
            .map(Ours)
            .collect())
    }

    pub fn images(&self, filter: &Filter) -> Result<Vec<Ours<ImageInfo>>> {
        // podman: --all, also intermediate images (older runs built with layers). docker:
        // top-level images (tagged ones and dangling leaves): its legacy builder's intermediate
        // images carry our labels too, and go with their tagged child (see `remove_images`).
        let verb: &[&str] = if self.is_podman() {
            &["images", "--all"]
        } else {
            &["images"]
        };
        // Podman ORs image label filters: one term, the rest checked on the details below.
        let terms = if self.is_podman() {
            filter.narrowest_args()
        } else {
            filter.args()
        };
        let ids = self.ids(verb, &terms, "{{.ID}}")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = ids;
        ids.sort();
        ids.dedup();
        let out = self.cmd().args(["image", "inspect"]).args(&ids).output()?;
        let items = parse_json_array(&out).context("reading image details")?;
        Ok(items
            .iter()
            .map(parse_image)
            .filter(|i| filter.matches(&i.labels))
            .map(Ours)
            .collect())
    }

    /// Every running container (ours or not) with its published ports. Read-only: the result
    /// is not `Ours`, so it cannot be passed to a removal; it only names port holders.
    pub fn published_ports(&self) -> Result<Vec<ContainerInfo>> {
        let ids = self.cmd().args(["ps", "--format", "{{.ID}}"]).read()?;
        let ids: Vec<&str> = ids
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .cmd()
            .args(["inspect", "--type", "container"])
            .args(&ids)
            .output()?;
        Ok(parse_json_array(&out)?
            .iter()
            .map(parse_container)
            .collect())
    }

    /// Bytes the engine's image store uses (`system df`), to report what a removal really
    /// freed; `None` where the engine does not say. podman prints a number, docker a text like
    /// `657.3MB` (4 significant digits: the result is that precise).
    pub fn image_store_bytes(&self) -> Option<u64> {
        let out = self
            .cmd()
            .args(["system", "df", "--format", "{{json .}}"])
            .timeout(Duration::from_secs(60))
            .read()
            .ok()?;
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["Type"] == "Images")
            .and_then(|v| match &v["Size"] {
                Value::String(text) => parse_human_size(text),
                n => n.as_u64(),
            })
    }

    /// Ids of the images any container (ours or not) uses: such images are never removed.
    /// podman's `ps` has `{{.ImageID}}`; docker's only a reference or short id, so its
    /// containers are inspected (`{{.Image}}` is the full id there).
    pub fn images_in_use(&self) -> Result<Vec<String>> {
        let out = if self.is_podman() {
            self.cmd()
                .args(["ps", "-a", "--format", "{{.ImageID}}"])
                .read()?
        } else {
            let ids = self.cmd().args(["ps", "-a", "-q", "--no-trunc"]).read()?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // A container removed meanwhile only drops out (its error goes to stderr).
            self.cmd()
                .args(["inspect", "--type", "container", "--format", "{{.Image}}"])
                .args(&ids)
                .output()?
                .stdout
        };
        Ok(out
            .lines()
            .map(|l| l.trim().trim_start_matches("sha256:").to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn ids(&self, verb: &[&str], filter: &[String], format: &str) -> Result<Vec<String>> {
        // A listing can fail while another process removes what it is reading ("image not
        // known"); that passes in a moment.
        let cmd = self
            .cmd()
            .args(verb)
            .args(filter)
            .args(["--format", format]);
        let mut tries = 0;
        let out = loop {
            match cmd.read() {
                Ok(o) => break o,
                Err(_) if tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    // ---- Removal: only what a filtered listing returned. ----

    /// Removes containers (killed at once: these are test stacks), in one process.
    pub fn remove_containers(&self, items: &[Ours<ContainerInfo>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut c = self.cmd().args(["rm", "--force"]);
        if self.is_podman() {
            c = c.args(["--time", "0"]);
        }
        c.args(items.iter().map(|i| i.id.as_str()))
            .uninterruptible()
            .run()
            .context("removing containers")?;
        Ok(())
    }

    pub fn remove_networks(&self, items: &[Ours<NetworkInfo>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.cmd()
            .args(["network", "rm"])
            .args(items.iter().map(|n| n.name.as_str()))
            .uninterruptible()
            .run()
            .context("removing networks")?;
        Ok(())
    }

    /// Removes images by their tags (dangling ones by id), in one process. An image that also
    /// carries a foreign tag only loses ours. When that process fails, only what is still there
    /// counts: an image may have gone as another's parent ("No such image"), or may have been
    /// named before its child ("image has dependent child images"); those still there are
    /// removed one at a time, and only their failures are errors.
    pub fn remove_images(&self, items: &[Ours<ImageInfo>]) -> Result<Output> {
        let refs: Vec<String> = items
            .iter()
            .flat_map(|i| {
                if i.tags.is_empty() {
                    vec![i.id.clone()]
                } else {
                    i.tags.clone()
                }
            })
            .collect();
        if refs.is_empty() {
            return Ok(Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(0),
                stdout: String::new(),
                stderr: String::new(),
            });
        }
        let rmi = |refs: &[String]| self.cmd().arg("rmi").args(refs).uninterruptible();
        let first = rmi(&refs).output().context("removing images")?;
        if first.success() {
            return Ok(first);
        }
        let mut failed = Vec::new();
        for r in refs.iter().filter(|r| self.image_exists(r)) {
            if let Err(e) = rmi(std::slice::from_ref(r)).run() {
                failed.push(format!("{e:#}"));
            }
        }
        if failed.is_empty() {
            return Ok(first);
        }
        anyhow::bail!("removing images: {}", failed.join("\n"))
    }
}

/// The name containers reach the host by, on both engines.
pub const HOST_ALIAS: &str = "host.containers.internal";

/// `build` argv (pure): the builder's flags, `--network` when the daemon needs one for `RUN`
/// steps (see [`Engine::build_network`]), names, labels, arguments, the context.
pub fn build_args_with(builder: &Builder, network: Option<&str>, s: &BuildSpec) -> Vec<String> {
    let mut a = vec!["build".to_string()];
    a.extend(builder.flags().iter().map(|f| f.to_string()));
    if let Some(n) = network {
        a.extend(["--network".into(), n.to_string()]);
    }
    a.extend(["--file".into(), s.dockerfile.display().to_string()]);
    a.extend(["--tag".into(), s.reference.clone()]);
    for t in &s.tags {
        a.extend(["--tag".into(), t.clone()]);
    }
    for (k, v) in &s.labels {
        a.extend(["--label".into(), format!("{k}={v}")]);
    }
    for (k, v) in &s.build_args {
        a.extend(["--build-arg".into(), format!("{k}={v}")]);
    }
    a.push(s.context.display().to_string());
    a
}

mod builder;
mod cached;
pub use builder::Builder;
mod parse;
use parse::{labels_at, parse_json_array, str_field};
pub use parse::{parse_container, parse_human_size, parse_image};

#[cfg(test)]
mod tests;
