//! What a consumer's stack is made of, and how its parts find each other. Pure: used by the
//! integration and E2E planners alike.
//!
//! A URL depends on where it is used from ([`Site`]): inside the integration network a
//! component is `{consumer}_{component}_test:{internal port}`, in a cluster it is its Service
//! name and internal port, and from the host (the tests) it is `localhost:{host port}`
//! (design.md section 5). Every URL is rendered from the component's `url` template.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::config::names::container_name;
use crate::config::{placeholders, Component, Config, PortRef, Stack};

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

/// `{postgres.user}`, `{postgres.password}`, `{postgres.database}` filled in.
pub fn postgres_template(config: &Config, template: &str) -> Result<String> {
    render(template, &|k| postgres_value(config, k))
}

fn postgres_value(config: &Config, key: &str) -> Option<String> {
    match key {
        "postgres.user" => Some(config.postgres.user.clone()),
        "postgres.password" => Some(config.postgres.password.clone()),
        "postgres.database" => Some(config.postgres.database.clone()),
        _ => None,
    }
}

/// A member's environment with every `{...}` resolved for `site` (URLs of the other members
/// of its stack, as they run in it).
pub fn env(
    config: &Config,
    stack: &Stack,
    component: &Component,
    site: Site,
) -> Result<BTreeMap<String, String>> {
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
                let c = stack.get(name)?;
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
    stack: &Stack,
    ports: &BTreeMap<PortRef, u16>,
) -> Result<BTreeMap<String, String>> {
    ports
        .keys()
        .map(|pr| {
            let c = stack.get(&pr.component).with_context(|| {
                format!(
                    "`{}` is not part of the stack of {}",
                    pr.component, stack.consumer
                )
            })?;
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
    use crate::config::TierName;
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

    /// The repository's files, under the `/repo` root that [`repo_config`] uses.
    pub struct RepoFiles;

    impl crate::plan::render::Files for RepoFiles {
        fn read(&self, p: &Path) -> anyhow::Result<String> {
            read_repo(p)
        }
        fn list(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
            let rel = dir.strip_prefix("/repo").unwrap_or(dir);
            let real = crate::repo_root().join(rel);
            let mut names: Vec<String> = std::fs::read_dir(real)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            names.sort();
            Ok(names)
        }
    }

    /// The repository's files with templates edited by a closure (malformed-template tests).
    pub struct Edit<F>(pub F);

    impl<F: Fn(&Path) -> anyhow::Result<String>> crate::plan::render::Files for Edit<F> {
        fn read(&self, p: &Path) -> anyhow::Result<String> {
            (self.0)(p)
        }
        fn list(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
            crate::plan::render::Files::list(&RepoFiles, dir)
        }
    }

    /// Reads a repository file under the `/repo` root that [`repo_config`] uses.
    pub fn read_repo(p: &Path) -> anyhow::Result<String> {
        let rel = p.strip_prefix("/repo").unwrap_or(p);
        Ok(std::fs::read_to_string(crate::repo_root().join(rel))?)
    }

    /// What a path under the `/repo` root is in this checkout: a folder if it is one here, else
    /// a file (as if every referenced file existed).
    pub fn repo_path_kind(p: &Path) -> Option<crate::config::PathKind> {
        let rel = p.strip_prefix("/repo").unwrap_or(p);
        let here = crate::repo_root().join(rel);
        Some(if here.is_dir() {
            crate::config::PathKind::Dir
        } else {
            crate::config::PathKind::File
        })
    }

    /// The repository's own `infra.toml`, validated as if every referenced file existed.
    pub fn repo_config() -> Config {
        let file = crate::repo_root().join("infra.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        crate::config::parse(&file, Path::new("/repo"), &text, &repo_path_kind).unwrap()
    }

    /// PostgreSQL's data image, cached: its reference, and the snapshots a warm plan is given.
    pub fn postgres_data_hit() -> (
        &'static str,
        std::collections::BTreeMap<String, crate::plan::Snapshot>,
    ) {
        let data = "localhost/xtask-cache/postgres-data:0123456789abcdef";
        let hit = crate::plan::Snapshot {
            key: "0123456789abcdef".into(),
            cache_ref: data.into(),
            hit: true,
            why: String::new(),
        };
        (data, [("postgres".to_string(), hit)].into())
    }

    /// The resolved stack of a consumer's tier in the repository's file.
    pub fn repo_stack(c: &Config, consumer: &str, tier: TierName) -> Stack {
        c.stack(consumer, tier).unwrap()
    }

    #[test]
    fn members_in_dependency_order() {
        let c = repo_config();
        assert_eq!(
            repo_stack(&c, "notification", TierName::Integration).names(),
            ["postgres", "migrations", "redis", "datastorage"]
        );
        let ds = repo_stack(&c, "datastorage", TierName::Integration);
        assert_eq!(ds.names(), ["postgres", "migrations", "redis"]);
        let g = repo_stack(&c, "gateway", TierName::E2e).names();
        assert_eq!(g.last().unwrap(), "gateway");
        let pos = |n: &str| g.iter().position(|x| x == n).unwrap();
        assert!(pos("datastorage") < pos("notification"));
    }

    #[test]
    fn urls_depend_on_the_site() {
        let c = repo_config();
        let pg = &c.components["postgres"];
        let ports = &c.consumers["notification"]
            .integration
            .as_ref()
            .unwrap()
            .ports;
        assert_eq!(
            url(&c, pg, None, Site::Host { ports }).unwrap(),
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
        let stack = repo_stack(&c, "gateway", TierName::Integration);
        let site = Site::Network {
            consumer: "gateway",
        };
        let e = env(&c, &stack, stack.get("datastorage").unwrap(), site).unwrap();
        assert_eq!(e["REDIS_URL"], "redis://gateway_redis_test:6379");
        assert_eq!(
            e["DATABASE_URL"],
            "postgres://slm_user:test_password@gateway_postgres_test:5432/action_history"
        );
    }

    #[test]
    fn tests_get_every_published_port() {
        let c = repo_config();
        let stack = repo_stack(&c, "gateway", TierName::Integration);
        let ports = &c.consumers["gateway"].integration.as_ref().unwrap().ports;
        let e = test_env(&c, &stack, ports).unwrap();
        assert_eq!(e["DATASTORAGE_URL"], "http://localhost:18091");
        assert_eq!(e["DATASTORAGE_METRICS_URL"], "http://localhost:19091");
        assert_eq!(e["NOTIFICATION_URL"], "http://localhost:18092");
        assert_eq!(e["REDIS_URL"], "redis://localhost:16380");
        assert_eq!(e.len(), 5);
    }

    /// A consumer's `override` changes the URL the other members and the tests see.
    #[test]
    fn overrides_reach_urls_of_other_members() {
        let file = crate::repo_root().join("infra.toml");
        let text = std::fs::read_to_string(&file).unwrap().replace(
            "[consumers.gateway.e2e.ports]",
            "[consumers.gateway.integration.override.datastorage]\nport = 8181\n\n[consumers.gateway.e2e.ports]",
        );
        let c = crate::config::parse(&file, Path::new("/repo"), &text, &repo_path_kind).unwrap();
        let stack = repo_stack(&c, "gateway", TierName::Integration);
        let site = Site::Network {
            consumer: "gateway",
        };
        let e = env(&c, &stack, stack.get("notification").unwrap(), site).unwrap();
        assert_eq!(e["DATASTORAGE_URL"], "http://gateway_datastorage_test:8181");
        let other = repo_stack(&c, "notification", TierName::Integration);
        assert_eq!(other.get("datastorage").unwrap().port, Some(8080));
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
