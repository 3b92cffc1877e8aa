//! `infra.toml`: the typed model, loading, and validation with file:line:column diagnostics.
//!
//! Loading is two steps. serde reads the file into `raw` types that keep the source span of
//! every value that can be wrong (unknown keys are rejected there). `validate` then checks the
//! whole file, collecting every problem rather than stopping at the first, and builds the clean
//! [`Config`] the planners use. Nothing here touches anything but the file system (to see that
//! Dockerfiles and manifests exist).
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use toml::Spanned;

/// The validated contents of `infra.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub file: PathBuf,
    /// The folder paths in the file are relative to (the folder of `file`).
    pub root: PathBuf,
    pub images: BTreeMap<String, Image>,
    pub postgres: Postgres,
    /// Infrastructure, services and jobs, by name.
    pub components: BTreeMap<String, Component>,
    pub consumers: BTreeMap<String, Consumer>,
}

/// A third-party image, replaceable from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub default_ref: String,
    /// The environment variable that overrides `default_ref`, if any.
    pub env: Option<String>,
}

impl Image {
    /// The reference to use, given a way to read the environment.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.env
            .as_deref()
            .and_then(env)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| self.default_ref.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    pub user: String,
    pub password: String,
    pub database: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentKind {
    /// A third-party image run as is.
    Infra { image: String },
    /// One of our services: built from its Dockerfile with a host-compiled binary.
    Service(ServiceSpec),
    /// A one-shot run of a service's image that must exit 0.
    Job { service: String, args: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Relative to the root.
    pub dockerfile: PathBuf,
    pub package: String,
    pub binary: String,
    /// Extra paths (relative to the root) copied into the image build context.
    pub context: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A real query through `psql` inside the container.
    Sql { query: String },
    /// `PING` answered with `PONG` on the published port.
    Redis,
    /// `GET path` answered with a 2xx status on the published port.
    Http { path: String, port: Option<String> },
    /// A TCP connection to the published port succeeds.
    Tcp { port: Option<String> },
    /// A command inside the container exits 0.
    Exec { command: Vec<String> },
    /// The container exited with status 0 (jobs).
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub kind: ComponentKind,
    /// The main internal port; `None` for jobs.
    pub port: Option<u16>,
    pub extra_ports: BTreeMap<String, u16>,
    /// URL template with `{host}` and `{port}` (and `{postgres.*}`).
    pub url: String,
    pub ready: Ready,
    pub needs: Vec<String>,
    /// Environment of the component's container, as templates.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// The Kubernetes manifest template (relative to the root).
    pub manifest: PathBuf,
}

impl Component {
    pub fn is_job(&self) -> bool {
        matches!(self.kind, ComponentKind::Job { .. })
    }

    /// The internal port called `name` (`None` = the main port).
    pub fn internal_port(&self, name: Option<&str>) -> Option<u16> {
        match name {
            None => self.port,
            Some(n) => self.extra_ports.get(n).copied(),
        }
    }

    /// The service whose image this component runs, if it is one of ours.
    pub fn image_service(&self) -> Option<&str> {
        match &self.kind {
            ComponentKind::Infra { .. } => None,
            ComponentKind::Service(_) => Some(&self.name),
            ComponentKind::Job { service, .. } => Some(service),
        }
    }
}

/// A reference to a component's port: `datastorage` (main port) or `datastorage.metrics`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRef {
    pub component: String,
    pub port: Option<String>,
}

impl PortRef {
    pub fn parse(s: &str) -> PortRef {
        match s.split_once('.') {
            Some((c, p)) => PortRef {
                component: c.to_string(),
                port: Some(p.to_string()),
            },
            None => PortRef {
                component: s.to_string(),
                port: None,
            },
        }
    }

