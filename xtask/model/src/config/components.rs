//! `[infra.*]`, `[services.*]` and `[jobs.*]`: one pass over the three tables builds every
//! [`Component`] (the keys they share are read by the same code), then `references` checks
//! what needs the whole set (needs, the one cycle search, templates, tiers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{self, Name};
use super::validate::{PathKind, Validator};
use super::{names, suggest, Component, Image, Mount, Ready, RustSpec, Source, Tiers};

/// Keys every component table takes.
const COMMON: [&str; 9] = [
    "timeout", "manifest", "env", "needs", "optional", "command", "args", "mounts", "tiers",
];
/// Keys of the tables whose components listen on ports.
const LISTENING: [&str; 4] = ["port", "extra_ports", "url", "ready"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Infra,
    Services,
    Jobs,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Infra => "infra",
            Table::Services => "services",
            Table::Jobs => "jobs",
        }
    }

    fn own_keys(self) -> &'static [&'static str] {
        match self {
            Table::Infra => &["image", "snapshot"],
            Table::Services => &[
                "dockerfile",
                "package",
                "binary",
                "context",
                "build_context",
                "build_args",
            ],
            Table::Jobs => &["service"],
        }
    }

    fn allows(self, key: &str) -> bool {
        COMMON.contains(&key)
            || self.own_keys().contains(&key)
            || (self != Table::Jobs && LISTENING.contains(&key))
    }

    fn default_timeout(self) -> Duration {
        match self {
            Table::Jobs => Duration::from_secs(120),
            _ => Duration::from_secs(60),
        }
    }
}

/// One component as written, for the checks that need every component.
pub(super) struct Entry<'r> {
    pub key: &'r Name,
    pub table: Table,
    pub raw: &'r raw::Component,
}

impl Entry<'_> {
    pub fn name(&self) -> &str {
        self.key.get_ref()
    }

    /// `services.datastorage`: how messages name it.
    pub fn what(&self) -> String {
        format!("{}.{}", self.table.name(), self.name())
    }
}

/// What other tables a component refers to.
struct Known<'a> {
    images: &'a BTreeMap<String, Image>,
    services: Vec<String>,
}

