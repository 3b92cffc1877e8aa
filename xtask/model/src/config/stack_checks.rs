//! Checks of a consumer's resolved stack (one tier): `drop` took out what it meant to, ports
//! and overrides name members, every member the tests reach has a host port, members may run in
//! the tier, container names resolve. Also, once per component, the manifest of everything an
//! E2E stack deploys.

use std::collections::{BTreeMap, BTreeSet};

use super::consumers::Cx;
use super::raw::{self, Name};
use super::stack::Resolved;
use super::validate::Validator;
use super::{names, suggest, Component, PortRef, Stack, TierName};

impl Validator<'_> {
    pub(super) fn check_stack<R>(&mut self, cx: &Cx, t: &raw::Tier<R>, r: &Resolved) {
        let s = &r.stack;
        self.drops(cx, &t.drop, r);
        for key in t.ports.keys() {
            self.port_ref(cx, key, s);
        }
        match cx.tier {
            TierName::Integration => self.host_ports_for_members(cx, t, s),
            TierName::E2e => self.node_port_for_itself(cx, t, s),
        }
        for (name, o) in &t.overrides {
            self.override_target(cx, name, o, s);
        }
        self.tiers_of_members(cx, s);
    }

    fn drops(&mut self, cx: &Cx, drop: &[Name], r: &Resolved) {
        let mut seen = BTreeSet::new();
        // A name listed twice is reported as such (once) by `drop_names`.
        for d in drop.iter().filter(|d| seen.insert(d.get_ref())) {
            let n = d.get_ref();
            let msg = if r.unused_drops.contains(n) {
                format!(
                    "{}.drop: `{n}` is not an optional need of anything in {}'s {} stack; only \
                     needs listed in a component's `optional` can be dropped",
                    cx.what, cx.consumer, cx.tier
                )
            } else {
                match r.needed_drops.get(n) {
                    None => continue,
                    Some(Some(by)) => format!(
                        "{}.drop: `{by}` needs `{n}` (not optionally), so it stays in the stack",
                        cx.what
                    ),
                    Some(None) => format!(
                        "{}.drop: `{n}` is the consumer itself or in `add`; it cannot be dropped",
                        cx.what
                    ),
                }
            };
            self.at(d, msg);
        }
    }

    /// A published port names a port of a member of the stack.
    fn port_ref(&mut self, cx: &Cx, key: &Name, s: &Stack) {
        let pr = PortRef::parse(key.get_ref());
        let what = format!("{}.ports.{}", cx.what, key.get_ref());
        let problem = match (cx.components.get(&pr.component), s.get(&pr.component)) {
            (None, _) => Some(format!(
                "unknown component `{}`{}",
                pr.component,
                suggest(&pr.component, &cx.known())
            )),
            (Some(_), None) => Some(format!(
                "`{}` is not part of {}'s {} stack ({}); add it to the `needs` of {} (or of what \
                 it needs), or to `add`, or remove this port",
                pr.component,
                cx.consumer,
                cx.tier,
                s.names().join(", "),
                cx.consumer
            )),
            (_, Some(c)) if c.is_job() => {
                Some(format!("`{}` is a job; jobs have no ports", pr.component))
            }
            (Some(defined), Some(_)) => pr.port.as_ref().and_then(|p| no_such_port(defined, p)),
        };
        if let Some(p) = problem {
            self.at(key, format!("{what}: {p}"));
        }
    }

    /// The tests and the readiness checks reach every container through a host port; every
    /// container name must resolve.
    fn host_ports_for_members<R>(&mut self, cx: &Cx, t: &raw::Tier<R>, s: &Stack) {
        let named: BTreeSet<PortRef> = t
            .ports
            .keys()
            .map(|k| PortRef::parse(k.get_ref()))
            .collect();
        // A member that may not run here is reported as such (see `tiers_of_members`).
        let runs = |m: &&Component| !m.is_job() && m.tiers.allows(cx.tier);
        for m in s.members.iter().filter(runs) {
            // A name that breaks its own limit is one error, reported at the name.
            let names_ok =
                names::component(&m.name).is_ok() && names::consumer(cx.consumer).is_ok();
            if let (true, Err(e)) = (names_ok, names::container(cx.consumer, &m.name)) {
                self.push(Some(cx.at), format!("{}: {e}", cx.what));
            }
            let main = PortRef {
                component: m.name.clone(),
                port: None,
            };
            if !named.contains(&main) {
                let msg = format!(
                    "{}: no host port for `{}`, which {}'s integration stack runs (its readiness \
                     check and the tests reach it through the host); add `{} = <free port>` to \
                     `ports`",
                    cx.what, m.name, cx.consumer, m.name
                );
                self.push(Some(cx.at), msg);
            }
        }
    }

    /// A consumer deployed in its own E2E stack is reached by its tests through a NodePort.
    fn node_port_for_itself<R>(&mut self, cx: &Cx, t: &raw::Tier<R>, s: &Stack) {
        let Some(me) = s.get(cx.consumer).filter(|c| c.port.is_some()) else {
            return;
        };
        let has = t.ports.keys().any(|k| {
            PortRef::parse(k.get_ref())
                == PortRef {
                    component: me.name.clone(),
                    port: None,
                }
        });
        if !has {
            let msg = format!(
                "{}: no NodePort for `{}` itself; its E2E tests reach it through one: add `{} = \
                 {{ node_port = <30000-32767>, host_port = <free port> }}` to `ports`",
                cx.what, me.name, me.name
            );
            self.push(Some(cx.at), msg);
        }
    }

    fn override_target(&mut self, cx: &Cx, name: &Name, o: &raw::Override, s: &Stack) {
        let n = name.get_ref();
        let what = format!("{}.override.{n}", cx.what);
        let Some(c) = s.get(n) else {
            let msg = if cx.components.contains_key(n) {
                format!(
                    "{what}: `{n}` is not part of {}'s {} stack ({})",
                    cx.consumer,
                    cx.tier,
                    s.names().join(", ")
                )
            } else {
                format!("{what}: unknown component `{n}`{}", suggest(n, &cx.known()))
            };
            self.at(name, msg);
            return;
        };
        if c.is_job() && (o.port.is_some() || o.extra_ports.is_some()) {
            self.at(name, format!("{what}: `{n}` is a job; jobs have no ports"));
        } else {
            // The names of the component as defined (the override may only change numbers).
            let defined = cx.components.get(n).unwrap_or(c);
            for (k, _) in raw::entries(&o.extra_ports) {
                // A malformed name is reported as such.
                let valid = names::port_name(k.get_ref()).is_ok();
                if let Some(p) = no_such_port(defined, k.get_ref()).filter(|_| valid) {
                    self.at(k, format!("{what}.extra_ports: {p}"));
                }
            }
        }
        // Templates may name what the component reaches in this stack.
        let graph = crate::graph::of(
            s.members.iter(),
            |c| c.name.as_str(),
            |c| c.needs.as_slice(),
        );
        let reach: BTreeSet<String> = crate::graph::closure(&graph, n)
            .into_iter()
            .map(str::to_string)
            .collect();
        for (k, tmpl) in raw::entries(&o.env) {
            let w = format!("{what}.env.{}", k.get_ref());
            self.template(tmpl, &w, cx.components, &reach, false);
        }
    }

    /// A member that may not run in this tier got here as an optional need of a member or of
    /// the consumer (a need that is not optional is reported at the component, `add` at the
    /// tier's `add`).
    fn tiers_of_members(&mut self, cx: &Cx, s: &Stack) {
        let consumer = cx
            .components
            .get(cx.consumer)
            .filter(|_| s.get(cx.consumer).is_none());
        let parents = s
            .members
            .iter()
            .filter(|m| m.tiers.allows(cx.tier))
            .chain(consumer);
        for m in parents {
            for n in &m.optional {
                let Some(need) = s.get(n).filter(|c| !c.tiers.allows(cx.tier)) else {
                    continue;
                };
                let msg = format!(
                    "{}: `{}` runs in {} (its `tiers`), yet `{}` brings it into this stack as an \
                     optional need: add `drop = [\"{}\"]`",
                    cx.what, need.name, need.tiers, m.name, need.name
                );
                self.push(Some(cx.at), msg);
            }
        }
        if let Some(me) = s.get(cx.consumer).filter(|c| !c.tiers.allows(cx.tier)) {
            let msg = format!(
                "{}: `{}` runs in {} (its `tiers`), so it has no {} stack",
                cx.what, me.name, me.tiers, cx.tier
            );
            self.push(Some(cx.at), msg);
        }
    }

    /// Every component an E2E stack deploys needs its manifest template (reported once).
    pub(super) fn manifests(
        &mut self,
        raw: &raw::File,
        components: &BTreeMap<String, Component>,
        deployed: &BTreeMap<String, Vec<String>>,
    ) {
        for (name, consumers) in deployed {
            let Some(c) = components.get(name) else {
                continue;
            };
            if (self.exists)(&self.root.join(&c.manifest)).is_some() {
                continue;
            }
            let table = [&raw.infra, &raw.services, &raw.jobs]
                .into_iter()
                .find_map(|t| t.get_key_value(name.as_str()));
            let at = table.map(|(k, rc)| {
                rc.manifest
                    .as_ref()
                    .map_or(k.span().start, |m| m.span().start)
            });
            let msg = format!(
                "{}.{name}: its manifest template {} does not exist, and E2E runs of {} deploy \
                 it (set `manifest = \"...\"` or create the file)",
                c.table(),
                c.manifest.display(),
                consumers.join(", ")
            );
            self.push(at, msg);
        }
    }
}

/// Why `c` has no port `p`, if it has none.
fn no_such_port(c: &Component, p: &str) -> Option<String> {
    if c.extra_ports.contains_key(p) {
        return None;
    }
    let known: Vec<String> = c.extra_ports.keys().cloned().collect();
    Some(format!(
        "`{}` has no port called `{p}`{} (its extra_ports: {})",
        c.name,
        suggest(p, &known),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}
