//! `[consumers.*]`: one pass over the consumers. Each tier's keys are checked, then its stack is
//! resolved by the same function the planners use (`stack::resolve`) and checked: ports name
//! members, every member the tests reach has a host port, `drop` and `override` make sense,
//! tiers and container names fit. Every host port is claimed for the file-wide collision check.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::raw::{self, Name};
use super::stack::resolve;
use super::validate::Validator;
use super::{
    names, suggest, Component, Consumer, NodePort, Override, PortRef, Source, Stack, TestCmd, Tier,
    TierName,
};

/// The tier being checked.
pub(super) struct Cx<'c> {
    pub consumer: &'c str,
    pub tier: TierName,
    /// `consumers.<name>.<tier>`
    pub what: String,
    /// The place of the tier's table.
    pub at: usize,
    pub components: &'c BTreeMap<String, Component>,
}

impl Cx<'_> {
    pub fn known(&self) -> Vec<String> {
        self.components.keys().cloned().collect()
    }
}

impl Validator<'_> {
    pub(super) fn consumers(
        &mut self,
        raw: &raw::File,
        components: &BTreeMap<String, Component>,
    ) -> BTreeMap<String, Consumer> {
        // Component -> the consumers whose E2E stack deploys it.
        let mut deployed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (key, rc) in &raw.consumers {
            let name = key.get_ref().as_str();
            self.rule(key, names::consumer(name));
            let cx = |tier: TierName, at: usize| Cx {
                consumer: name,
                tier,
                what: format!("consumers.{name}.{tier}"),
                at,
                components,
            };
            let integration = rc.integration.as_ref().map(|t| {
                let cx = cx(TierName::Integration, t.span().start);
                self.tier(&cx, t.get_ref(), &mut Self::host_port).0
            });
            let e2e = rc.e2e.as_ref().map(|t| {
                let cx = cx(TierName::E2e, t.span().start);
                let mut node_ports = BTreeMap::new();
                let (tier, stack) = self.tier(&cx, t.get_ref(), &mut |v, w, p| {
                    v.node_port(w, p, &mut node_ports)
                });
                for m in stack.map(|s| s.names()).unwrap_or_default() {
                    deployed.entry(m).or_default().push(name.to_string());
                }
                tier
            });
            let c = Consumer {
                name: name.to_string(),
                integration,
                e2e,
            };
            out.insert(name.to_string(), c);
        }
        self.manifests(raw, components, &deployed);
        out
    }

    /// An integration port: a host port, claimed.
    fn host_port(&mut self, what: &str, p: &Spanned<i64>) -> Option<u16> {
        let n = self.port(p, what)?;
        self.claim(n, p.span().start, what.to_string());
        Some(n)
    }

    /// An E2E port: a NodePort unique in the cluster, and a host port, claimed.
    fn node_port(
        &mut self,
        what: &str,
        np: &Spanned<raw::NodePort>,
        seen: &mut BTreeMap<u16, (String, usize)>,
    ) -> Option<NodePort> {
        let np = np.get_ref();
        let n = *np.node_port.get_ref();
        let node_port = u16::try_from(n)
            .ok()
            .filter(|p| (30000..=32767).contains(p));
        match node_port {
            None => self.at(
                &np.node_port,
                format!("{what}.node_port: {n} is outside Kubernetes' NodePort range 30000-32767"),
            ),
            Some(p) => {
                if let Some((other, off)) = seen.get(&p) {
                    let msg = format!(
                        "{what}.node_port: NodePort {p} is also used by {other} at {}; within one \
                         cluster every NodePort must be unique",
                        self.place(*off)
                    );
                    self.at(&np.node_port, msg);
                } else {
                    seen.insert(p, (what.to_string(), np.node_port.span().start));
                }
            }
        }
        let host_port = self.host_port(&format!("{what}.host_port"), &np.host_port);
        Some(NodePort {
            node_port: node_port?,
            host_port: host_port?,
        })
    }

    /// One tier: its keys, then its resolved stack (returned unless there is a cycle).
    fn tier<R, P>(
        &mut self,
        cx: &Cx,
        t: &raw::Tier<R>,
        port: &mut dyn FnMut(&mut Self, &str, &R) -> Option<P>,
    ) -> (Tier<P>, Option<Stack>) {
        let mut ports = BTreeMap::new();
        for (k, r) in &t.ports {
            if let Some(p) = port(self, &format!("{}.ports.{}", cx.what, k.get_ref()), r) {
                ports.insert(PortRef::parse(k.get_ref()), p);
            }
        }
        let tier = Tier {
            ports,
            add: self.add(cx, &t.add),
            drop: self.drop_names(cx, &t.drop),
            own_ports: self.own_ports(cx, &t.own_ports),
            test: self.test_cmd(cx, &t.test),
            overrides: self.overrides(cx, &t.overrides),
        };
        if !self.acyclic {
            return (tier, None);
        }
        // No `--set` while checking the file.
        let r = resolve(cx.components, &BTreeMap::new(), cx.consumer, cx.tier, &tier);
        self.check_stack(cx, t, &r);
        (tier, Some(r.stack))
    }

    fn add(&mut self, cx: &Cx, add: &[Name]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in add {
            let n = a.get_ref();
            let problem = match cx.components.get(n) {
                None => Some(format!(
                    "unknown component `{n}`{}; known: {}",
                    suggest(n, &cx.known()),
                    cx.known().join(", ")
                )),
                Some(c) if !c.tiers.allows(cx.tier) => Some(format!(
                    "`{n}` runs in {} (its `tiers`), not in {}",
                    c.tiers, cx.tier
                )),
                Some(_) if out.contains(n) => Some(format!("`{n}` is listed twice")),
                Some(_) => None,
            };
            match problem {
                Some(p) => self.at(a, format!("{}.add: {p}", cx.what)),
                None => out.push(n.clone()),
            }
        }
        out
    }

    fn drop_names(&mut self, cx: &Cx, drop: &[Name]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for d in drop {
            let n = d.get_ref();
            if !cx.components.contains_key(n) {
                let msg = format!(
                    "{}.drop: unknown component `{n}`{}",
                    cx.what,
                    suggest(n, &cx.known())
                );
                self.at(d, msg);
            } else if !out.insert(n.clone()) {
                self.at(d, format!("{}.drop: `{n}` is listed twice", cx.what));
            }
        }
        out
    }

    fn own_ports(&mut self, cx: &Cx, own: &Option<raw::Ports>) -> BTreeMap<String, u16> {
        let what = format!("{}.own_ports", cx.what);
        if let (TierName::E2e, Some(o)) = (cx.tier, own) {
            let msg = format!(
                "{what}: in e2e the consumer runs in the cluster; own_ports are its in-process \
                 ports in integration"
            );
            self.at(o, msg);
            return BTreeMap::new();
        }
        let ports = self.named_ports(own, &what);
        for (k, p) in raw::entries(own) {
            if ports.contains_key(k.get_ref()) {
                let n = ports[k.get_ref()];
                self.claim(n, p.span().start, format!("{what}.{}", k.get_ref()));
            }
        }
        ports
    }

    /// `test`: a cargo test target of a Rust consumer (default: the tier's name) or an argv.
    fn test_cmd(&mut self, cx: &Cx, test: &Option<Spanned<raw::Test>>) -> TestCmd {
        let package = match cx.components.get(cx.consumer).map(|c| &c.source) {
            Some(Source::Rust(r)) => Some(r.package.clone()),
            _ => None,
        };
        let at = test.as_ref().map_or(cx.at, |t| t.span().start);
        match (test.as_ref().map(Spanned::get_ref), package) {
            (Some(raw::Test::Argv(argv)), _) => {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    let msg = format!("{}.test: the argv is empty; give a program", cx.what);
                    self.push(Some(at), msg);
                }
                TestCmd::Argv(argv.clone())
            }
            (target, Some(package)) => {
                let target = match target {
                    Some(raw::Test::Target(t)) => t.clone(),
                    _ => cx.tier.as_str().to_string(),
                };
                let ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    let msg = format!("{}.test: `{target}` is not a test target name", cx.what);
                    self.push(Some(at), msg);
                }
                TestCmd::Cargo { package, target }
            }
            (_, None) => {
                let msg = format!(
                    "{}: `{}` is not a Rust service of this workspace, so there is no package to \
                     `cargo test`; give the command as an argv: `test = [\"program\", \"arg\"]`",
                    cx.what, cx.consumer
                );
                self.push(Some(at), msg);
                TestCmd::Argv(Vec::new())
            }
        }
    }

    fn overrides(
        &mut self,
        cx: &Cx,
        overrides: &BTreeMap<Name, raw::Override>,
    ) -> BTreeMap<String, Override> {
        let mut out = BTreeMap::new();
        for (name, o) in overrides {
            let what = format!("{}.override.{}", cx.what, name.get_ref());
            let port = o
                .port
                .as_ref()
                .and_then(|p| self.port(p, &format!("{what}.port")));
            let ov = Override {
                env: self.env_map(&o.env, &format!("{what}.env")),
                timeout: self.duration(&o.timeout, &format!("{what}.timeout")),
                port,
                extra_ports: self.named_ports(&o.extra_ports, &format!("{what}.extra_ports")),
            };
            out.insert(name.get_ref().clone(), ov);
        }
        out
    }
}
