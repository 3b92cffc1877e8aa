//! The stack of one consumer's tier, resolved in ONE place for validation and planning alike:
//! which components run (the consumer's needs, and itself in E2E; plus `add`; minus `drop`), in
//! dependency order, each with this consumer's `override` and the command line's `--set`
//! applied and its env entries that name a dropped component left out.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};

use crate::graph::{self, Graph};

use super::{placeholder_component, placeholders, Component, Config, Override, Tier, TierName};

/// The components of one consumer's tier, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub consumer: String,
    pub tier: TierName,
    /// Each after what it needs; `needs` and `optional` hold members only.
    pub members: Vec<Component>,
}

impl Stack {
    pub fn get(&self, name: &str) -> Option<&Component> {
        self.members.iter().find(|c| c.name == name)
    }

    /// Member names, in dependency order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|c| c.name.clone()).collect()
    }
}

/// A stack, and what was wrong with the tier's `drop` (validation reports it).
pub(super) struct Resolved {
    pub stack: Stack,
    /// Dropped names that are not an optional need of anything in the stack.
    pub unused_drops: BTreeSet<String>,
    /// Dropped names still in the stack, with what still needs them (`None`: the consumer
    /// itself or `add`).
    pub needed_drops: BTreeMap<String, Option<String>>,
}

/// Resolves the stack of `consumer`'s `tier` (configured by `t`).
pub(super) fn resolve<P>(
    components: &BTreeMap<String, Component>,
    sets: &BTreeMap<String, Override>,
    consumer: &str,
    tier: TierName,
    t: &Tier<P>,
) -> Resolved {
    let full = super::needs_graph(components);
    let cut = graph_without(components, &t.drop);
    let before = reach(&full, consumer, tier, &t.add);
    let set = reach(&cut, consumer, tier, &t.add);
    // What may drop an optional need: the members, and the consumer (in integration it is not
    // a member, but its needs are the stack).
    let mut parents: Vec<&Component> = before.iter().map(|m| &components[*m]).collect();
    parents.extend(components.get(consumer));
    let unused_drops = t
        .drop
        .iter()
        .filter(|d| !parents.iter().any(|p| p.optional.contains(*d)))
        .cloned()
        .collect();
    let needed_drops = t
        .drop
        .iter()
        .filter(|d| set.contains(d.as_str()))
        .map(|d| {
            let needs_it = |m: &&str| cut.get(m).is_some_and(|deps| deps.contains(&d.as_str()));
            let by = set.iter().copied().chain([consumer]).find(needs_it);
            (d.clone(), by.map(str::to_string))
        })
        .collect();
    // A cycle cannot pass validation; keep name order rather than fail.
    let order =
        graph::order(&cut, &set).unwrap_or_else(|_| set.iter().map(|s| s.to_string()).collect());
    let members = order
        .iter()
        .map(|n| member(&components[n], &set, t.overrides.get(n), sets.get(n)))
        .collect();
    Resolved {
        stack: Stack {
            consumer: consumer.to_string(),
            tier,
            members,
        },
        unused_drops,
        needed_drops,
    }
}

/// The needs graph without the edges to dropped optional needs.
fn graph_without<'a>(
    components: &'a BTreeMap<String, Component>,
    drop: &BTreeSet<String>,
) -> Graph<'a> {
    components
        .values()
        .map(|c| {
            let deps = c
                .needs
                .iter()
                .filter(|n| !(c.optional.contains(*n) && drop.contains(*n)))
                .map(String::as_str)
                .collect();
            (c.name.as_str(), deps)
        })
        .collect()
}

/// What the tier runs: what the consumer needs (and, in E2E, itself), and what `add` names,
/// each with everything it needs.
fn reach<'a>(g: &Graph<'a>, consumer: &str, tier: TierName, add: &[String]) -> BTreeSet<&'a str> {
    let mut set = BTreeSet::new();
    if let Some((name, _)) = g.get_key_value(consumer) {
        set.extend(graph::closure(g, name));
        if tier == TierName::E2e {
            set.insert(*name);
        }
    }
    for a in add {
        if let Some((name, _)) = g.get_key_value(a.as_str()) {
            set.insert(*name);
            set.extend(graph::closure(g, name));
        }
    }
    set
}

/// One member as it runs in this stack.
fn member(
    c: &Component,
    members: &BTreeSet<&str>,
    consumer_override: Option<&Override>,
    set: Option<&Override>,
) -> Component {
    let mut c = c.clone();
    c.needs.retain(|n| members.contains(n.as_str()));
    c.optional.retain(|n| members.contains(n.as_str()));
    c.env.retain(|_, tmpl| {
        placeholders(tmpl)
            .iter()
            .filter_map(|k| placeholder_component(k))
            .all(|n| members.contains(n))
    });
    for o in [consumer_override, set].into_iter().flatten() {
        apply(&mut c, o);
    }
    c
}

fn apply(c: &mut Component, o: &Override) {
    c.env.extend(o.env.clone());
    if let Some(t) = o.timeout {
        c.timeout = t;
    }
    if o.port.is_some() {
        c.port = o.port;
    }
    c.extra_ports.extend(o.extra_ports.clone());
}

impl Config {
    /// The resolved stack of `consumer`'s `tier`: what the planners run.
    pub fn stack(&self, consumer: &str, tier: TierName) -> Result<Stack> {
        let c = self.consumer(consumer)?;
        let r = match tier {
            TierName::Integration => c
                .integration
                .as_ref()
                .map(|t| resolve(&self.components, &self.sets, consumer, tier, t)),
            TierName::E2e => c
                .e2e
                .as_ref()
                .map(|t| resolve(&self.components, &self.sets, consumer, tier, t)),
        };
        let r = r.with_context(|| {
            format!(
                "{} has no [consumers.{consumer}.{tier}] table; add one to run {consumer}'s \
                 {tier} tests",
                self.file.display()
            )
        })?;
        if let Some(d) = r.unused_drops.iter().chain(r.needed_drops.keys()).next() {
            anyhow::bail!(
                "consumers.{consumer}.{tier}.drop: `{d}` cannot be dropped; run `cargo xtask check`"
            );
        }
        Ok(r.stack)
    }
}
