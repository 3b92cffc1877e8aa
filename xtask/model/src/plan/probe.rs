//! Readiness checks as data: what "ready" means for one container, resolved to concrete ports
//! and names from a component's `ready` setting. `host::ready` runs them.

use anyhow::{Context, Result};

use crate::config::{Postgres, Ready};

/// One check, resolved to concrete ports and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Sql {
        container: String,
        pg: Postgres,
        query: String,
        host_port: Option<u16>,
    },
    Postgres {
        port: u16,
        user: String,
        database: String,
    },
    Redis {
        port: u16,
    },
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    Exec {
        container: String,
        argv: Vec<String>,
    },
}

impl Probe {
    /// The probe for a component's `ready` setting. `host_port` finds published ports.
    pub fn for_component(
        ready: &Ready,
        container: &str,
        pg: &Postgres,
        host_port: &dyn Fn(Option<&str>) -> Option<u16>,
    ) -> Result<Option<Probe>> {
        let need = |p: Option<&str>| {
            host_port(p).with_context(|| {
                format!(
                    "{container}: its readiness check needs a published host port ({})",
                    p.unwrap_or("main")
                )
            })
        };
        Ok(Some(match ready {
            Ready::Sql { query } => Probe::Sql {
                container: container.to_string(),
                pg: pg.clone(),
                query: query.clone(),
                host_port: host_port(None),
            },
            Ready::Postgres => Probe::Postgres {
                port: need(None)?,
                user: pg.user.clone(),
                database: pg.database.clone(),
            },
            Ready::Redis => Probe::Redis { port: need(None)? },
            Ready::Http { path, port } => Probe::Http {
                port: need(port.as_deref())?,
                path: path.clone(),
            },
            Ready::Tcp { port } => Probe::Tcp {
                port: need(port.as_deref())?,
            },
            Ready::Exec { command } => Probe::Exec {
                container: container.to_string(),
                argv: command.clone(),
            },
            Ready::Exit => return Ok(None),
        }))
    }

    /// Whether the check runs in this process (a socket), not as a process in the container:
    /// cheap enough to poll often.
    pub fn from_host(&self) -> bool {
        !matches!(self, Probe::Sql { .. } | Probe::Exec { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Probe::Sql { query, .. } => format!("SQL `{query}`"),
            Probe::Postgres { port, .. } => {
                format!("PostgreSQL accepting connections on localhost:{port}")
            }
            Probe::Redis { port } => format!("Redis PING on localhost:{port}"),
            Probe::Http { port, path } => format!("GET http://localhost:{port}{path}"),
            Probe::Tcp { port } => format!("TCP localhost:{port}"),
            Probe::Exec { argv, .. } => format!("exec `{}`", argv.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_need_published_ports() {
        let pg = Postgres {
            user: "u".into(),
            password: "p".into(),
            database: "d".into(),
        };
        let none = |_: Option<&str>| None;
        let err = Probe::for_component(&Ready::Redis, "c_redis_test", &pg, &none).unwrap_err();
        assert!(
            err.to_string().contains("needs a published host port"),
            "{err}"
        );
        let sql = Probe::for_component(
            &Ready::Sql {
                query: "SELECT 1".into(),
            },
            "c",
            &pg,
            &none,
        )
        .unwrap();
        assert!(matches!(
            sql,
            Some(Probe::Sql {
                host_port: None,
                ..
            })
        ));
        assert_eq!(
            Probe::for_component(&Ready::Exit, "c", &pg, &none).unwrap(),
            None
        );
    }
}