impl Validator<'_> {
    /// Every component of the three tables, checked.
    pub(super) fn components(
        &mut self,
        raw: &raw::File,
        images: &BTreeMap<String, Image>,
    ) -> BTreeMap<String, Component> {
        let entries = self.component_names(raw);
        let known = Known {
            images,
            services: raw.services.keys().map(|k| k.get_ref().clone()).collect(),
        };
        let mut out = BTreeMap::new();
        for e in &entries {
            let c = self.component(e, &known);
            out.insert(c.name.clone(), c);
        }
        self.references(&entries, &out);
        out
    }

    /// Names checked; one entry per distinct name (a name defined twice is reported).
    fn component_names<'r>(&mut self, raw: &'r raw::File) -> Vec<Entry<'r>> {
        let tables = [
            (Table::Infra, &raw.infra),
            (Table::Services, &raw.services),
            (Table::Jobs, &raw.jobs),
        ];
        let mut seen: BTreeMap<&str, (usize, Table)> = BTreeMap::new();
        let mut out = Vec::new();
        for (table, map) in tables {
            for (key, rc) in map {
                self.rule(key, names::component(key.get_ref()));
                if let Some((off, other)) = seen.get(key.get_ref().as_str()) {
                    let msg = format!(
                        "`{}` is defined in [{}] and also in [{}] at {}; component names must be \
                         unique",
                        key.get_ref(),
                        table.name(),
                        other.name(),
                        self.place(*off)
                    );
                    self.at(key, msg);
                    continue;
                }
                seen.insert(key.get_ref(), (key.span().start, table));
                out.push(Entry {
                    key,
                    table,
                    raw: rc,
                });
            }
        }
        out
    }

    fn component(&mut self, e: &Entry, known: &Known) -> Component {
        let what = e.what();
        let r = e.raw;
        self.table_keys(e);
        let source = self.source(e, known);
        let (port, extra_ports) = self.listening_ports(e);
        let manifest = r.manifest.as_ref().map_or_else(
            || PathBuf::from(format!("manifests/{}.yaml", e.name())),
            |m| PathBuf::from(m.get_ref()),
        );
        Component {
            name: e.name().to_string(),
            build_args: self.build_args(e),
            port,
            extra_ports,
            url: r.url.as_ref().map_or_else(
                || "http://{host}:{port}".to_string(),
                |u| u.get_ref().clone(),
            ),
            ready: self.ready(e),
            needs: r.needs().iter().map(|n| n.get_ref().clone()).collect(),
            optional: r.optional().iter().map(|n| n.get_ref().clone()).collect(),
            env: self.env_map(&r.env, &format!("{what}.env")),
            command: self.command(e),
            args: r
                .args
                .as_ref()
                .map_or_else(Vec::new, |a| a.get_ref().clone()),
            mounts: self.mounts(e),
            timeout: self
                .duration(&r.timeout, &format!("{what}.timeout"))
                .unwrap_or(e.table.default_timeout()),
            manifest,
            tiers: self.tiers(e),
            snapshot: self.snapshot(e),
            source,
        }
    }

    /// Keys of another table are refused, naming the table they belong to.
    fn table_keys(&mut self, e: &Entry) {
        for (key, at) in e.raw.keys() {
            if e.table.allows(key) {
                continue;
            }
            let msg = if e.table == Table::Jobs && LISTENING.contains(&key) {
                format!(
                    "{}: `{key}` is not a key of a job (a job runs once and has no ports)",
                    e.what()
                )
            } else {
                let home = [Table::Infra, Table::Services, Table::Jobs]
                    .into_iter()
                    .find(|t| t.own_keys().contains(&key))
                    .map_or("", Table::name);
                format!(
                    "{}: `{key}` belongs in [{home}.*], not [{}.*]",
                    e.what(),
                    e.table.name()
                )
            };
            self.push(Some(at), msg);
        }
    }

    /// Reports a key the table requires; `None` when it is missing.
    fn required<'r, T>(
        &mut self,
        e: &Entry,
        v: &'r Option<toml::Spanned<T>>,
        key: &str,
        why: &str,
    ) -> Option<&'r toml::Spanned<T>> {
        if v.is_none() {
            self.at(e.key, format!("{}: `{key}` is missing ({why})", e.what()));
        }
        v.as_ref()
    }

    fn source(&mut self, e: &Entry, known: &Known) -> Source {
        let r = e.raw;
        match e.table {
            Table::Infra => {
                let image = self.required(e, &r.image, "image", "the [images.*] it runs");
                let image = image.map_or_else(String::new, |i| i.get_ref().clone());
                if !image.is_empty() && !known.images.contains_key(&image) {
                    let names: Vec<String> = known.images.keys().cloned().collect();
                    let msg = format!(
                        "{}.image: no [images.{image}]{}; known images: {}",
                        e.what(),
                        suggest(&image, &names),
                        names.join(", ")
                    );
                    self.at(r.image.as_ref().unwrap_or(e.key), msg);
                }
                Source::Image { image }
            }
            Table::Services => self.service_source(e),
            Table::Jobs => {
                let why = "the service whose image it runs";
                let service = self.required(e, &r.service, "service", why);
                let service = service.map_or_else(String::new, |s| s.get_ref().clone());
                if !service.is_empty() && !known.services.contains(&service) {
                    let msg = format!(
                        "{}.service: `{service}` is not a service{}; a job runs a service's image \
                         (services: {})",
                        e.what(),
                        suggest(&service, &known.services),
                        known.services.join(", ")
                    );
                    self.at(r.service.as_ref().unwrap_or(e.key), msg);
                }
                Source::Job { service }
            }
        }
    }

    /// A Rust service (`package` and `binary`) or a Dockerfile that builds itself (neither).
    fn service_source(&mut self, e: &Entry) -> Source {
        let r = e.raw;
        let what = e.what();
        let dockerfile =
            match self.required(e, &r.dockerfile, "dockerfile", "how its image is built") {
                Some(d) => {
                    self.repo_path(d, &format!("{what}.dockerfile"), Some(PathKind::File))
                        .0
                }
                None => PathBuf::new(),
            };
        match (&r.package, &r.binary) {
            (Some(package), Some(binary)) => {
                for (field, val) in [("package", package), ("binary", binary)] {
                    if val.get_ref().trim().is_empty() {
                        self.at(val, format!("{what}.{field} is empty"));
                    }
                }
                if let Some(b) = &r.build_context {
                    let msg = format!(
                        "{what}.build_context: a Rust service's build context is assembled by cargo \
                         xtask (its binary and `context`); leave `build_context` out"
                    );
                    self.at(b, msg);
                }
                let context = raw::items(&r.context)
                    .map(|c| self.repo_path(c, &format!("{what}.context"), None).0)
                    .collect();
                Source::Rust(RustSpec {
                    dockerfile,
                    package: package.get_ref().clone(),
                    binary: binary.get_ref().clone(),
                    context,
                })
            }
            (None, None) => self.dockerfile_source(e, dockerfile),
            (Some(one), None) | (None, Some(one)) => {
                let msg = format!(
                    "{what}: a Rust service needs both `package` and `binary`; a Dockerfile that \
                     builds itself needs neither"
                );
                self.at(one, msg);
                self.dockerfile_source(e, dockerfile)
            }
        }
    }

    fn dockerfile_source(&mut self, e: &Entry, dockerfile: PathBuf) -> Source {
        let what = e.what();
        if let Some(c) = &e.raw.context {
            let msg = format!(
                "{what}.context: extra context paths are for Rust services (with `package`); a \
                 Dockerfile that builds itself uses `build_context = \"<folder>\"`"
            );
            self.at(c, msg);
        }
        let context = match &e.raw.build_context {
            Some(b) => {
                let what = format!("{what}.build_context");
                self.repo_path(b, &what, Some(PathKind::Dir)).0
            }
            None => match dockerfile.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        };
        Source::Dockerfile {
            dockerfile,
            context,
        }
    }

    fn build_args(&mut self, e: &Entry) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if e.table != Table::Services {
            return out; // refused by `table_keys`
        }
        for (k, v) in raw::entries(&e.raw.build_args) {
            if let Err(m) = names::build_arg(k.get_ref()) {
                self.at(k, format!("{}.build_args: {m}", e.what()));
            }
            out.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out
    }

    /// The main port (required unless a job) and the named extra ports.
    fn listening_ports(&mut self, e: &Entry) -> (Option<u16>, BTreeMap<String, u16>) {
        if e.table == Table::Jobs {
            return (None, BTreeMap::new());
        }
        let what = e.what();
        let why = "the port it listens on inside its container";
        let port = self
            .required(e, &e.raw.port, "port", why)
            .and_then(|p| self.port(p, &format!("{what}.port")));
        let extra = self.named_ports(&e.raw.extra_ports, &format!("{what}.extra_ports"));
        for (k, p) in raw::entries(&e.raw.extra_ports) {
            if port.is_some() && extra.get(k.get_ref()) == port.as_ref() {
                let msg = format!(
                    "{what}.extra_ports.{}: {} is already the main port",
                    k.get_ref(),
                    p.get_ref()
                );
                self.at(p, msg);
            }
        }
        (port, extra)
    }

    fn ready(&mut self, e: &Entry) -> Ready {
        if e.table == Table::Jobs {
            return Ready::Exit;
        }
        let why = "how to tell it is ready: postgres, sql, redis, http, tcp or exec";
        let Some(r) = self.required(e, &e.raw.ready, "ready", why) else {
            return Ready::Exit;
        };
        let what = e.what();
        match r.get_ref() {
            raw::Ready::Sql { query } => Ready::Sql {
                query: query.clone(),
            },
            raw::Ready::Postgres {} => Ready::Postgres,
            raw::Ready::Redis {} => Ready::Redis,
            raw::Ready::Http { path, port } => {
                if !path.starts_with('/') {
                    self.at(r, format!("{what}.ready.path `{path}` must start with /"));
                }
                Ready::Http {
                    path: path.clone(),
                    port: port.clone(),
                }
            }
            raw::Ready::Tcp { port } => Ready::Tcp { port: port.clone() },
            raw::Ready::Exec { command } => {
                if command.is_empty() {
                    self.at(r, format!("{what}.ready.command is empty"));
                }
                Ready::Exec {
                    command: command.clone(),
                }
            }
        }
    }

    fn command(&mut self, e: &Entry) -> Vec<String> {
        let Some(c) = &e.raw.command else {
            return Vec::new();
        };
        if c.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
            let msg = format!(
                "{}.command is empty; leave it out to keep the image's entrypoint",
                e.what()
            );
            self.at(c, msg);
        }
        c.get_ref().clone()
    }

    /// `snapshot = { after, inputs, env, flush }`; that `after` names jobs needing this
    /// component is checked with the other references.
    fn snapshot(&mut self, e: &Entry) -> Option<super::Snapshot> {
        let raw = e.raw.snapshot.as_ref()?.get_ref();
        let what = format!("{}.snapshot", e.what());
        let inputs = raw::items(&raw.inputs)
            .map(|p| self.repo_path(p, &format!("{what}.inputs"), None).0)
            .collect();
        Some(super::Snapshot {
            after: raw
                .after
                .get_ref()
                .iter()
                .map(|n| n.get_ref().clone())
                .collect(),
            inputs,
            env: self.env_map(&raw.env, &format!("{what}.env")),
            flush: raw
                .flush
                .as_ref()
                .map_or_else(Vec::new, |f| f.get_ref().clone()),
        })
    }

    /// `mounts = { "/container/path" = "repository/path" }`, read-only.
    fn mounts(&mut self, e: &Entry) -> Vec<Mount> {
        let what = format!("{}.mounts", e.what());
        let mut out = Vec::new();
        for (target, source) in raw::entries(&e.raw.mounts) {
            let t = target.get_ref();
            let bad_target =
                !t.starts_with('/') || t == "/" || t.split('/').any(|p| p == ".." || p == ".");
            if bad_target {
                let msg = format!(
                    "{what}: `{t}` must be an absolute path inside the container (not `/`, \
                     without `.` or `..`)"
                );
                self.at(target, msg);
            }
            let (path, kind) = self.repo_path(source, &format!("{what}.\"{t}\""), None);
            out.push(Mount {
                target: t.clone(),
                source: path,
                dir: kind == Some(PathKind::Dir),
            });
        }
        out
    }

    fn tiers(&mut self, e: &Entry) -> Tiers {
        let Some(list) = &e.raw.tiers else {
            return Tiers::BOTH;
        };
        let mut t = Tiers {
            integration: false,
            e2e: false,
        };
        let mut seen = BTreeSet::new();
        let before = self.found.len();
        for n in list.get_ref() {
            match n.get_ref().as_str() {
                "integration" => t.integration = true,
                "e2e" => t.e2e = true,
                other => {
                    let msg = format!(
                        "{}.tiers: `{other}` is not a tier; use \"integration\" and/or \"e2e\"",
                        e.what()
                    );
                    self.at(n, msg);
                }
            }
            if !seen.insert(n.get_ref()) {
                self.at(
                    n,
                    format!("{}.tiers: `{}` is listed twice", e.what(), n.get_ref()),
                );
            }
        }
        if list.get_ref().is_empty() {
            let msg = format!(
                "{}.tiers is empty; list where it may run, or leave it out for both",
                e.what()
            );
            self.at(list, msg);
        }
        // A wrong list is one error: the rest of the file is checked as if it allowed both.
        if self.found.len() > before {
            Tiers::BOTH
        } else {
            t
        }
    }
}
