//! `doctor`'s smoke test of what runs need from the engine, for real: a labelled network, a
//! container on it reached by name from another container, a published port reached from the
//! host, and an image build. Each failing piece is named with the package that usually fixes
//! it. Everything it creates carries a run label of its own and is removed through the normal
//! label-filtered removal, also when a piece fails.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use crate::host::engine::{BuildSpec, ContainerSpec};
use crate::host::packages::{self, Package};
use crate::host::ready::Probe;
use crate::host::tools::Engine;
use crate::plan::labels::RunLabels;

/// One piece of the smoke test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: &'static str,
    /// `Ok(detail)` or `Err(why)`.
    pub result: std::result::Result<String, String>,
    /// The package that usually fixes a failure of this piece.
    pub fix: Option<Package>,
}

/// The images the smoke test uses: a Redis image (a server to reach) and a base to build on.
pub struct Images {
    pub redis: String,
    pub base: String,
}

/// Runs every piece (a failed one skips those that depend on it) and removes what it made.
pub fn run(engine: &Engine, images: &Images, scratch: &std::path::Path) -> Vec<Check> {
    let labels = RunLabels {
        owner: crate::plan::facts::sanitize_user(&crate::host::facts::login_name()),
        run: crate::host::facts::random_id(),
        created: crate::host::facts::unix_now(),
        consumer: "doctor".into(),
        tier: "doctor",
        pid: std::process::id(),
    };
    let checks = pieces(engine, images, scratch, &labels);
    let _ = crate::host::removal::remove_run(engine, &labels.run, false);
    checks
}

fn pieces(
    engine: &Engine,
    images: &Images,
    scratch: &std::path::Path,
    l: &RunLabels,
) -> Vec<Check> {
    let net = format!("xtask-doctor-{}", l.run);
    let mut out = vec![check("network", Some(network_fix(engine)), || {
        engine.create_network(&net, &l.for_service("network"))?;
        Ok(net.clone())
    })];
    if out[0].result.is_ok() {
        out.extend(reach(engine, images, &net, l));
    }
    out.push(check("image build", None, || {
        build(engine, images, scratch, l)
    }));
    out
}

/// A server container reached by name from another container, and from the host by its port.
fn reach(engine: &Engine, images: &Images, net: &str, l: &RunLabels) -> Vec<Check> {
    let server = format!("{net}-server");
    let port = free_port().unwrap_or(16999);
    let started = check("container", None, || {
        engine.run_container(&ContainerSpec {
            name: server.clone(),
            image: images.redis.clone(),
            network: net.to_string(),
            labels: l.for_service("doctor"),
            env: BTreeMap::new(),
            publish: vec![(port, 6379)],
            ..ContainerSpec::default()
        })?;
        // Listening before anyone connects: a refused connection must mean the network.
        let ping = ["redis-cli", "ping"].map(String::from);
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while !engine
            .exec(&server, &ping, &[])
            .timeout(Duration::from_secs(10))
            .read()
            .is_ok_and(|o| o.contains("PONG"))
        {
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "{server} did not answer `redis-cli ping` within 20 s: {}",
                engine.logs_tail(&server, 5)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(format!("{server} from {}, answering", images.redis))
    });
    if started.result.is_err() {
        return vec![started];
    }
    let by_name = check("name resolution", Some(packages::AARDVARK), || {
        let client = format!("{net}-client");
        let spec = ContainerSpec {
            name: client.clone(),
            image: images.redis.clone(),
            network: net.to_string(),
            labels: l.for_service("doctor"),
            args: ["redis-cli", "-h", &server, "ping"]
                .map(String::from)
                .to_vec(),
            ..ContainerSpec::default()
        };
        engine.run_container(&spec)?;
        let code = engine.wait_exit(&client, Duration::from_secs(30))?;
        let said = engine.logs_tail(&client, 5);
        anyhow::ensure!(
            code == 0 && said.contains("PONG"),
            "{client} could not reach {server} by name: {said}"
        );
        Ok(format!("{client} reached {server}:6379 by name"))
    });
    let published = check("published port", Some(packages::IPTABLES), || {
        let probe = Probe::Redis { port };
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match crate::host::ready::once(&probe, engine) {
                Ok(()) => return Ok(format!("localhost:{port} answered PONG")),
                Err(e) if std::time::Instant::now() > until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    vec![started, by_name, published]
}

fn build(
    engine: &Engine,
    images: &Images,
    scratch: &std::path::Path,
    l: &RunLabels,
) -> Result<String> {
    let ctx = scratch.join(format!("doctor-{}", l.run));
    std::fs::create_dir_all(&ctx)?;
    let dockerfile = ctx.join("Dockerfile");
    std::fs::write(&dockerfile, "ARG BASE\nFROM ${BASE}\nRUN true\n")?;
    let reference = format!("localhost/xtask-doctor:{}", l.run);
    let spec = BuildSpec {
        reference: reference.clone(),
        dockerfile,
        context: ctx.clone(),
        labels: l.for_service("doctor"),
        build_args: [("BASE".to_string(), images.base.clone())].into(),
        tags: Vec::new(),
    };
    let built = engine.build_cmd(&spec).run();
    let _ = std::fs::remove_dir_all(&ctx);
    built?;
    Ok(format!("{reference} built on {}", images.base))
}

/// netavark fails with "No such file or directory" when iptables is missing.
fn network_fix(engine: &Engine) -> Package {
    if engine.is_podman() && crate::exec::process::find_in_path("iptables", None).is_none() {
        packages::IPTABLES
    } else {
        packages::NETAVARK
    }
}

fn check(what: &'static str, fix: Option<Package>, f: impl FnOnce() -> Result<String>) -> Check {
    let result = f().map_err(|e| {
        let e = format!("{e:#}");
        e.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    });
    Check { what, result, fix }
}

fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    l.local_addr().ok().map(|a| a.port())
}

/// The smoke test's lines for doctor.
pub fn report(checks: &[Check], os: crate::host::tools::OsFamily) -> String {
    let mut out = String::new();
    for c in checks {
        match &c.result {
            Ok(detail) => out.push_str(&format!("  {:<16} ok      {detail}\n", c.what)),
            Err(why) => {
                out.push_str(&format!("  {:<16} FAILED  {why}\n", c.what));
                if let Some(p) = c.fix {
                    out.push_str(&format!(
                        "  {:<16}         usually fixed by package {} ({}): {}\n",
                        "",
                        p.apt,
                        p.why,
                        packages::install_command(&[p], os, packages::is_root())
                    ));
                }
            }
        }
    }
    out
}
