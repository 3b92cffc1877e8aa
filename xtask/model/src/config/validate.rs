//! Validation: the entry points ([`decode`], [`parse`]), the [`Validator`] that collects every
//! problem with its place, the checks shared by all tables (ports, durations, paths, names),
//! and the small tables (`[images.*]`, `[postgres]`). The component and consumer tables have a
//! file each; each table is checked in one pass.

use std::collections::BTreeMap;
use std::path::{Component as PathPart, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::diag::Diagnostics;
use super::raw::{self, Text};
use super::{names, parse_duration, Config, Image, Postgres, STANDIN_RECIPES};

/// What a path of the repository is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
}

/// The text of a file that must be UTF-8; otherwise the place of the first bad byte.
pub fn decode<'a>(file: &Path, bytes: &'a [u8]) -> Result<&'a str, Diagnostics> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = e.valid_up_to();
        let text = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
        let byte = bytes.get(good).copied().unwrap_or_default();
        let message = format!(
            "the file must be UTF-8 (byte 0x{byte:02x} is not); save it as UTF-8 and run again"
        );
        Diagnostics::new(file, text, vec![(Some(good), message)])
    })
}

/// Parses and validates `text` (the contents of `file`). `exists` says what a path (already
/// joined to `root`) is, so tests can run without touching the disk.
pub fn parse(
    file: &Path,
    root: &Path,
    text: &str,
    exists: &dyn Fn(&Path) -> Option<PathKind>,
) -> Result<Config, Diagnostics> {
    let raw: raw::File = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let found = vec![(e.span().map(|s| s.start), toml_message(e.message()))];
            return Err(Diagnostics::new(file, text, found));
        }
    };
    let mut v = Validator {
        text,
        found: Vec::new(),
        root,
        exists,
        claims: Vec::new(),
        acyclic: true,
    };
    let config = v.build(file, &raw);
    if v.found.is_empty() {
        Ok(config)
    } else {
        Err(Diagnostics::new(file, text, v.found))
    }
}

/// serde's message, with advice for unknown keys (and for the shape of format v1).
fn toml_message(msg: &str) -> String {
    let msg = msg.trim();
    if !msg.starts_with("unknown field") {
        return msg.to_string();
    }
    let hint = if msg.contains("`ports`, `add`") {
        "; in format v2 a tier's ports go in `ports = { <component> = <port>, ... }`"
    } else if msg.contains("`integration`, `e2e`") || msg.contains("`integration` or `e2e`") {
        "; in format v2 the test target is `test = \"...\"` in [consumers.<name>.<tier>]"
    } else {
        ""
    };
    format!("{msg} (unknown keys are rejected; check the spelling{hint})")
}

/// A host port claimed somewhere in the file.
pub(super) struct Claim {
    pub port: u16,
    pub what: String,
    pub offset: usize,
}

/// Collects every problem of one file, each at a byte offset of it.
pub(super) struct Validator<'a> {
    pub text: &'a str,
    pub found: Vec<(Option<usize>, String)>,
    pub root: &'a Path,
    pub exists: &'a dyn Fn(&Path) -> Option<PathKind>,
    /// Every host port in the file, for the "used twice" check.
    pub claims: Vec<Claim>,
    /// No dependency cycle (stacks are resolved only then).
    pub acyclic: bool,
}

