//! The one dependency-graph module: cycles, order, closure and the longest (critical) path, for
//! `infra.toml` components, plan task graphs and run reports alike. Pure.
//!
//! A graph maps each node to what it depends on. Dependencies on nodes that are not in the
//! graph are ignored here (callers that care report them themselves, with a place in a file).

use std::collections::{BTreeMap, BTreeSet};

/// One task of a plan. `A` is the plan's own description of the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<A> {
    pub id: String,
    pub deps: Vec<String>,
    /// Tasks of one pool share a concurrency limit.
    pub pool: Option<&'static str>,
    pub action: A,
}

/// Node -> the nodes it depends on.
pub type Graph<'a> = BTreeMap<&'a str, Vec<&'a str>>;

/// Builds a graph from anything with an id and dependencies.
pub fn of<'a, T: 'a, D: AsRef<str> + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    id: impl Fn(&'a T) -> &'a str,
    deps: impl Fn(&'a T) -> &'a [D],
) -> Graph<'a> {
    items
        .into_iter()
        .map(|t| (id(t), deps(t).iter().map(AsRef::as_ref).collect()))
        .collect()
}

/// Checks a task graph: ids unique, dependencies known and acyclic (a plan that fails this
/// is a bug in its planner).
pub fn validate<A>(nodes: &[Node<A>]) -> anyhow::Result<()> {
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    anyhow::ensure!(ids.len() == nodes.len(), "plan has duplicate task ids");
    for n in nodes {
        for d in &n.deps {
            anyhow::ensure!(
                ids.contains(d.as_str()),
                "task {} needs unknown task {d}",
                n.id
            );
        }
    }
    let g = of(nodes, |n| n.id.as_str(), |n| n.deps.as_slice());
    match cycle(&g) {
        Some(c) => anyhow::bail!("plan has a dependency cycle: {}", c.join(" -> ")),
        None => Ok(()),
    }
}

/// A cycle as the names around it (first == last), if there is one; the first found in name
/// order, so the message is stable.
pub fn cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        g: &Graph<'a>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut c: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            None => {}
        }
        marks.insert(n, Mark::Active);
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if g.contains_key(d) {
                if let Some(c) = visit(d, g, marks, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut marks, &mut Vec::new()))
}

/// `subset` ordered so that each node comes after what it depends on (ties by name).
/// Dependencies outside `subset` are ignored. `Err` holds a cycle.
pub fn order(g: &Graph, subset: &BTreeSet<&str>) -> Result<Vec<String>, Vec<String>> {
    let mut out: Vec<&str> = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < subset.len() {
        let next = subset.iter().find(|n| {
            !done.contains(*n)
                && g.get(*n)
                    .into_iter()
                    .flatten()
                    .all(|d| !subset.contains(d) || done.contains(d))
        });
        match next {
            Some(n) => {
                done.insert(n);
                out.push(n);
            }
            None => {
                let sub: Graph = subset
                    .iter()
                    .map(|n| {
                        let deps = g.get(n).cloned().unwrap_or_default();
                        (
                            *n,
                            deps.into_iter().filter(|d| subset.contains(d)).collect(),
                        )
                    })
                    .collect();
                return Err(cycle(&sub).unwrap_or_default());
            }
        }
    }
    Ok(out.into_iter().map(str::to_string).collect())
}

/// Everything `start` depends on, directly or not (without `start` itself).
pub fn closure<'a>(g: &Graph<'a>, start: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&'a str> = g.get(start).cloned().unwrap_or_default();
    while let Some(n) = todo.pop() {
        if n == start || !g.contains_key(n) || !seen.insert(n) {
            continue;
        }
        todo.extend(g.get(n).into_iter().flatten().copied());
    }
    seen
}

