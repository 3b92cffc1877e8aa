//! The labels every container, network, image and cluster of ours carries, and the filters
//! that select them. Removal code only ever sees resources selected through a [`Filter`].

use std::collections::BTreeMap;

pub const PREFIX: &str = "io.kubernaut.xtask";
/// The user who started the run.
pub const OWNER: &str = "io.kubernaut.xtask.owner";
/// The component (postgres, datastorage, ...) a resource belongs to.
pub const SERVICE: &str = "io.kubernaut.xtask.service";
/// The run id: eight hex digits.
pub const RUN: &str = "io.kubernaut.xtask.run";
/// Unix seconds when the run started.
pub const CREATED: &str = "io.kubernaut.xtask.created";
/// The consumer whose tests the run is for.
pub const CONSUMER: &str = "io.kubernaut.xtask.consumer";
/// `integration` or `e2e`.
pub const TIER: &str = "io.kubernaut.xtask.tier";
/// The process id of the run, to tell live runs from orphans.
pub const PID: &str = "io.kubernaut.xtask.pid";
/// On stand-in images (long-lived, not part of any run).
pub const STANDIN: &str = "io.kubernaut.xtask.standin";
/// On cached images (input-addressed, shared by the runs that use them, aged out by
/// `clean-images`): `1`.
pub const CACHE: &str = "io.kubernaut.xtask.cache";
/// The host a run's namespace or admission slot belongs to (its pid means something only
/// there).
pub const HOST: &str = "io.kubernaut.xtask.host";
/// Annotations of a run's namespace in a shared cluster: when it expires (unix seconds), and
/// the registry references it pushed (removed with it).
pub const EXPIRES: &str = "io.kubernaut.xtask/expires";
pub const PUSHED: &str = "io.kubernaut.xtask/pushed";

/// Where admission slots of shared clusters live.
pub const SYSTEM_NAMESPACE: &str = "xtask-system";

/// On a kept cluster's registry container and network: the cluster's name.
pub const CLUSTER: &str = "io.kubernaut.xtask.cluster";

/// The input key of a cached image.
pub const CACHE_KEY: &str = "io.kubernaut.xtask.cache-key";

/// Where cached images are named: `localhost/xtask-cache/<component>:<key>`; one image per key
/// carries that name at a time (a later build or commit of the key takes it over).
pub const CACHE_NAMES: &str = "localhost/xtask-cache/";

/// Labels an image must not inherit from what it is built on or committed from (a stand-in's
/// mark, a run's identity), blanked: an empty value is no value to our filters.
pub const NOT_INHERITED: [&str; 5] = [STANDIN, RUN, PID, CONSUMER, TIER];

/// The labels of a cached image: who made it and what for, the cache mark and key, and the
/// inherited ones blanked.
pub fn cache_labels(from: &BTreeMap<String, String>, key: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = NOT_INHERITED
        .iter()
        .map(|k| (k.to_string(), String::new()))
        .collect();
    for k in [OWNER, SERVICE, CREATED] {
        if let Some(v) = from.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    out.insert(CACHE.to_string(), "1".to_string());
    out.insert(CACHE_KEY.to_string(), key.to_string());
    out
}

/// The labels of one run; `for_service` adds the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLabels {
    pub owner: String,
    pub run: String,
    pub created: u64,
    pub consumer: String,
    pub tier: &'static str,
    pub pid: u32,
}

impl RunLabels {
    pub fn for_service(&self, service: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(OWNER.to_string(), self.owner.clone());
        m.insert(SERVICE.to_string(), service.to_string());
        m.insert(RUN.to_string(), self.run.clone());
        m.insert(CREATED.to_string(), self.created.to_string());
        m.insert(CONSUMER.to_string(), self.consumer.clone());
        m.insert(TIER.to_string(), self.tier.to_string());
        m.insert(PID.to_string(), self.pid.to_string());
        m
    }
}

/// A label selection that always includes at least one of our labels, so no listing (and so
/// no removal) can ever select a resource this tool did not create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<(String, Option<String>)>,
}

impl Filter {
    /// The registry container and network of a kept cluster.
    pub fn kept_cluster(name: &str) -> Filter {
        Filter {
            terms: vec![(CLUSTER.to_string(), Some(name.to_string()))],
        }
    }

    /// Every cached image.
    pub fn cache() -> Filter {
        Filter {
            terms: vec![(CACHE.to_string(), Some("1".to_string()))],
        }
    }

    /// The cached image with these inputs.
    pub fn cache_key(key: &str) -> Filter {
        Filter {
            terms: vec![
                (CACHE.to_string(), Some("1".to_string())),
                (CACHE_KEY.to_string(), Some(key.to_string())),
            ],
        }
    }

    /// Everything of one run.
    pub fn run(run: &str) -> Filter {
        Filter {
            terms: vec![(RUN.to_string(), Some(run.to_string()))],
        }
    }

    /// Every run resource of one owner.
    pub fn owner(owner: &str) -> Filter {
        Filter {
            terms: vec![
                (RUN.to_string(), None),
                (OWNER.to_string(), Some(owner.to_string())),
            ],
        }
    }

