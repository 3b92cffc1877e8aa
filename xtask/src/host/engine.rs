//! Container engine operations (podman, or docker where only the binary differs).
//!
//! Argument vectors are built by pure functions (`*_args`), tested without an engine. Listing
//! always goes through a label [`Filter`]; what a listing returns is wrapped in [`Ours`], whose
//! constructor is private to this module, and the removal functions accept only `Ours`. So a
//! removal can only ever act on something that was selected by our labels (and re-checked).

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
}

impl Engine {
    pub fn run_args(&self, s: &ContainerSpec) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            s.name.clone(),
        ];
        a.extend(["--network".into(), s.network.clone()]);
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

    pub fn build_args(&self, s: &BuildSpec) -> Vec<String> {
        let mut a = vec!["build".to_string()];
        if self.is_podman() {
            // No registry is needed or wanted: bases must already be local. No intermediate
            // images: they would carry our labels and be shared as cache between runs.
            a.push("--pull=never".into());
            a.push("--layers=false".into());
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
        self.cmd().args(self.build_args(s)).uninterruptible()
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
        let ids = self.ids(&["ps", "-a"], filter, "{{.ID}}")?;
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
        let names = self.ids(&["network", "ls"], filter, "{{.Name}}")?;
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
        // --all: also intermediate images (older runs built with layers).
        let ids = self.ids(&["images", "--all"], filter, "{{.ID}}")?;
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

    /// Bytes the engine's image store uses (podman's `system df`), to report what a removal
    /// really freed; `None` where the engine does not give a number.
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
            .and_then(|v| v["Size"].as_u64())
    }

    /// Images used by any container (ours or not), as ids or references: such images are never
    /// removed. (`{{.ImageID}}` is podman's; docker's `ps` only has `{{.Image}}`.)
    pub fn images_in_use(&self) -> Result<Vec<String>> {
        let format = if self.is_podman() {
            "{{.ImageID}}"
        } else {
            "{{.Image}}"
        };
        let out = self.cmd().args(["ps", "-a", "--format", format]).read()?;
        Ok(out
            .lines()
            .map(|l| l.trim().trim_start_matches("sha256:").to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn ids(&self, verb: &[&str], filter: &Filter, format: &str) -> Result<Vec<String>> {
        // A listing can fail while another process removes what it is reading ("image not
        // known"); that passes in a moment.
        let cmd = self
            .cmd()
            .args(verb)
            .args(filter.args())
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

    /// Removes images by their tags (dangling ones by id), all in one process. An image that
    /// also carries a foreign tag only loses ours.
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
        self.cmd()
            .arg("rmi")
            .args(&refs)
            .uninterruptible()
            .run()
            .context("removing images")
    }
}

fn parse_json_array(out: &Output) -> Result<Vec<Value>> {
    if !out.success() && out.stdout.trim().is_empty() {
        anyhow::bail!("{}", out.tail(5));
    }
    let v: Value = serde_json::from_str(out.stdout.trim()).context("the engine's JSON output")?;
    Ok(match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    })
}

fn str_field(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

fn labels_at(v: &Value, paths: &[&[&str]]) -> BTreeMap<String, String> {
    for path in paths {
        let mut cur = v;
        let mut ok = true;
        for k in *path {
            match cur.get(*k) {
                Some(x) => cur = x,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if let (true, Some(obj)) = (ok, cur.as_object()) {
            return obj
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
        }
    }
    BTreeMap::new()
}

pub fn parse_container(v: &Value) -> ContainerInfo {
    let mut host_ports = Vec::new();
    if let Some(b) = v
        .pointer("/HostConfig/PortBindings")
        .and_then(Value::as_object)
    {
        for binds in b.values() {
            for bind in binds.as_array().into_iter().flatten() {
                if let Some(p) = bind
                    .get("HostPort")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse().ok())
                {
                    host_ports.push(p);
                }
            }
        }
    }
    host_ports.sort_unstable();
    host_ports.dedup();
    ContainerInfo {
        id: str_field(v, &["Id", "ID"]),
        name: str_field(v, &["Name"]).trim_start_matches('/').to_string(),
        labels: labels_at(v, &[&["Config", "Labels"], &["Labels"]]),
        running: v
            .pointer("/State/Running")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: v
            .pointer("/State/Status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        host_ports,
        image: str_field(v, &["ImageName", "Image"]),
    }
}

pub fn parse_image(v: &Value) -> ImageInfo {
    let labels = labels_at(v, &[&["Config", "Labels"], &["Labels"]]);
    let created = labels
        .get(crate::plan::labels::CREATED)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    ImageInfo {
        id: str_field(v, &["Id", "ID"])
            .trim_start_matches("sha256:")
            .to_string(),
        tags: v
            .get("RepoTags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|t| !t.contains("<none>"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        labels,
        size: v.get("Size").and_then(Value::as_u64).unwrap_or(0),
        created,
    }
}

mod cached;
#[cfg(test)]
mod tests;
