//! `cargo xtask ports`: the port allocation table.

use anyhow::Result;

use crate::config::{names, Config, PortRef, Stack, TierName};

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub consumer: String,
    pub tier: &'static str,
    pub port: PortRef,
    pub host_port: u16,
    pub node_port: Option<u16>,
    pub purpose: String,
}

/// Every host port of the file, sorted by consumer, tier, port; internal ports as each
/// consumer's stack runs them (its `override` included).
pub fn rows(config: &Config) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for c in config.consumers.values() {
        if let Some(t) = &c.integration {
            let stack = config.stack(&c.name, TierName::Integration)?;
            for (pr, &host) in &t.ports {
                let internal = internal(&stack, pr);
                let container = names::container_name(&c.name, &pr.component);
                rows.push(Row {
                    consumer: c.name.clone(),
                    tier: "integration",
                    port: pr.clone(),
                    host_port: host,
                    node_port: None,
                    purpose: format!("localhost:{host} -> container {container}:{internal}"),
                });
            }
            for (name, &host) in &t.own_ports {
                rows.push(Row {
                    consumer: c.name.clone(),
                    tier: "integration",
                    port: PortRef {
                        component: c.name.clone(),
                        port: Some(name.clone()),
                    },
                    host_port: host,
                    node_port: None,
                    purpose: format!("localhost:{host}: {}'s own in-process port", c.name),
                });
            }
        }
        if let Some(t) = &c.e2e {
            let stack = config.stack(&c.name, TierName::E2e)?;
            for (pr, np) in &t.ports {
                let internal = internal(&stack, pr);
                rows.push(Row {
                    consumer: c.name.clone(),
                    tier: "e2e",
                    port: pr.clone(),
                    host_port: np.host_port,
                    node_port: Some(np.node_port),
                    purpose: format!(
                        "localhost:{} -> kind node :{} -> service {}:{internal}",
                        np.host_port, np.node_port, pr.component
                    ),
                });
            }
        }
    }
    Ok(rows)
}

fn internal(stack: &Stack, pr: &PortRef) -> String {
    stack
        .get(&pr.component)
        .and_then(|c| c.internal_port(pr.port.as_deref()))
        .map_or_else(|| "?".to_string(), |p| p.to_string())
}

pub fn render(rows: &[Row]) -> String {
    let header = [
        "CONSUMER",
        "TIER",
        "COMPONENT",
        "HOST PORT",
        "NODEPORT",
        "PURPOSE",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.consumer.clone(),
                r.tier.to_string(),
                r.port.to_string(),
                r.host_port.to_string(),
                r.node_port.map_or("-".to_string(), |p| p.to_string()),
                r.purpose.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// Who shares a port: a NodePort used in several consumers' clusters (allowed: each E2E run has
/// its own cluster, or its own namespace without NodePorts in a kept one), and that no host port
/// is shared (`check` refuses a shared one, so a config that loads has none).
pub fn sharing(rows: &[Row]) -> String {
    let mut by_node: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for r in rows {
        if let Some(n) = r.node_port {
            by_node
                .entry(n)
                .or_default()
                .push(format!("{} {}", r.consumer, r.port));
        }
    }
    let mut out = String::new();
    for (port, users) in by_node.iter().filter(|(_, u)| u.len() > 1) {
        out.push_str(&format!(
            "NodePort {port} shared by {} (allowed: separate clusters)\n",
            users.join(", ")
        ));
    }
    let mut hosts: Vec<u16> = rows.iter().map(|r| r.host_port).collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.len() == rows.len() {
        out.push_str(&format!(
            "host ports: {} claims, none shared (`cargo xtask check` refuses a shared one)\n",
            rows.len()
        ));
    }
    out
}

pub fn run(config: &Config) -> Result<()> {
    let rows = rows(config)?;
    print!("{}\n{}", render(&rows), sharing(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(consumer: &str, component: &str, host_port: u16, node_port: Option<u16>) -> Row {
        Row {
            consumer: consumer.into(),
            tier: "e2e",
            port: PortRef {
                component: component.into(),
                port: None,
            },
            host_port,
            node_port,
            purpose: String::new(),
        }
    }

    #[test]
    fn shared_node_ports_are_named_and_host_ports_are_not_shared() {
        let rows = [
            row("notification", "datastorage", 28121, Some(30081)),
            row("datastorage", "datastorage", 28100, Some(30081)),
            row("gateway", "gateway", 28110, Some(30082)),
        ];
        let out = sharing(&rows);
        assert!(out.contains(
            "NodePort 30081 shared by notification datastorage, datastorage datastorage (allowed: separate clusters)"
        ), "{out}");
        assert!(!out.contains("30082"), "{out}");
        assert!(out.contains("host ports: 3 claims, none shared"), "{out}");
        let mut twice = rows.to_vec();
        twice[2].host_port = 28100;
        assert!(!sharing(&twice).contains("none shared"));
    }
}