    /// `DATASTORAGE_URL`, `DATASTORAGE_METRICS_URL`: how tests find this port.
    pub fn env_var(&self) -> String {
        let mut s = self.component.to_uppercase();
        if let Some(p) = &self.port {
            s.push('_');
            s.push_str(&p.to_uppercase());
        }
        s.push_str("_URL");
        s.replace('-', "_")
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            Some(p) => write!(f, "{}.{}", self.component, p),
            None => f.write_str(&self.component),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePort {
    pub node_port: u16,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Host ports of the integration stack.
    pub integration: BTreeMap<PortRef, u16>,
    /// NodePorts of the E2E cluster and the host ports kind maps them to.
    pub e2e: BTreeMap<PortRef, NodePort>,
    pub integration_test: String,
    pub e2e_test: String,
}

impl Config {
    /// Reads and validates a file; the error lists every problem found.
    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "cannot read {}; run from the repository or pass --config PATH",
                file.display()
            )
        })?;
        let root = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        parse(file, &root, &text, &|p| p.exists()).map_err(|d| anyhow::anyhow!("{d}"))
    }

    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components.get(name).with_context(|| {
            format!(
                "`{name}` is not a component of {}; known: {}",
                self.file.display(),
                self.components
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    pub fn consumer(&self, name: &str) -> Result<&Consumer> {
        self.consumers.get(name).with_context(|| {
            format!(
                "`{name}` is not a consumer in {}; consumers: {}",
                self.file.display(),
                self.consumers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// Applies `--set` overrides without editing the file: `<component>.env.<VAR>=<value>`
    /// (the value may use the same `{...}` templates as the file) or `<component>.timeout=<dur>`.
    pub fn apply_overrides(&mut self, sets: &[String]) -> Result<()> {
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .with_context(|| format!("--set `{set}`: expected <component>.env.<VAR>=<value> or <component>.timeout=<duration>"))?;
            let parts: Vec<&str> = key.splitn(3, '.').collect();
            let known = self.components.keys().cloned().collect::<Vec<_>>();
            let comp = self.components.get_mut(parts[0]).with_context(|| {
                format!(
                    "--set `{set}`: unknown component `{}`{}; known: {}",
                    parts[0],
                    suggest(parts[0], &known),
                    known.join(", ")
                )
            })?;
            match parts.as_slice() {
                [_, "env", var] if !var.is_empty() => {
                    for p in placeholders(value) {
                        let ok = matches!(p.as_str(), "postgres.user" | "postgres.password" | "postgres.database")
                            || p.ends_with(".url");
                        if !ok {
                            anyhow::bail!("--set `{set}`: unknown placeholder `{{{p}}}`");
                        }
                    }
                    comp.env.insert(var.to_string(), value.to_string());
                }
                [_, "timeout"] => comp.timeout = parse_duration(value).with_context(|| format!("--set `{set}`"))?,
                _ => anyhow::bail!("--set `{set}`: expected <component>.env.<VAR>=<value> or <component>.timeout=<duration>"),
            }
        }
        Ok(())
    }

    pub fn service(&self, name: &str) -> Result<&ServiceSpec> {
        match &self.component(name)?.kind {
            ComponentKind::Service(s) => Ok(s),
            _ => anyhow::bail!("`{name}` in {} is not a service", self.file.display()),
        }
    }
}

/// Every problem found in one file, printable as `file:line:column: message` lines.
#[derive(Debug)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub items: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column, when the problem has a place in the file.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        writeln!(
            f,
            "{} has {n} error{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.items {
            match d.at {
                Some((l, c)) => writeln!(f, "  {}:{l}:{c}: {}", self.file.display(), d.message)?,
                None => writeln!(f, "  {}: {}", self.file.display(), d.message)?,
            }
        }
        write!(
            f,
            "fix these in {} and run `cargo xtask check`",
            self.file.display()
        )
    }
}

impl std::error::Error for Diagnostics {}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

mod raw {
    //! The file as written, with spans.
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub images: BTreeMap<Spanned<String>, Image>,
        pub postgres: Option<Spanned<Postgres>>,
        #[serde(default)]
        pub infra: BTreeMap<Spanned<String>, Infra>,
        #[serde(default)]
        pub services: BTreeMap<Spanned<String>, Service>,
        #[serde(default)]
        pub jobs: BTreeMap<Spanned<String>, Job>,
        #[serde(default)]
        pub consumers: BTreeMap<Spanned<String>, Consumer>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Image {
        #[serde(rename = "ref")]
        pub reference: Spanned<String>,
        pub env: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Postgres {
        pub user: Spanned<String>,
        pub password: Spanned<String>,
        pub database: Spanned<String>,
    }

    /// What infra, services and jobs have in common (gathered after parsing).
    #[derive(Debug)]
    pub struct Common {
        pub needs: Vec<Spanned<String>>,
        pub env: BTreeMap<Spanned<String>, Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub manifest: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Infra {
        pub image: Spanned<String>,
        pub port: Spanned<i64>,
        #[serde(default)]
        pub extra_ports: BTreeMap<Spanned<String>, Spanned<i64>>,
        pub url: Option<Spanned<String>>,
        pub ready: Spanned<Ready>,
        #[serde(default)]
        pub needs: Vec<Spanned<String>>,
        #[serde(default)]
        pub env: BTreeMap<Spanned<String>, Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub manifest: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Service {
        pub dockerfile: Spanned<String>,
        pub package: Spanned<String>,
        pub binary: Spanned<String>,
        #[serde(default)]
        pub context: Vec<Spanned<String>>,
        pub port: Spanned<i64>,
        #[serde(default)]
        pub extra_ports: BTreeMap<Spanned<String>, Spanned<i64>>,
        pub url: Option<Spanned<String>>,
        pub ready: Spanned<Ready>,
        #[serde(default)]
        pub needs: Vec<Spanned<String>>,
        #[serde(default)]
        pub env: BTreeMap<Spanned<String>, Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub manifest: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Job {
        pub service: Spanned<String>,
        #[serde(default)]
        pub args: Vec<String>,
        #[serde(default)]
        pub needs: Vec<Spanned<String>>,
        #[serde(default)]
        pub env: BTreeMap<Spanned<String>, Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub manifest: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
    pub enum Ready {
        Sql { query: String },
        Redis {},
        Http { path: String, port: Option<String> },
        Tcp { port: Option<String> },
        Exec { command: Vec<String> },
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Consumer {
        #[serde(default)]
        pub integration: BTreeMap<Spanned<String>, Spanned<i64>>,
        #[serde(default)]
        pub e2e: BTreeMap<Spanned<String>, Spanned<NodePort>>,
        pub integration_test: Option<Spanned<String>>,
        pub e2e_test: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct NodePort {
        pub node_port: Spanned<i64>,
        pub host_port: Spanned<i64>,
    }
}

/// Parses and validates `text` (the contents of `file`). `exists` answers whether a path
/// (already joined to `root`) exists, so tests can run without touching the disk.
pub fn parse(
    file: &Path,
    root: &Path,
    text: &str,
    exists: &dyn Fn(&Path) -> bool,
) -> std::result::Result<Config, Diagnostics> {
    let mut v = Validator {
        text,
        items: Vec::new(),
    };
    let raw: raw::File = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.message().trim().to_string();
            let msg = if msg.starts_with("unknown field") {
                format!("{msg} (unknown keys are rejected; check the spelling)")
            } else {
                msg
            };
            v.push(e.span().map(|s| s.start), msg);
            return Err(v.finish(file));
        }
    };
    let config = v.build(file, root, raw, exists);
    if v.items.is_empty() {
        Ok(config)
    } else {
        Err(v.finish(file))
    }
}

struct Validator<'a> {
    text: &'a str,
    items: Vec<(Option<usize>, String)>,
}

/// Where a host port was allocated, for "used twice" errors.
struct PortOwner {
    what: String,
    offset: usize,
}

impl Validator<'_> {
    fn push(&mut self, offset: Option<usize>, message: String) {
        self.items.push((offset, message));
    }

    fn at<T>(&mut self, s: &Spanned<T>, message: String) {
        self.push(Some(s.span().start), message);
    }

    fn finish(mut self, file: &Path) -> Diagnostics {
        self.items.sort_by_key(|(o, _)| o.unwrap_or(usize::MAX));
        self.items.dedup();
        let items = self
            .items
            .into_iter()
            .map(|(o, message)| Diagnostic {
                at: o.map(|o| line_col(self.text, o)),
                message,
            })
            .collect();
        Diagnostics {
            file: file.to_path_buf(),
            items,
        }
    }

    fn where_(&self, offset: usize) -> String {
        let (l, c) = line_col(self.text, offset);
        format!("line {l}, column {c}")
    }

    fn name(&mut self, key: &Spanned<String>, what: &str) {
        let n = key.get_ref();
        let ok = n.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            self.at(
                key,
                format!(
                    "{what} name `{n}` must be lowercase letters and digits, starting with a \
                     letter (it becomes part of image tags and container names)"
                ),
            );
        }
    }

    fn port(&mut self, p: &Spanned<i64>, what: &str) -> u16 {
        let n = *p.get_ref();
        if (1..=65535).contains(&n) {
            n as u16
        } else {
            self.at(p, format!("{what}: port {n} is outside 1-65535"));
            0
        }
    }

    fn timeout(&mut self, t: &Option<Spanned<String>>, default: Duration, what: &str) -> Duration {
        match t {
            None => default,
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.at(s, format!("{what}.timeout: {e}"));
                    default
                }
            },
        }
    }

    fn build(
        &mut self,
        file: &Path,
        root: &Path,
        raw: raw::File,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Config {
        // Images.
        let mut images = BTreeMap::new();
        for (name, img) in &raw.images {
            self.name(name, "image");
            if img.reference.get_ref().trim().is_empty() {
                self.at(&img.reference, format!("images.{name}.ref is empty"));
            }
            if let Some(env) = &img.env {
                let ok = !env.get_ref().is_empty()
                    && env
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !env.get_ref().starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    self.at(
                        env,
                        format!(
                            "images.{name}.env `{}` is not an environment variable name \
                             (use A-Z, 0-9 and _)",
                            env.get_ref()
                        ),
                    );
                }
            }
            images.insert(
                name.get_ref().clone(),
                Image {
                    name: name.get_ref().clone(),
                    default_ref: img.reference.get_ref().clone(),
                    env: img.env.as_ref().map(|e| e.get_ref().clone()),
                },
            );
        }

        let postgres = match &raw.postgres {
            Some(p) => Postgres {
                user: p.get_ref().user.get_ref().clone(),
                password: p.get_ref().password.get_ref().clone(),
                database: p.get_ref().database.get_ref().clone(),
            },
            None => {
                self.push(
                    None,
                    "missing [postgres] table: add user, password and database".to_string(),
                );
                Postgres {
                    user: String::new(),
                    password: String::new(),
                    database: String::new(),
                }
            }
        };

        // Components: first the names (needed to check references), then each one.
        let mut names: BTreeMap<String, (usize, &'static str)> = BTreeMap::new();
        let all_keys = raw
            .infra
            .keys()
            .map(|k| (k, "infra"))
            .chain(raw.services.keys().map(|k| (k, "services")))
            .chain(raw.jobs.keys().map(|k| (k, "jobs")));
        for (key, table) in all_keys {
            self.name(key, "component");
            if let Some((off, other)) = names.get(key.get_ref()) {
                let w = self.where_(*off);
                self.at(
                    key,
                    format!(
                        "`{key}` is defined in [{table}] and also in [{other}] at {w}; \
                         component names must be unique",
                        key = key.get_ref()
                    ),
                );
            } else {
                names.insert(key.get_ref().clone(), (key.span().start, table));
            }
        }
        let service_names: BTreeSet<&str> =
            raw.services.keys().map(|k| k.get_ref().as_str()).collect();

        let mut components = BTreeMap::new();
        let mut spans: BTreeMap<String, RawSpans> = BTreeMap::new();
        for (key, inf) in &raw.infra {
            let what = format!("infra.{}", key.get_ref());
            if !images.contains_key(inf.image.get_ref()) {
                let known = images.keys().cloned().collect::<Vec<_>>();
                self.at(
                    &inf.image,
                    format!(
                        "{what}.image: no [images.{}]{}; known images: {}",
                        inf.image.get_ref(),
                        suggest(inf.image.get_ref(), &known),
                        known.join(", ")
                    ),
                );
            }
            let common = raw::Common {
                needs: inf.needs.clone(),
                env: inf.env.clone(),
                timeout: inf.timeout.clone(),
                manifest: inf.manifest.clone(),
            };
            let c = self.component(
                key,
                &what,
                ComponentKind::Infra {
                    image: inf.image.get_ref().clone(),
                },
                Some(&inf.port),
                &inf.extra_ports,
                inf.url.as_ref(),
                Some(&inf.ready),
                &common,
                Duration::from_secs(60),
            );
            spans.insert(
                key.get_ref().clone(),
                RawSpans::new(&common, inf.url.as_ref(), Some(inf.ready.span().start)),
            );
            components.insert(key.get_ref().clone(), c);
        }
        for (key, svc) in &raw.services {
            let what = format!("services.{}", key.get_ref());
            let dockerfile = PathBuf::from(svc.dockerfile.get_ref());
            if !exists(&root.join(&dockerfile)) {
                self.at(
                    &svc.dockerfile,
                    format!(
                        "{what}.dockerfile: {} does not exist (paths are relative to {})",
                        dockerfile.display(),
                        display_root(root)
                    ),
                );
            }
            let mut context = Vec::new();
            for c in &svc.context {
                let p = PathBuf::from(c.get_ref());
                if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                    self.at(
                        c,
                        format!(
                            "{what}.context: `{}` must be a path inside the repository",
                            c.get_ref()
                        ),
                    );
                } else if !exists(&root.join(&p)) {
                    self.at(c, format!("{what}.context: {} does not exist", p.display()));
                }
                context.push(p);
            }
            for (field, val) in [("package", &svc.package), ("binary", &svc.binary)] {
                if val.get_ref().trim().is_empty() {
                    self.at(val, format!("{what}.{field} is empty"));
                }
            }
            let common = raw::Common {
                needs: svc.needs.clone(),
                env: svc.env.clone(),
                timeout: svc.timeout.clone(),
                manifest: svc.manifest.clone(),
            };
            let kind = ComponentKind::Service(ServiceSpec {
                dockerfile,
                package: svc.package.get_ref().clone(),
                binary: svc.binary.get_ref().clone(),
                context,
            });
            let c = self.component(
                key,
                &what,
                kind,
                Some(&svc.port),
                &svc.extra_ports,
                svc.url.as_ref(),
                Some(&svc.ready),
                &common,
                Duration::from_secs(60),
            );
            spans.insert(
                key.get_ref().clone(),
                RawSpans::new(&common, svc.url.as_ref(), Some(svc.ready.span().start)),
            );
            components.insert(key.get_ref().clone(), c);
        }
        for (key, job) in &raw.jobs {
            let what = format!("jobs.{}", key.get_ref());
            if !service_names.contains(job.service.get_ref().as_str()) {
                let known = service_names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>();
                self.at(
                    &job.service,
                    format!(
                        "{what}.service: `{}` is not a service{}; a job runs a service's image \
                         (services: {})",
                        job.service.get_ref(),
                        suggest(job.service.get_ref(), &known),
                        known.join(", ")
                    ),
                );
            }
            let common = raw::Common {
                needs: job.needs.clone(),
                env: job.env.clone(),
                timeout: job.timeout.clone(),
                manifest: job.manifest.clone(),
            };
            let kind = ComponentKind::Job {
                service: job.service.get_ref().clone(),
                args: job.args.clone(),
            };
            let c = self.component(
                key,
                &what,
                kind,
                None,
                &BTreeMap::new(),
                None,
                None,
                &common,
                Duration::from_secs(120),
            );
            spans.insert(key.get_ref().clone(), RawSpans::new(&common, None, None));
            components.insert(key.get_ref().clone(), c);
        }

        // References between components: needs, cycles, templates.
        let known: Vec<String> = components.keys().cloned().collect();
        for (name, s) in &spans {
            let table = table_of(&components[name]);
            for need in &s.needs {
                if need.get_ref() == name {
                    self.at(need, format!("{table}.{name}.needs: `{name}` needs itself"));
                } else if !components.contains_key(need.get_ref()) {
                    self.at(
                        need,
                        format!(
                            "{table}.{name}.needs: unknown component `{}`{}; known: {}",
                            need.get_ref(),
                            suggest(need.get_ref(), &known),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(&components) {
            let first = &cycle[0];
            let off = spans[first]
                .needs
                .iter()
                .find(|n| n.get_ref() == &cycle[1])
                .map(|n| n.span().start);
            self.push(
                off,
                format!(
                    "dependency cycle: {} (a component cannot wait for itself; remove one of \
                     these `needs`)",
                    cycle.join(" -> ")
                ),
            );
        } else {
            for (name, s) in &spans {
                let table = table_of(&components[name]);
                let reach = transitive_needs(&components, name);
                for (k, tmpl) in &s.env {
                    let what = format!("{table}.{name}.env.{}", k.get_ref());
                    self.template(tmpl, &what, &components, &reach, false);
                }
                if let Some(url) = &s.url {
                    self.template(
                        url,
                        &format!("{table}.{name}.url"),
                        &components,
                        &reach,
                        true,
                    );
                }
            }
        }
        for (name, c) in &components {
            if let (Ready::Http { port: Some(p), .. } | Ready::Tcp { port: Some(p) }, Some(s)) =
                (&c.ready, spans.get(name))
            {
                if !c.extra_ports.contains_key(p) {
                    let off = s.ready;
                    self.push(
                        off,
                        format!(
                            "{}.{name}.ready.port: `{p}` is not one of its extra_ports",
                            table_of(c)
                        ),
                    );
                }
            }
        }

        // Consumers and every host port in the file.
        let mut owners: Vec<(u16, PortOwner)> = Vec::new();
        let mut consumers = BTreeMap::new();
        for (key, rc) in &raw.consumers {
            let name = key.get_ref().clone();
            let what = format!("consumers.{name}");
            let is_service = service_names.contains(name.as_str());
            if !is_service {
                let known = service_names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>();
                self.at(
                    key,
                    format!(
                        "{what}: `{name}` is not a service{}; a consumer is the service whose \
                         tests run (services: {})",
                        suggest(&name, &known),
                        known.join(", ")
                    ),
                );
            }
            let cycle_free = find_cycle(&components).is_none();
            let integration_stack: BTreeSet<String> = if is_service && cycle_free {
                transitive_needs(&components, &name)
            } else {
                BTreeSet::new()
            };
            let mut e2e_stack = integration_stack.clone();
            e2e_stack.insert(name.clone());

            let mut integration = BTreeMap::new();
            for (pk, port) in &rc.integration {
                let w = format!("{what}.integration.{}", pk.get_ref());
                let pr = PortRef::parse(pk.get_ref());
                if is_service && cycle_free {
                    self.port_ref(
                        pk,
                        &pr,
                        &w,
                        &components,
                        &integration_stack,
                        &name,
                        "integration",
                    );
                }
                let p = self.port(port, &w);
                if p != 0 {
                    self.claim(&mut owners, p, port.span().start, w.clone());
                    integration.insert(pr, p);
                }
            }
            if is_service && cycle_free {
                for member in &integration_stack {
                    let c = &components[member];
                    if c.is_job() {
                        continue;
                    }
                    let pr = PortRef {
                        component: member.clone(),
                        port: None,
                    };
                    if !integration.contains_key(&pr) {
                        self.at(
                            key,
                            format!(
                                "{what}.integration: no host port for `{member}`, which {name}'s \
                                 integration stack runs (its readiness check and the tests reach \
                                 it through the host); add `{member} = <free port>`"
                            ),
                        );
                    }
                }
            }
            let mut e2e = BTreeMap::new();
            let mut node_ports: BTreeMap<u16, (String, usize)> = BTreeMap::new();
            for (pk, np) in &rc.e2e {
                let w = format!("{what}.e2e.{}", pk.get_ref());
                let pr = PortRef::parse(pk.get_ref());
                if is_service && cycle_free {
                    self.port_ref(pk, &pr, &w, &components, &e2e_stack, &name, "E2E");
                }
                let n = *np.get_ref().node_port.get_ref();
                let node_port = if (30000..=32767).contains(&n) {
                    n as u16
                } else {
                    self.at(
                        &np.get_ref().node_port,
                        format!(
                            "{w}.node_port: {n} is outside Kubernetes' NodePort range 30000-32767"
                        ),
                    );
                    0
                };
                if node_port != 0 {
                    if let Some((other, off)) = node_ports.get(&node_port) {
                        let wh = self.where_(*off);
                        self.at(
                            &np.get_ref().node_port,
                            format!(
                                "{w}.node_port: NodePort {node_port} is also used by {other} at \
                                 {wh}; within one cluster every NodePort must be unique"
                            ),
                        );
                    } else {
                        node_ports
                            .insert(node_port, (w.clone(), np.get_ref().node_port.span().start));
                    }
                }
                let host = self.port(&np.get_ref().host_port, &format!("{w}.host_port"));
                if host != 0 {
                    self.claim(
                        &mut owners,
                        host,
                        np.get_ref().host_port.span().start,
                        format!("{w}.host_port"),
                    );
                }
                e2e.insert(
                    pr,
                    NodePort {
                        node_port,
                        host_port: host,
                    },
                );
            }
            if is_service
                && !rc.e2e.is_empty()
                && !e2e.contains_key(&PortRef {
                    component: name.clone(),
                    port: None,
                })
            {
                self.at(
                    key,
                    format!(
                        "{what}.e2e: no NodePort for `{name}` itself; its E2E tests reach it \
                         through one: add `{name} = {{ node_port = <30000-32767>, host_port = <free port> }}`"
                    ),
                );
            }
            if is_service && cycle_free && !rc.e2e.is_empty() {
                for member in &e2e_stack {
                    let manifest = &components[member].manifest;
                    if !exists(&root.join(manifest)) {
                        self.at(
                            key,
                            format!(
                                "{what}.e2e: the manifest template of `{member}`, {}, does not \
                                 exist (set `manifest = \"...\"` on the component or create it)",
                                manifest.display()
                            ),
                        );
                    }
                }
            }
            let test_name = |t: &Option<Spanned<String>>, default: &str, v: &mut Self| -> String {
                match t {
                    None => default.to_string(),
                    Some(s) => {
                        if s.get_ref().is_empty()
                            || !s
                                .get_ref()
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        {
                            v.at(
                                s,
                                format!("{what}: `{}` is not a test target name", s.get_ref()),
                            );
                        }
                        s.get_ref().clone()
                    }
                }
            };
            let integration_test = test_name(&rc.integration_test, "integration", self);
            let e2e_test = test_name(&rc.e2e_test, "e2e", self);
            consumers.insert(
                name.clone(),
                Consumer {
                    name,
                    integration,
                    e2e,
                    integration_test,
                    e2e_test,
                },
            );
        }

        self.duplicate_ports(owners);
        Config {
            file: file.to_path_buf(),
            root: root.to_path_buf(),
            images,
            postgres,
            components,
            consumers,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn component(
        &mut self,
        key: &Spanned<String>,
        what: &str,
        kind: ComponentKind,
        port: Option<&Spanned<i64>>,
        extra: &BTreeMap<Spanned<String>, Spanned<i64>>,
        url: Option<&Spanned<String>>,
        ready: Option<&Spanned<raw::Ready>>,
        common: &raw::Common,
        default_timeout: Duration,
    ) -> Component {
        let name = key.get_ref().clone();
        let port = port.map(|p| self.port(p, &format!("{what}.port")));
        let mut extra_ports = BTreeMap::new();
        for (k, p) in extra {
            let pn = self.port(p, &format!("{what}.extra_ports.{}", k.get_ref()));
            if Some(pn) == port && pn != 0 {
                self.at(
                    p,
                    format!(
                        "{what}.extra_ports.{}: {pn} is already the main port",
                        k.get_ref()
                    ),
                );
            }
            extra_ports.insert(k.get_ref().clone(), pn);
        }
        let ready = match ready.map(|r| r.get_ref()) {
            None => Ready::Exit,
            Some(raw::Ready::Sql { query }) => Ready::Sql {
                query: query.clone(),
            },
            Some(raw::Ready::Redis {}) => Ready::Redis,
            Some(raw::Ready::Http { path, port }) => {
                if !path.starts_with('/') {
                    self.at(
                        ready.unwrap(),
                        format!("{what}.ready.path `{path}` must start with /"),
                    );
                }
                Ready::Http {
                    path: path.clone(),
                    port: port.clone(),
                }
            }
            Some(raw::Ready::Tcp { port }) => Ready::Tcp { port: port.clone() },
            Some(raw::Ready::Exec { command }) => {
                if command.is_empty() {
                    self.at(ready.unwrap(), format!("{what}.ready.command is empty"));
                }
                Ready::Exec {
                    command: command.clone(),
                }
            }
        };
        let timeout = self.timeout(&common.timeout, default_timeout, what);
        let manifest = common
            .manifest
            .as_ref()
            .map(|m| PathBuf::from(m.get_ref()))
            .unwrap_or_else(|| PathBuf::from(format!("manifests/{name}.yaml")));
        Component {
            name,
            kind,
            port,
            extra_ports,
            url: url
                .map(|u| u.get_ref().clone())
                .unwrap_or_else(|| "http://{host}:{port}".to_string()),
            ready,
            needs: common.needs.iter().map(|n| n.get_ref().clone()).collect(),
            env: common
                .env
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect(),
            timeout,
            manifest,
        }
    }

    fn claim(
        &mut self,
        owners: &mut Vec<(u16, PortOwner)>,
        port: u16,
        offset: usize,
        what: String,
    ) {
        owners.push((port, PortOwner { what, offset }));
    }

    /// Reports every host port claimed more than once, at each later claim, naming the first.
    fn duplicate_ports(&mut self, mut owners: Vec<(u16, PortOwner)>) {
        owners.sort_by_key(|(p, o)| (*p, o.offset));
        for pair in owners.windows(2) {
            let [(p1, first), (p2, later)] = pair else {
                continue;
            };
            if p1 != p2 {
                continue;
            }
            let first_owner = owners
                .iter()
                .find(|(p, _)| p == p1)
                .map(|(_, o)| o)
                .unwrap_or(first);
            let w = self.where_(first_owner.offset);
            self.push(
                Some(later.offset),
                format!(
                    "host port {p2} of {} is also used by {} at {w}; every host port must be \
                     unique (two runs on one host would collide): pick a free one, see \
                     `cargo xtask ports`",
                    later.what, first_owner.what
                ),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn port_ref(
        &mut self,
        key: &Spanned<String>,
        pr: &PortRef,
        what: &str,
        components: &BTreeMap<String, Component>,
        stack: &BTreeSet<String>,
        consumer: &str,
        tier: &str,
    ) {
        let Some(c) = components.get(&pr.component) else {
            let known: Vec<String> = components.keys().cloned().collect();
            self.at(
                key,
                format!(
                    "{what}: unknown component `{}`{}",
                    pr.component,
                    suggest(&pr.component, &known)
                ),
            );
            return;
        };
        if !stack.contains(&pr.component) {
            let members = stack.iter().cloned().collect::<Vec<_>>().join(", ");
            self.at(
                key,
                format!(
                    "{what}: `{}` is not part of {consumer}'s {tier} stack ({members}); add it to \
                     the `needs` of {consumer} (or of what it needs) or remove this port",
                    pr.component
                ),
            );
            return;
        }
        if c.is_job() {
            self.at(
                key,
                format!("{what}: `{}` is a job; jobs have no ports", pr.component),
            );
            return;
        }
        if let Some(p) = &pr.port {
            if !c.extra_ports.contains_key(p) {
                let known = c.extra_ports.keys().cloned().collect::<Vec<_>>();
                self.at(
                    key,
                    format!(
                        "{what}: `{}` has no port called `{p}`{} (its extra_ports: {})",
                        pr.component,
                        suggest(p, &known),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }

    fn template(
        &mut self,
        tmpl: &Spanned<String>,
        what: &str,
        components: &BTreeMap<String, Component>,
        reach: &BTreeSet<String>,
        is_url: bool,
    ) {
        for key in placeholders(tmpl.get_ref()) {
            let problem = match key.as_str() {
                "host" | "port" if is_url => None,
                "postgres.user" | "postgres.password" | "postgres.database" => None,
                _ => {
                    let parts: Vec<&str> = key.split('.').collect();
                    match parts.as_slice() {
                        [c, "url"] | [c, _, "url"] => {
                            if !components.contains_key(*c) {
                                let known: Vec<String> = components.keys().cloned().collect();
                                Some(format!(
                                    "`{{{key}}}` names unknown component `{c}`{}",
                                    suggest(c, &known)
                                ))
                            } else if !reach.contains(*c) {
                                Some(format!(
                                    "`{{{key}}}` names `{c}`, which is not among what this \
                                     component needs; add `{c}` to its needs"
                                ))
                            } else if let [_, p, _] = parts.as_slice() {
                                (!components[*c].extra_ports.contains_key(*p))
                                    .then(|| format!("`{{{key}}}`: `{c}` has no port called `{p}`"))
                            } else if components[*c].is_job() {
                                Some(format!("`{{{key}}}`: `{c}` is a job and has no URL"))
                            } else {
                                None
                            }
                        }
                        _ => Some(format!(
                            "unknown placeholder `{{{key}}}`; use {{component.url}}, \
                             {{component.port.url}}, {{postgres.user}}, {{postgres.password}}, \
                             {{postgres.database}}{}",
                            if is_url { ", {host}, {port}" } else { "" }
                        )),
                    }
                }
            };
            if let Some(p) = problem {
                self.at(tmpl, format!("{what}: {p}"));
            }
        }
    }
}

/// Spans kept from the raw file for the checks that run after all components are known.
struct RawSpans {
    needs: Vec<Spanned<String>>,
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    url: Option<Spanned<String>>,
    ready: Option<usize>,
}

impl RawSpans {
    fn new(c: &raw::Common, url: Option<&Spanned<String>>, ready: Option<usize>) -> RawSpans {
        RawSpans {
            needs: c.needs.clone(),
            env: c.env.clone(),
            url: url.cloned(),
            ready,
        }
    }
}

fn table_of(c: &Component) -> &'static str {
    match c.kind {
        ComponentKind::Infra { .. } => "infra",
        ComponentKind::Service(_) => "services",
        ComponentKind::Job { .. } => "jobs",
    }
}

fn display_root(root: &Path) -> String {
    if root == Path::new(".") {
        "the folder of the file".to_string()
    } else {
        root.display().to_string()
    }
}

/// The `{...}` placeholders of a template, in order.
pub fn placeholders(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        match rest.find('}') {
            Some(j) => {
                out.push(rest[..j].to_string());
                rest = &rest[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Everything `name` needs, directly or not (not `name` itself). Unknown names are skipped.
pub fn transitive_needs(components: &BTreeMap<String, Component>, name: &str) -> BTreeSet<String> {
    let g = needs_graph(components);
    crate::graph::closure(&g, name)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// A dependency cycle, as the list of names around it (first == last), if there is one.
pub fn find_cycle(components: &BTreeMap<String, Component>) -> Option<Vec<String>> {
    crate::graph::cycle(&needs_graph(components))
}

fn needs_graph(components: &BTreeMap<String, Component>) -> crate::graph::Graph<'_> {
    crate::graph::of(
        components.values(),
        |c| c.name.as_str(),
        |c| c.needs.as_slice(),
    )
}

/// `; did you mean `x`?` when a known name is close to `word`.
fn suggest(word: &str, known: &[String]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `90s`, `5m`, `24h`, `7d`, `1500ms`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a duration; write e.g. 90s, 5m, 24h, 7d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("`{s}` has an unknown unit `{unit}`; use ms, s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
