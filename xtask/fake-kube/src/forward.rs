//! `kubectl port-forward svc/NAME [LOCAL]:PORT`: like kubectl, one pod the Service selects is
//! chosen at the start (a Ready one first), and TCP connections to the local port are relayed to
//! that pod's container address on its namespace network (reachable from the host with rootful
//! podman) until the process is killed, or the pod's container is gone: then it fails with
//! `error: lost connection to pod`, as kubectl does, and must be started again.

use crate::pods::{self, Observed};
use crate::state::Cluster;
use crate::{podman, Fail, Res};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The Service's port named or numbered `remote`, as the pod's port (`targetPort`).
fn target_port(
    c: &Cluster,
    ns: &str,
    svc: &str,
    remote: &str,
) -> Res<(u16, Vec<(String, String)>)> {
    let s = c.object(ns, "Service", svc).ok_or_else(|| {
        Fail(format!(
            "Error from server (NotFound): services \"{svc}\" not found"
        ))
    })?;
    let selector: Vec<(String, String)> = s["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    if selector.is_empty() {
        return Err(Fail(format!(
            "error: invalid service '{svc}': Service is defined without a selector"
        )));
    }
    let ports = s["spec"]["ports"].as_array().into_iter().flatten();
    let port = ports
        .into_iter()
        .find(|p| p["port"].as_u64() == remote.parse().ok() || p["name"] == remote)
        .and_then(|p| p["targetPort"].as_u64().or(p["port"].as_u64()))
        .ok_or_else(|| {
            Fail(format!(
                "error: Service {svc} does not have a service port {remote}"
            ))
        })?;
    Ok((port as u16, selector))
}

/// The pod to forward to: (name, podman container id, address), waiting up to `wait` for one.
fn pick(
    cluster: &str,
    ns: &str,
    svc: &str,
    remote: &str,
    wait: Duration,
) -> Res<(String, String, IpAddr, u16)> {
    let deadline = Instant::now() + wait;
    loop {
        let (c, seen) = pods::observe(cluster, true)?;
        let (port, selector) = target_port(&c, ns, svc, remote)?;
        let mut found: Vec<Observed> = seen
            .into_iter()
            .filter(|o| {
                o.seen.pod.ns == ns
                    && selector
                        .iter()
                        .all(|(k, v)| o.seen.pod.labels.get(k) == Some(v))
            })
            .collect();
        found.sort_by_key(|o| (!o.status.ready, o.status.phase != "Running"));
        if let Some(o) = found.into_iter().next() {
            let x = o
                .seen
                .container
                .as_ref()
                .filter(|_| o.status.phase == "Running");
            let ip = x.and_then(|x| x.ip.as_deref()?.parse().ok());
            return match (x, ip) {
                (Some(x), Some(ip)) => Ok((o.seen.pod.name.clone(), x.id.clone(), ip, port)),
                _ => Err(Fail(format!(
                    "error: unable to forward port because pod is not running. Current status={}",
                    o.status.phase
                ))),
            };
        }
        if Instant::now() >= deadline {
            return Err(Fail("error: timed out waiting for the condition".into()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Copies both ways until both sides are done.
fn relay(client: TcpStream, to: SocketAddr, pod: &str, local: u16) {
    let port = to.port();
    let server = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("E portforward.go] \"Unhandled Error\" err=\"an error occurred forwarding {local} -> {port}: error forwarding port {port} to pod {pod}: {e}\"");
            return;
        }
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut s, mut c) = (server, client);
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}

pub fn run(
    cluster: &str,
    ns: &str,
    svc: &str,
    (local, remote): (u16, &str),
    address: &str,
    wait: Duration,
) -> Res<()> {
    let (pod, id, ip, port) = pick(cluster, ns, svc, remote, wait)?;
    let mut ips = Vec::new();
    for a in address.split(',') {
        match a {
            "localhost" => ips.extend([
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]),
            a => ips.push(
                a.parse()
                    .map_err(|_| Fail(format!("error: {a} is not a valid IP")))?,
            ),
        }
    }
    let mut listeners = Vec::new();
    let mut bound = local;
    for ip in ips {
        if let Ok(l) = TcpListener::bind((ip, bound)) {
            bound = l.local_addr().map_or(bound, |a| a.port());
            listeners.push(l);
        }
    }
    if listeners.is_empty() {
        return Err(Fail(format!(
            "error: unable to listen on any of the requested ports: [{{{local} {port}}}]"
        )));
    }
    let mut out = std::io::stdout();
    for l in listeners {
        let shown = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(out, "Forwarding from {shown} -> {port}").and_then(|()| out.flush());
        let pod = pod.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "Handling connection for {bound}").and_then(|()| out.flush());
                let pod = pod.clone();
                std::thread::spawn(move || relay(client, SocketAddr::new(ip, port), &pod, bound));
            }
        });
    }
    // The pod is gone when its container is (deleted, or replaced by a new pod).
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if !podman::output(&["container", "exists", &id])?.ok {
            return Err(Fail("error: lost connection to pod".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_and_selectors() {
        let mut c = Cluster::default();
        let svc = json!({"spec": {"selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432, "targetPort": 5432}, {"port": 80}]}});
        c.objects
            .insert(crate::state::key("ns", "Service", "db"), svc);
        c.objects.insert(
            crate::state::key("ns", "Service", "bare"),
            json!({"spec": {"ports": [{"port": 1}]}}),
        );
        let sel = vec![("app".to_string(), "db".to_string())];
        assert_eq!(
            target_port(&c, "ns", "db", "5432").unwrap(),
            (5432, sel.clone())
        );
        assert_eq!(target_port(&c, "ns", "db", "pg").unwrap().0, 5432);
        assert_eq!(target_port(&c, "ns", "db", "80").unwrap().0, 80);
        let err = |svc, p| target_port(&c, "ns", svc, p).unwrap_err().0;
        assert_eq!(
            err("db", "81"),
            "error: Service db does not have a service port 81"
        );
        assert_eq!(
            err("nope", "1"),
            "Error from server (NotFound): services \"nope\" not found"
        );
        assert!(err("bare", "1").ends_with("Service is defined without a selector"));
    }
}
