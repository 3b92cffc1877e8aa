//! What components say about each other, checked once all are known: `needs` and `optional`
//! name known components, the one search for a dependency cycle, `{...}` templates name what a
//! component can reach, tiers agree along needs, and tests' URL variables are unique.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::components::Entry;
use super::validate::Validator;
use super::{names, needs_graph, placeholders, suggest, Component, Ready};

impl Validator<'_> {
    pub(super) fn references(
        &mut self,
        entries: &[Entry],
        components: &BTreeMap<String, Component>,
    ) {
        for e in entries {
            self.needs_known(e, components);
            self.tiers_along_needs(e, components);
            self.ready_port(e, components);
            self.snapshot_after(e, components);
        }
        let graph = needs_graph(components);
        if let Some(cycle) = crate::graph::cycle(&graph) {
            self.acyclic = false;
            let off = entries
                .iter()
                .find(|e| e.name() == cycle[0])
                .and_then(|e| e.raw.needs().iter().find(|n| n.get_ref() == &cycle[1]))
                .map(|n| n.span().start);
            let msg = format!(
                "dependency cycle: {} (a component cannot wait for itself; remove one of these \
                 `needs`)",
                cycle.join(" -> ")
            );
            self.push(off, msg);
        } else {
            for e in entries {
                let reach = crate::graph::closure(&graph, e.name());
                let reach: BTreeSet<String> = reach.into_iter().map(str::to_string).collect();
                let what = e.what();
                for (k, tmpl) in super::raw::entries(&e.raw.env) {
                    let w = format!("{what}.env.{}", k.get_ref());
                    self.template(tmpl, &w, components, &reach, false);
                }
                if let Some(url) = &e.raw.url {
                    self.template(url, &format!("{what}.url"), components, &reach, true);
                }
            }
        }
        self.url_variables(entries, components);
    }

    /// A snapshot is taken after jobs that run against the component: each `after` is a job
    /// that needs it.
    fn snapshot_after(&mut self, e: &Entry, components: &BTreeMap<String, Component>) {
        let Some(snap) = e.raw.snapshot.as_ref() else {
            return;
        };
        for job in snap.get_ref().after.get_ref() {
            let ok = components
                .get(job.get_ref())
                .is_some_and(|c| c.is_job() && c.needs.iter().any(|n| n == e.name()));
            if !ok {
                let msg = format!(
                    "{}.snapshot.after: `{}` must be a job that needs `{}` (the data image holds \
                     what such jobs did to it)",
                    e.what(),
                    job.get_ref(),
                    e.name()
                );
                self.at(job, msg);
            }
        }
    }

    fn needs_known(&mut self, e: &Entry, components: &BTreeMap<String, Component>) {
        let name = e.name();
        let what = e.what();
        let known: Vec<String> = components.keys().cloned().collect();
        for need in e.raw.needs() {
            if need.get_ref() == name {
                self.at(need, format!("{what}.needs: `{name}` needs itself"));
            } else if !components.contains_key(need.get_ref()) {
                let msg = format!(
                    "{what}.needs: unknown component `{}`{}; known: {}",
                    need.get_ref(),
                    suggest(need.get_ref(), &known),
                    known.join(", ")
                );
                self.at(need, msg);
            }
        }
        for o in e.raw.optional() {
            if !e.raw.needs().iter().any(|n| n.get_ref() == o.get_ref()) {
                let msg = format!(
                    "{what}.optional: `{}` is not in `needs`; `optional` lists needs `{name}` can \
                     run without",
                    o.get_ref()
                );
                self.at(o, msg);
            }
        }
    }

    /// A component that may run in a tier cannot need (for sure) one that may not.
    fn tiers_along_needs(&mut self, e: &Entry, components: &BTreeMap<String, Component>) {
        let Some(c) = components.get(e.name()) else {
            return;
        };
        for need in e.raw.needs() {
            let Some(n) = components.get(need.get_ref()) else {
                continue;
            };
            let fits =
                (!c.tiers.integration || n.tiers.integration) && (!c.tiers.e2e || n.tiers.e2e);
            if fits || c.optional.contains(&n.name) {
                continue;
            }
            let msg = format!(
                "{}.needs: `{}` may run in {} but `{}` runs in {}; make it optional (`optional = \
                 [\"{}\"]`, and consumers `drop` it) or narrow `tiers` of `{}`",
                e.what(),
                c.name,
                c.tiers,
                n.name,
                n.tiers,
                n.name,
                c.name
            );
            self.at(need, msg);
        }
    }

    fn ready_port(&mut self, e: &Entry, components: &BTreeMap<String, Component>) {
        let Some(c) = components.get(e.name()) else {
            return;
        };
        let (Ready::Http { port: Some(p), .. } | Ready::Tcp { port: Some(p) }) = &c.ready else {
            return;
        };
        if !c.extra_ports.contains_key(p) {
            let off = e.raw.ready.as_ref().map(|r| r.span().start);
            let msg = format!(
                "{}.ready.port: `{p}` is not one of its extra_ports",
                e.what()
            );
            self.push(off, msg);
        }
    }

    /// `{C}[_{P}]_URL` tells tests where a port is: no two ports may share one.
    fn url_variables(&mut self, entries: &[Entry], components: &BTreeMap<String, Component>) {
        let mut owners: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for e in entries {
            let Some(c) = components.get(e.name()).filter(|c| !c.is_job()) else {
                continue;
            };
            let mut ports: Vec<(Option<&str>, usize)> = vec![(None, e.key.span().start)];
            for (k, _) in super::raw::entries(&e.raw.extra_ports) {
                ports.push((Some(k.get_ref()), k.span().start));
            }
            for (port, off) in ports {
                let var = names::url_env_var(&c.name, port);
                let this = port.map_or(c.name.clone(), |p| format!("{}.{p}", c.name));
                if let Some((other, at)) = owners.get(&var) {
                    let msg = format!(
                        "tests would find both `{this}` and `{other}` (at {}) in `{var}`; rename \
                         one of them",
                        self.place(*at)
                    );
                    self.push(Some(off), msg);
                } else {
                    owners.insert(var, (this, off));
                }
            }
        }
    }

    /// Checks the placeholders of a template; `reach` is what its component can name.
    pub(super) fn template(
        &mut self,
        tmpl: &Spanned<String>,
        what: &str,
        components: &BTreeMap<String, Component>,
        reach: &BTreeSet<String>,
        is_url: bool,
    ) {
        for key in placeholders(tmpl.get_ref()) {
            if let Some(p) = placeholder_problem(&key, components, reach, is_url) {
                self.at(tmpl, format!("{what}: {p}"));
            }
        }
    }
}