    /// Every run resource of anybody (still only ours: the run label must be there).
    pub fn any_run() -> Filter {
        Filter {
            terms: vec![(RUN.to_string(), None)],
        }
    }

    /// Stand-in images (long-lived, never part of a run).
    pub fn standins() -> Filter {
        Filter {
            terms: vec![(STANDIN.to_string(), None)],
        }
    }

    /// Narrows the filter by one more of our labels.
    pub fn and(mut self, key: &str, value: &str) -> Filter {
        debug_assert!(
            key.starts_with(PREFIX),
            "filters use our labels only: {key}"
        );
        self.terms.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// `--filter label=k=v` arguments for podman/docker `ps`, `images`, `network ls`.
    pub fn args(&self) -> Vec<String> {
        self.terms
            .iter()
            .flat_map(|(k, v)| {
                let term = match v {
                    Some(v) => format!("label={k}={v}"),
                    None => format!("label={k}"),
                };
                ["--filter".to_string(), term]
            })
            .collect()
    }

    /// The one term that narrows a listing most, as `--filter` arguments: podman 4.3's
    /// `images` ORs label filters (every term but a run's selects nearly every image, and
    /// each selected image is inspected), so images are listed by this term alone and the
    /// rest are checked by [`Filter::matches`].
    pub fn narrowest_args(&self) -> Vec<String> {
        let rank = |(k, v): &(String, Option<String>)| {
            let order = [
                RUN, CACHE_KEY, CLUSTER, CONSUMER, SERVICE, TIER, HOST, OWNER,
            ];
            let at = order.iter().position(|o| o == k).unwrap_or(order.len());
            (v.is_none(), at)
        };
        let Some(best) = self.terms.iter().min_by_key(|t| rank(t)) else {
            return Vec::new();
        };
        Filter {
            terms: vec![best.clone()],
        }
        .args()
    }

    /// Whether a resource's labels satisfy the filter (checked again after listing, so an
    /// engine that ignored a filter still cannot make us remove something foreign).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|(k, v)| match (labels.get(k), v) {
            (Some(have), Some(want)) => have == want,
            // An empty value is no value: images inherit their base's labels, and ours blank
            // the ones that must not carry over (a run's, a stand-in's).
            (Some(have), None) => !have.is_empty(),
            (None, _) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_listed_by_the_narrowest_term_alone() {
        let one = |f: &Filter| f.narrowest_args()[1].clone();
        let earlier = Filter::owner("alice")
            .and(CONSUMER, "notification")
            .and(TIER, "integration");
        assert_eq!(one(&earlier), format!("label={CONSUMER}=notification"));
        assert_eq!(earlier.narrowest_args().len(), 2);
        let run = Filter::run("abc").and(SERVICE, "postgres");
        assert_eq!(one(&run), format!("label={RUN}=abc"));
        assert_eq!(
            one(&Filter::cache_key("k1")),
            format!("label={CACHE_KEY}=k1")
        );
        // A term with a value before a bare key, whatever their order.
        let bare = Filter {
            terms: vec![(RUN.into(), None), (OWNER.into(), Some("bob".into()))],
        };
        assert_eq!(one(&bare), format!("label={OWNER}=bob"));
        assert!(Filter { terms: vec![] }.narrowest_args().is_empty());
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_filter_requires_one_of_our_labels() {
        for f in [
            Filter::run("ab12cd34"),
            Filter::owner("alice"),
            Filter::any_run(),
        ] {
            assert!(f
                .args()
                .iter()
                .any(|a| a.starts_with(&format!("label={PREFIX}"))));
            assert!(
                !f.matches(&BTreeMap::new()),
                "nothing unlabelled matches {f:?}"
            );
            assert!(!f.matches(&labels(&[("maintainer", "someone")])));
        }
    }

    #[test]
    fn owner_filter_excludes_other_owners() {
        let f = Filter::owner("alice");
        assert!(f.matches(&labels(&[(RUN, "1"), (OWNER, "alice")])));
        assert!(!f.matches(&labels(&[(RUN, "1"), (OWNER, "bob")])));
        assert!(
            !f.matches(&labels(&[(OWNER, "alice")])),
            "stand-ins have no run label"
        );
        assert_eq!(
            f.args(),
            vec![
                "--filter",
                "label=io.kubernaut.xtask.run",
                "--filter",
                "label=io.kubernaut.xtask.owner=alice"
            ]
        );
    }

    #[test]
    fn run_labels_carry_everything() {
        let l = RunLabels {
            owner: "alice".into(),
            run: "ab12cd34".into(),
            created: 5,
            consumer: "gateway".into(),
            tier: "e2e",
            pid: 42,
        };
        let m = l.for_service("redis");
        assert_eq!(m[SERVICE], "redis");
        assert_eq!(m[RUN], "ab12cd34");
        assert_eq!(m.len(), 7);
        assert!(Filter::run("ab12cd34").and(SERVICE, "redis").matches(&m));
    }
}
