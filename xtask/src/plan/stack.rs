//! What a consumer's stack is made of, and how its parts find each other. Pure: used by the
//! integration and E2E planners alike.
//!
//! A URL depends on where it is used from ([`Site`]): inside the integration network a
//! component is `{consumer}_{component}_test:{internal port}`, in a cluster it is its Service
//! name and internal port, and from the host (the tests) it is `localhost:{host port}`
//! (design.md section 5). Every URL is rendered from the component's `url` template.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use crate::config::{placeholders, transitive_needs, Component, Config, PortRef};

/// Where a URL is used from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site<'a> {
    /// Another container on the consumer's integration network.
    Network { consumer: &'a str },
    /// Another pod in the E2E cluster.
    Cluster,
    /// The host, through these published ports.
    Host { ports: &'a BTreeMap<PortRef, u16> },
}

/// `{consumer}_{component}_test` (design.md section 4).
pub fn container_name(consumer: &str, component: &str) -> String {
    format!("{consumer}_{component}_test")
}

pub fn network_name(consumer: &str) -> String {
    format!("{consumer}_test_network")
}

/// The components of a consumer's stack in dependency order (each after what it needs):
/// for integration everything it needs, for E2E also the consumer itself.
pub fn members(config: &Config, consumer: &str, with_consumer: bool) -> Vec<String> {
    let mut set: BTreeSet<String> = transitive_needs(&config.components, consumer);
    if with_consumer {
        set.insert(consumer.to_string());
    }
    topo_order(config, &set)
}

/// `names` ordered so that every component comes after what it needs (ties by name).
pub fn topo_order(config: &Config, names: &BTreeSet<String>) -> Vec<String> {
    let g = crate::graph::of(
        config.components.values(),
        |c| c.name.as_str(),
        |c| c.needs.as_slice(),
    );
    let subset: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    // A cycle cannot pass validation; keep the names in name order rather than fail.
    crate::graph::order(&g, &subset).unwrap_or_else(|_| names.iter().cloned().collect())
}

/// The services whose images a stack runs (their own, or a job's), sorted.
pub fn image_services(config: &Config, members: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = members
        .iter()
        .filter_map(|m| config.components[m].image_service().map(str::to_string))
        .collect();
    set.into_iter().collect()
}

/// The URL of `component` (its `port`, or the main one) as seen from `site`.
pub fn url(
    config: &Config,
    component: &Component,
    port: Option<&str>,
    site: Site,
) -> Result<String> {
    let internal = component.internal_port(port).with_context(|| {
        format!(
            "`{}` has no port {}",
            component.name,
            port.unwrap_or("(main)")
        )
    })?;
    let (host, p) = match site {
        Site::Network { consumer } => (container_name(consumer, &component.name), internal),
        Site::Cluster => (component.name.clone(), internal),
        Site::Host { ports } => {
            let pr = PortRef {
                component: component.name.clone(),
                port: port.map(str::to_string),
            };
            let hp = ports
                .get(&pr)
                .with_context(|| format!("no host port for {pr}"))?;
            ("localhost".to_string(), *hp)
        }
    };
    render(&component.url, &|key| match key {
        "host" => Some(host.clone()),
        "port" => Some(p.to_string()),
        other => postgres_value(config, other),
    })
}

fn postgres_value(config: &Config, key: &str) -> Option<String> {
    match key {
        "postgres.user" => Some(config.postgres.user.clone()),
        "postgres.password" => Some(config.postgres.password.clone()),
        "postgres.database" => Some(config.postgres.database.clone()),
        _ => None,
    }
}

/// A component's environment with every `{...}` resolved for `site`.
pub fn env(config: &Config, component: &Component, site: Site) -> Result<BTreeMap<String, String>> {
    component
        .env
        .iter()
        .map(|(k, tmpl)| {
            let v = render(tmpl, &|key| {
                if let Some(v) = postgres_value(config, key) {
                    return Some(v);
                }
                let parts: Vec<&str> = key.split('.').collect();
                let (name, port) = match parts.as_slice() {
                    [c, "url"] => (*c, None),
                    [c, p, "url"] => (*c, Some(*p)),
                    _ => return None,
                };
                let c = config.components.get(name)?;
                url(config, c, port, site).ok()
            })
            .with_context(|| format!("{}.env.{k}", component.name))?;
            Ok((k.clone(), v))
        })
        .collect()
}

/// Replaces every `{key}` using `lookup`; an unknown key is an error naming it.
pub fn render(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = template.to_string();
    for key in placeholders(template) {
        let Some(v) = lookup(&key) else {
            bail!("cannot resolve `{{{key}}}` in `{template}`");
        };
        out = out.replacen(&format!("{{{key}}}"), &v, 1);
    }
    Ok(out)
}

/// What the tests get: `{COMPONENT}[_{PORT}]_URL` for every port published to the host.
pub fn test_env(
    config: &Config,
    ports: &BTreeMap<PortRef, u16>,
) -> Result<BTreeMap<String, String>> {
    ports
        .keys()
        .map(|pr| {
            let c = config.component(&pr.component)?;
            Ok((
                pr.env_var(),
                url(config, c, pr.port.as_deref(), Site::Host { ports })?,
            ))
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::path::Path;

    /// Facts of a run, fixed for tests.
    pub fn facts() -> crate::plan::facts::Facts {
        crate::plan::facts::Facts {
            user: "alice".into(),
            git7: "abc1234".into(),
            revision: "abc1234".into(),
            unix: 1_734_278_400,
            image_tag: None,
            run_id: "1884d074a1b2".into(),
        }
    }

    /// Reads a repository file under the `/repo` root that [`repo_config`] uses.
    pub fn read_repo(p: &Path) -> anyhow::Result<String> {
        let rel = p.strip_prefix("/repo").unwrap_or(p);
        Ok(std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel),
        )?)
    }

    /// The repository's own `infra.toml`, validated as if every referenced file existed.
    pub fn repo_config() -> Config {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        crate::config::parse(&file, Path::new("/repo"), &text, &|_| true).unwrap()
    }

    #[test]
    fn members_in_dependency_order() {
        let c = repo_config();
        assert_eq!(
            members(&c, "notification", false),
            ["postgres", "migrations", "redis", "datastorage"]
        );
        assert_eq!(
            members(&c, "datastorage", false),
            ["postgres", "migrations", "redis"]
        );
        let g = members(&c, "gateway", true);
        assert_eq!(g.last().unwrap(), "gateway");
        let pos = |n: &str| g.iter().position(|x| x == n).unwrap();
        assert!(pos("datastorage") < pos("notification"));
        assert_eq!(
            image_services(&c, &members(&c, "datastorage", false)),
            ["datastorage"]
        );
    }

    #[test]
    fn urls_depend_on_the_site() {
        let c = repo_config();
        let pg = &c.components["postgres"];
        let n = &c.consumers["notification"];
        assert_eq!(
            url(
                &c,
                pg,
                None,
                Site::Host {
                    ports: &n.integration
                }
            )
            .unwrap(),
            "postgres://slm_user:test_password@localhost:15440/action_history"
        );
        assert_eq!(
            url(
                &c,
                pg,
                None,
                Site::Network {
                    consumer: "notification"
                }
            )
            .unwrap(),
            "postgres://slm_user:test_password@notification_postgres_test:5432/action_history"
        );
        let ds = &c.components["datastorage"];
        assert_eq!(
            url(&c, ds, Some("metrics"), Site::Cluster).unwrap(),
            "http://datastorage:9090"
        );
        let e = env(
            &c,
            ds,
            Site::Network {
                consumer: "gateway",
            },
        )
        .unwrap();
        assert_eq!(e["REDIS_URL"], "redis://gateway_redis_test:6379");
        assert_eq!(
            e["DATABASE_URL"],
            "postgres://slm_user:test_password@gateway_postgres_test:5432/action_history"
        );
    }

    #[test]
    fn tests_get_every_published_port() {
        let c = repo_config();
        let e = test_env(&c, &c.consumers["gateway"].integration).unwrap();
        assert_eq!(e["DATASTORAGE_URL"], "http://localhost:18091");
        assert_eq!(e["DATASTORAGE_METRICS_URL"], "http://localhost:19091");
        assert_eq!(e["NOTIFICATION_URL"], "http://localhost:18092");
        assert_eq!(e["REDIS_URL"], "redis://localhost:16380");
        assert_eq!(e.len(), 5);
    }

    #[test]
    fn render_refuses_unknown_keys() {
        assert_eq!(render("a{x}b{x}", &|_| Some("1".into())).unwrap(), "a1b1");
        assert!(render("{nope}", &|_| None)
            .unwrap_err()
            .to_string()
            .contains("`{nope}`"));
    }
}