fn placeholder_problem(
    key: &str,
    components: &BTreeMap<String, Component>,
    reach: &BTreeSet<String>,
    is_url: bool,
) -> Option<String> {
    if (is_url && (key == "host" || key == "port"))
        || matches!(
            key,
            "postgres.user" | "postgres.password" | "postgres.database"
        )
    {
        return None;
    }
    let parts: Vec<&str> = key.split('.').collect();
    let c = match parts.as_slice() {
        [c, "url"] | [c, _, "url"] => *c,
        _ => {
            return Some(format!(
                "unknown placeholder `{{{key}}}`; use {{component.url}}, {{component.port.url}}, \
                 {{postgres.user}}, {{postgres.password}}, {{postgres.database}}{}",
                if is_url { ", {host}, {port}" } else { "" }
            ))
        }
    };
    let Some(comp) = components.get(c) else {
        let known: Vec<String> = components.keys().cloned().collect();
        return Some(format!(
            "`{{{key}}}` names unknown component `{c}`{}",
            suggest(c, &known)
        ));
    };
    if !reach.contains(c) {
        return Some(format!(
            "`{{{key}}}` names `{c}`, which is not among what this component needs; add `{c}` \
             to its needs"
        ));
    }
    match parts.as_slice() {
        [_, p, _] if !comp.extra_ports.contains_key(*p) => {
            Some(format!("`{{{key}}}`: `{c}` has no port called `{p}`"))
        }
        _ if comp.is_job() => Some(format!("`{{{key}}}`: `{c}` is a job and has no URL")),
        _ => None,
    }
}
