//! The file as written: serde types that keep the place (span) of every value that can be
//! wrong. Unknown keys are rejected here; everything else is checked in `validate`.
//!
//! `[infra.*]`, `[services.*]` and `[jobs.*]` share one type, [`Component`]: which keys each
//! table takes is checked by validation (with a message naming the table), so the common keys
//! are read in one place.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

pub type Name = Spanned<String>;
pub type Text = Spanned<String>;
/// A table of strings keyed by names, both with places.
pub type Strings = Spanned<BTreeMap<Name, Text>>;
/// A list of names with places.
pub type Names = Spanned<Vec<Name>>;
pub type Ports = Spanned<BTreeMap<Name, Spanned<i64>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub images: BTreeMap<Name, Image>,
    pub postgres: Option<Spanned<Postgres>>,
    #[serde(default)]
    pub infra: BTreeMap<Name, Component>,
    #[serde(default)]
    pub services: BTreeMap<Name, Component>,
    #[serde(default)]
    pub jobs: BTreeMap<Name, Component>,
    #[serde(default)]
    pub consumers: BTreeMap<Name, Consumer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(rename = "ref")]
    pub reference: Text,
    pub env: Option<Text>,
    pub standin: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    pub user: Text,
    pub password: Text,
    pub database: Text,
}

/// A component of any of the three tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// `[infra.*]`: the `[images.*]` it runs.
    pub image: Option<Text>,
    /// `[services.*]`: how the image is built.
    pub dockerfile: Option<Text>,
    pub package: Option<Text>,
    pub binary: Option<Text>,
    pub context: Option<Names>,
    pub build_context: Option<Text>,
    pub build_args: Option<Strings>,
    /// `[jobs.*]`: the service whose image the job runs.
    pub service: Option<Text>,
    pub port: Option<Spanned<i64>>,
    pub extra_ports: Option<Ports>,
    pub url: Option<Text>,
    pub ready: Option<Spanned<Ready>>,
    pub timeout: Option<Text>,
    pub manifest: Option<Text>,
    pub env: Option<Strings>,
    pub needs: Option<Names>,
    pub optional: Option<Names>,
    pub command: Option<Spanned<Vec<String>>>,
    pub args: Option<Spanned<Vec<String>>>,
    pub mounts: Option<Strings>,
    pub tiers: Option<Names>,
    /// `[infra.*]`: a data image taken after jobs ran against it (warm starts).
    pub snapshot: Option<Spanned<Snapshot>>,
}

/// `snapshot = { after = [...], inputs = [...], env = {...}, flush = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub after: Names,
    pub inputs: Option<Names>,
    pub env: Option<Strings>,
    pub flush: Option<Spanned<Vec<String>>>,
}

fn start<T>(s: &Option<Spanned<T>>) -> Option<usize> {
    s.as_ref().map(|s| s.span().start)
}

impl Component {
    /// Every key present, with the place of its value.
    pub fn keys(&self) -> Vec<(&'static str, usize)> {
        let all = [
            ("image", start(&self.image)),
            ("dockerfile", start(&self.dockerfile)),
            ("package", start(&self.package)),
            ("binary", start(&self.binary)),
            ("context", start(&self.context)),
            ("build_context", start(&self.build_context)),
            ("build_args", start(&self.build_args)),
            ("service", start(&self.service)),
            ("port", start(&self.port)),
            ("extra_ports", start(&self.extra_ports)),
            ("url", start(&self.url)),
            ("ready", start(&self.ready)),
            ("timeout", start(&self.timeout)),
            ("manifest", start(&self.manifest)),
            ("env", start(&self.env)),
            ("needs", start(&self.needs)),
            ("optional", start(&self.optional)),
            ("command", start(&self.command)),
            ("args", start(&self.args)),
            ("mounts", start(&self.mounts)),
            ("tiers", start(&self.tiers)),
            ("snapshot", start(&self.snapshot)),
        ];
        all.into_iter()
            .filter_map(|(k, at)| Some((k, at?)))
            .collect()
    }

    /// The names in `needs` (empty when absent).
    pub fn needs(&self) -> &[Name] {
        self.needs.as_ref().map_or(&[], |n| n.get_ref().as_slice())
    }

    pub fn optional(&self) -> &[Name] {
        self.optional
            .as_ref()
            .map_or(&[], |n| n.get_ref().as_slice())
    }
}

/// The entries of an optional table (of strings, of ports).
pub fn entries<V>(
    s: &Option<Spanned<BTreeMap<Name, Spanned<V>>>>,
) -> impl Iterator<Item = (&Name, &Spanned<V>)> {
    s.iter().flat_map(|m| m.get_ref().iter())
}

/// The entries of an optional list of names.
pub fn items(s: &Option<Names>) -> impl Iterator<Item = &Name> {
    s.iter().flat_map(|m| m.get_ref().iter())
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Ready {
    Sql { query: String },
    Postgres {},
    Redis {},
    Http { path: String, port: Option<String> },
    Tcp { port: Option<String> },
    Exec { command: Vec<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub integration: Option<Spanned<Tier<Spanned<i64>>>>,
    pub e2e: Option<Spanned<Tier<Spanned<NodePort>>>>,
}

/// `[consumers.<name>.<tier>]`; `P` is what a port maps to in that tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier<P> {
    #[serde(default = "BTreeMap::new")]
    pub ports: BTreeMap<Name, P>,
    #[serde(default)]
    pub add: Vec<Name>,
    #[serde(default)]
    pub drop: Vec<Name>,
    pub own_ports: Option<Ports>,
    pub test: Option<Spanned<Test>>,
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<Name, Override>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePort {
    pub node_port: Spanned<i64>,
    pub host_port: Spanned<i64>,
}

/// `[consumers.<name>.<tier>.override.<component>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub env: Option<Strings>,
    pub timeout: Option<Text>,
    pub port: Option<Spanned<i64>>,
    pub extra_ports: Option<Ports>,
}

/// `test = "e2e"` (a cargo test target) or `test = ["argv", ...]`.
#[derive(Debug)]
pub enum Test {
    Target(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Test, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Test;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a cargo test target name or an argv array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Test, E> {
                Ok(Test::Target(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Test, A::Error> {
                let mut argv = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    argv.push(a);
                }
                Ok(Test::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}
