//! `infra.toml` (format v2): the validated model the planners use, loading, and small helpers.
//!
//! Loading is two steps. serde reads the file into `raw` types that keep the place of every
//! value that can be wrong (unknown keys are rejected there). `validate` then checks the whole
//! file, one pass per table (`components`, `consumers`), collecting every problem rather than
//! stopping at the first, and builds the clean [`Config`]. Name rules and the limits of every
//! derived name live in [`names`]; the stack of a consumer's tier, used by validation and the
//! planners alike, in `stack`. Nothing here touches anything but the file system (to see that
//! the paths the file names exist).
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod components;
mod consumers;
mod diag;
pub mod names;
mod overrides;
mod raw;
mod references;
mod stack;
mod stack_checks;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use diag::line_col;
pub use stack::Stack;
pub use validate::{decode, parse, PathKind};

/// The stand-in recipes `[images.*].standin` may name (`cargo xtask standins` builds them).
pub const STANDIN_RECIPES: [&str; 4] = ["postgres", "redis", "runtime", "registry"];

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
    /// `--set` overrides of this invocation, by component: applied after every consumer's
    /// `override`, so the command line wins.
    pub sets: BTreeMap<String, Override>,
}

/// A third-party image, replaceable from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub default_ref: String,
    /// The environment variable that overrides `default_ref`, if any.
    pub env: Option<String>,
    /// The stand-in recipe (`cargo xtask standins`) for hosts without a registry.
    pub standin: Option<String>,
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

/// Where a component's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `[infra.*]`: a third-party image (an `[images.*]` name) run as is.
    Image { image: String },
    /// `[services.*]` with `package`: a crate of this workspace, compiled once on the host.
    Rust(RustSpec),
    /// `[services.*]` without `package`: the Dockerfile builds everything itself.
    Dockerfile {
        /// Relative to the root, like `context`.
        dockerfile: PathBuf,
        context: PathBuf,
    },
    /// `[jobs.*]`: a one-shot run of a service's image that must exit 0.
    Job { service: String },
}

/// How a Rust service's image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustSpec {
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
    /// PostgreSQL on the published port answers a startup message with an authentication
    /// request: it accepts connections (what `pg_isready` asks), checked from the host.
    Postgres,
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

/// A data image of a component taken after jobs ran against it: later integration runs start
/// from it and skip those jobs (see `exec::snapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The jobs whose effect the image holds.
    pub after: Vec<String>,
    /// Repository paths whose content the jobs apply (part of the image's key).
    pub inputs: Vec<PathBuf>,
    /// Environment of the component while the image is made and when it runs from it.
    pub env: BTreeMap<String, String>,
    /// A command in the container before it is committed (e.g. a checkpoint); templates.
    pub flush: Vec<String>,
}

/// A repository file or folder mounted read-only into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The absolute path inside the container.
    pub target: String,
    /// Relative to the root.
    pub source: PathBuf,
    pub dir: bool,
}

/// The tiers a component may run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    pub integration: bool,
    pub e2e: bool,
}

impl Tiers {
    pub const BOTH: Tiers = Tiers {
        integration: true,
        e2e: true,
    };

    pub fn allows(self, t: TierName) -> bool {
        match t {
            TierName::Integration => self.integration,
            TierName::E2e => self.e2e,
        }
    }
}

impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.integration, self.e2e) {
            (true, true) => f.write_str("both tiers"),
            (true, false) => f.write_str("integration only"),
            (false, true) => f.write_str("e2e only"),
            (false, false) => f.write_str("no tier"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TierName {
    Integration,
    E2e,
}

impl TierName {
    pub fn as_str(self) -> &'static str {
        match self {
            TierName::Integration => "integration",
            TierName::E2e => "e2e",
        }
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub source: Source,
    pub build_args: BTreeMap<String, String>,
    /// The main internal port; `None` for jobs.
    pub port: Option<u16>,
    pub extra_ports: BTreeMap<String, u16>,
    /// URL template with `{host}` and `{port}` (and `{postgres.*}`).
    pub url: String,
    pub ready: Ready,
    pub needs: Vec<String>,
    /// Needs it can run without (a consumer may `drop` them); each is also in `needs`.
    pub optional: BTreeSet<String>,
    /// Environment of the component's container, as templates.
    pub env: BTreeMap<String, String>,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub mounts: Vec<Mount>,
    pub timeout: Duration,
    /// The Kubernetes manifest template (relative to the root).
    pub manifest: PathBuf,
    pub tiers: Tiers,
    pub snapshot: Option<Snapshot>,
}

impl Component {
    pub fn is_job(&self) -> bool {
        matches!(self.source, Source::Job { .. })
    }

    /// The internal port called `name` (`None` = the main port).
    pub fn internal_port(&self, name: Option<&str>) -> Option<u16> {
        match name {
            None => self.port,
            Some(n) => self.extra_ports.get(n).copied(),
        }
    }

    /// The service whose image this component runs, if this workspace builds it.
    pub fn image_service(&self) -> Option<&str> {
        match &self.source {
            Source::Image { .. } => None,
            Source::Rust(_) | Source::Dockerfile { .. } => Some(&self.name),
            Source::Job { service } => Some(service),
        }
    }

    /// The table it is defined in.
    pub fn table(&self) -> &'static str {
        match self.source {
            Source::Image { .. } => "infra",
            Source::Rust(_) | Source::Dockerfile { .. } => "services",
            Source::Job { .. } => "jobs",
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
        names::url_env_var(&self.component, self.port.as_deref())
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

/// A consumer: whose tests run, and the stacks they run against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Host ports of the integration stack.
    pub integration: Option<Tier<u16>>,
    /// NodePorts of the E2E cluster and the host ports kind maps them to.
    pub e2e: Option<Tier<NodePort>>,
}

/// One tier of a consumer; `P` is what a published port maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier<P> {
    pub ports: BTreeMap<PortRef, P>,
    /// Components added to the stack (with what they need).
    pub add: Vec<String>,
    /// Optional needs left out of the stack.
    pub drop: BTreeSet<String>,
    /// The consumer's own in-process host ports (integration only).
    pub own_ports: BTreeMap<String, u16>,
    pub test: TestCmd,
    /// Per component: changes for this consumer and tier only.
    pub overrides: BTreeMap<String, Override>,
}

/// How a consumer's tests run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestCmd {
    /// `cargo test --package <package> --test <target> -- --include-ignored`
    Cargo { package: String, target: String },
    /// Any command, run from the repository root.
    Argv(Vec<String>),
}

/// Changes to a component for one consumer and tier (or from `--set`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Override {
    /// Merged over the component's env.
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub port: Option<u16>,
    pub extra_ports: BTreeMap<String, u16>,
}

impl Config {
    /// Reads and validates a file; the error lists every problem found.
    pub fn load(file: &Path) -> Result<Config> {
        let bytes = std::fs::read(file).with_context(|| {
            format!(
                "cannot read {}; run from the repository or pass --config PATH",
                file.display()
            )
        })?;
        let root = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let text = decode(file, &bytes).map_err(|d| anyhow::anyhow!("{d}"))?;
        parse(file, &root, text, &on_disk).map_err(|d| anyhow::anyhow!("{d}"))
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
}

/// What a path is, or `None` when it does not exist: the real file system's answer.
pub fn on_disk(p: &Path) -> Option<PathKind> {
    if p.is_dir() {
        Some(PathKind::Dir)
    } else if p.exists() {
        Some(PathKind::File)
    } else {
        None
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

/// The component a placeholder names: `c` of `{c.url}` and `{c.port.url}`.
pub fn placeholder_component(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        [c, "url"] | [c, _, "url"] => Some(c),
        _ => None,
    }
}

/// The needs graph of components (the one graph module does the walking).
fn needs_graph(components: &BTreeMap<String, Component>) -> crate::graph::Graph<'_> {
    crate::graph::of(
        components.values(),
        |c| c.name.as_str(),
        |c| c.needs.as_slice(),
    )
}

/// ` (did you mean `x`?)` when a known name is close to `word`.
fn suggest(word: &str, known: &[String]) -> String {
    known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// `90s`, `5m`, `24h`, `7d`, `1500ms`. The one duration parser (timeouts, `--older-than`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    /// A century: far more than any timeout or image age, and safe to add to any clock.
    const MAX_MS: u64 = 100 * 365 * 86_400_000;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        anyhow::bail!("`{s}` is not a duration; write e.g. 90s, 5m, 24h, 7d");
    }
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("`{s}` has an unknown unit `{unit}`; use ms, s, m, h or d"),
    };
    // All digits: parsing fails only when the number does not fit.
    let ms = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(ms_per_unit))
        .filter(|ms| *ms <= MAX_MS)
        .with_context(|| format!("`{s}` is too large; write at most 36500d"))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests;