/// The chain with the largest summed `weight` (nodes without a weight are not part of any
/// chain), in dependency order, and that sum. For a run report: the critical path.
pub fn longest_path<W>(g: &Graph, weight: impl Fn(&str) -> Option<W>) -> (Vec<String>, W)
where
    W: Copy + Default + PartialOrd + std::ops::Add<Output = W>,
{
    let all: BTreeSet<&str> = g.keys().copied().collect();
    let Ok(ordered) = order(g, &all) else {
        return (Vec::new(), W::default());
    };
    let mut best: BTreeMap<String, (W, Option<String>)> = BTreeMap::new();
    for n in &ordered {
        let Some(w) = weight(n) else { continue };
        let prev = g
            .get(n.as_str())
            .into_iter()
            .flatten()
            .filter_map(|d| best.get(*d).map(|(l, _)| (*l, d.to_string())))
            .fold(None::<(W, String)>, |acc, (l, d)| match acc {
                Some((a, _)) if a >= l => acc,
                _ => Some((l, d)),
            });
        let total = prev.as_ref().map_or(W::default(), |p| p.0) + w;
        best.insert(n.clone(), (total, prev.map(|p| p.1)));
    }
    let Some((end, (total, _))) = best.iter().fold(
        None::<(&String, &(W, Option<String>))>,
        |acc, (k, v)| match acc {
            Some((_, a)) if a.0 >= v.0 => acc,
            _ => Some((k, v)),
        },
    ) else {
        return (Vec::new(), W::default());
    };
    let mut path = vec![end.clone()];
    while let Some((_, Some(prev))) = best.get(path.last().unwrap_or(end)) {
        path.push(prev.clone());
    }
    path.reverse();
    (path, *total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g<'a>(edges: &[(&'a str, &[&'a str])]) -> Graph<'a> {
        edges.iter().map(|(n, d)| (*n, d.to_vec())).collect()
    }

    #[test]
    fn cycles_are_named_around() {
        let x = g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(cycle(&x).unwrap(), ["a", "b", "c", "a"]);
        assert_eq!(cycle(&g(&[("a", &["a"])])).unwrap(), ["a", "a"]);
        assert_eq!(cycle(&g(&[("a", &["b", "zz"]), ("b", &[])])), None);
    }

    #[test]
    fn order_puts_dependencies_first() {
        let x = g(&[
            ("ds", &["migrations", "redis"]),
            ("migrations", &["postgres"]),
            ("postgres", &[]),
            ("redis", &[]),
        ]);
        let all: BTreeSet<&str> = x.keys().copied().collect();
        assert_eq!(
            order(&x, &all).unwrap(),
            ["postgres", "migrations", "redis", "ds"]
        );
        let sub: BTreeSet<&str> = ["ds", "redis"].into();
        assert_eq!(order(&x, &sub).unwrap(), ["redis", "ds"]);
        let c = g(&[("a", &["b"]), ("b", &["a"])]);
        assert_eq!(order(&c, &["a", "b"].into()).unwrap_err(), ["a", "b", "a"]);
    }

    #[test]
    fn closure_follows_every_level() {
        let x = g(&[("a", &["b"]), ("b", &["c", "a"]), ("c", &[]), ("d", &[])]);
        assert_eq!(closure(&x, "a"), ["b", "c"].into());
        assert!(closure(&x, "nope").is_empty());
    }

    #[test]
    fn longest_path_sums_weights() {
        let x = g(&[
            ("pg", &[]),
            ("redis", &[]),
            ("mig", &["pg"]),
            ("ds", &["mig", "redis"]),
        ]);
        let w = |n: &str| match n {
            "pg" => Some(3u64),
            "redis" => Some(1),
            "mig" => Some(2),
            "ds" => Some(1),
            _ => None,
        };
        assert_eq!(
            longest_path(&x, w),
            (vec!["pg".into(), "mig".into(), "ds".into()], 6)
        );
        let unweighted = |n: &str| (n != "mig").then_some(1u64);
        assert_eq!(longest_path(&x, unweighted).1, 1 + 1);
    }
}