impl Validator<'_> {
    pub fn push(&mut self, offset: Option<usize>, message: String) {
        self.found.push((offset, message));
    }

    pub fn at<T>(&mut self, s: &Spanned<T>, message: String) {
        self.push(Some(s.span().start), message);
    }

    /// `line L, column C` of an offset, for messages that name a second place.
    pub fn place(&self, offset: usize) -> String {
        let (l, c) = super::line_col(self.text, offset);
        format!("line {l}, column {c}")
    }

    /// Reports a broken name rule at the name.
    pub fn rule(&mut self, name: &Spanned<String>, check: Result<(), String>) {
        if let Err(e) = check {
            self.at(name, e);
        }
    }

    /// A port number in 1-65535; `None` (reported) otherwise.
    pub fn port(&mut self, p: &Spanned<i64>, what: &str) -> Option<u16> {
        let n = *p.get_ref();
        match u16::try_from(n) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.at(p, format!("{what}: port {n} is outside 1-65535"));
                None
            }
        }
    }

    /// Named ports (`extra_ports`, `own_ports`): names and numbers checked.
    pub fn named_ports(&mut self, ports: &Option<raw::Ports>, what: &str) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        for (k, p) in ports.iter().flat_map(|m| m.get_ref()) {
            self.rule(k, names::port_name(k.get_ref()));
            if let Some(n) = self.port(p, &format!("{what}.{}", k.get_ref())) {
                out.insert(k.get_ref().clone(), n);
            }
        }
        out
    }

    /// A duration, or `None` (reported).
    pub fn duration(&mut self, t: &Option<Text>, what: &str) -> Option<Duration> {
        let t = t.as_ref()?;
        match parse_duration(t.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.at(t, format!("{what}: {e}"));
                None
            }
        }
    }

    /// Environment entries: names checked; values are templates checked later.
    pub fn env_map(&mut self, env: &Option<raw::Strings>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in raw::entries(env) {
            if let Err(e) = names::env_var(k.get_ref()) {
                self.at(k, format!("{what}: {e}"));
            }
            out.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out
    }

    /// A path inside the repository that exists (as `want`, when given); what it is.
    pub fn repo_path(
        &mut self,
        p: &Text,
        what: &str,
        want: Option<PathKind>,
    ) -> (PathBuf, Option<PathKind>) {
        let path = PathBuf::from(p.get_ref());
        let outside = path.is_absolute()
            || path.as_os_str().is_empty()
            || path.components().any(|c| c == PathPart::ParentDir);
        if outside {
            let msg = format!(
                "{what}: `{}` must be a path inside the repository (relative, without `..`)",
                p.get_ref()
            );
            self.at(p, msg);
            return (path, None);
        }
        let found = (self.exists)(&self.root.join(&path));
        let problem = match (found, want) {
            (None, _) => Some(format!(
                "{what}: {} does not exist (paths are relative to {})",
                path.display(),
                display_root(self.root)
            )),
            (Some(PathKind::File), Some(PathKind::Dir)) => Some(format!(
                "{what}: {} is a file; name a folder",
                path.display()
            )),
            (Some(PathKind::Dir), Some(PathKind::File)) => Some(format!(
                "{what}: {} is a folder; name a file",
                path.display()
            )),
            _ => None,
        };
        if let Some(m) = problem {
            self.at(p, m);
        }
        (path, found)
    }

    pub fn claim(&mut self, port: u16, offset: usize, what: String) {
        self.claims.push(Claim { port, what, offset });
    }

    fn build(&mut self, file: &Path, raw: &raw::File) -> Config {
        let images = self.images(raw);
        let postgres = self.postgres(raw);
        let components = self.components(raw, &images);
        let consumers = self.consumers(raw, &components);
        self.duplicate_ports();
        Config {
            file: file.to_path_buf(),
            root: self.root.to_path_buf(),
            images,
            postgres,
            components,
            consumers,
            sets: BTreeMap::new(),
        }
    }

    fn images(&mut self, raw: &raw::File) -> BTreeMap<String, Image> {
        let mut images = BTreeMap::new();
        for (name, img) in &raw.images {
            let n = name.get_ref();
            self.rule(name, names::image(n));
            if img.reference.get_ref().trim().is_empty() {
                self.at(&img.reference, format!("images.{n}.ref is empty"));
            }
            if let Some(env) = &img.env {
                if let Err(e) = names::env_var(env.get_ref()) {
                    self.at(env, format!("images.{n}.env: {e}"));
                }
            }
            if let Some(s) = &img.standin {
                if !STANDIN_RECIPES.contains(&s.get_ref().as_str()) {
                    let msg = format!(
                        "images.{n}.standin: `{}` is not a stand-in recipe{}; known: {}",
                        s.get_ref(),
                        super::suggest(s.get_ref(), &STANDIN_RECIPES.map(String::from)),
                        STANDIN_RECIPES.join(", ")
                    );
                    self.at(s, msg);
                }
            }
            let image = Image {
                name: n.clone(),
                default_ref: img.reference.get_ref().clone(),
                env: img.env.as_ref().map(|e| e.get_ref().clone()),
                standin: img.standin.as_ref().map(|e| e.get_ref().clone()),
            };
            images.insert(n.clone(), image);
        }
        images
    }

    fn postgres(&mut self, raw: &raw::File) -> Postgres {
        match &raw.postgres {
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
        }
    }

    /// Reports every host port claimed more than once, at each later claim, naming the first.
    fn duplicate_ports(&mut self) {
        let mut first: BTreeMap<u16, (String, usize)> = BTreeMap::new();
        let mut claims = std::mem::take(&mut self.claims);
        claims.sort_by_key(|c| c.offset);
        for c in &claims {
            let Some((owner, off)) = first.get(&c.port) else {
                first.insert(c.port, (c.what.clone(), c.offset));
                continue;
            };
            let msg = format!(
                "host port {} of {} is also used by {owner} at {}; every host port must be \
                 unique (two runs on one host would collide): pick a free one, see \
                 `cargo xtask ports`",
                c.port,
                c.what,
                self.place(*off)
            );
            self.push(Some(c.offset), msg);
        }
    }
}

pub(super) fn display_root(root: &Path) -> String {
    if root == Path::new(".") {
        "the folder of the file".to_string()
    } else {
        root.display().to_string()
    }
}
