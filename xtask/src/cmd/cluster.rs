//! `cargo xtask cluster up | down | status`: a kept kind cluster with a local registry (the
//! kind local-registry pattern: a registry container on the kind network, containerd told that
//! `localhost:<port>` is that container, the `local-registry-hosting` ConfigMap), for E2E runs
//! that share it (`cargo xtask e2e <consumer> --cluster <name>`). The record is written before
//! anything is created; the registry container and its network carry our labels.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::clusters::{self, Kept};
use crate::exec::process::find_in_path;
use crate::flags::{self, ClusterAction};
use crate::host::engine::ContainerSpec;
use crate::host::kube::{Kind, Kubectl};
use crate::host::shared;
use crate::host::tools::{self, Engine, Need, Tool};
use crate::plan::labels::{self, Filter};

pub fn run(config: &Config, args: &flags::Cluster) -> Result<()> {
    tools::require(&[Need::Tool(Tool::Kind), Need::Tool(Tool::Kubectl)])?;
    match &args.action {
        ClusterAction::Up {
            name,
            registry_port,
        } => up(config, name, *registry_port),
        ClusterAction::Down { name, force } => down(config, name, *force),
        ClusterAction::Status { name: Some(name) } => status(config, name),
        ClusterAction::Status { name: None } => {
            let all = clusters::all(&crate::exec::record::target_dir(&config.root));
            if all.is_empty() {
                println!("no kept cluster is recorded here; `cargo xtask cluster up` makes one");
            }
            for k in all {
                status(config, &k.name)?;
            }
            Ok(())
        }
    }
}

fn kind_and_kubectl(engine: &Engine, k: &Kept) -> Result<(Kind, Kubectl)> {
    let find = |n| find_in_path(n, None).context(n);
    let kind = Kind {
        program: find("kind")?,
        podman: engine.is_podman(),
    };
    let mut kubectl = Kubectl::new(find("kubectl")?, k.kubeconfig.clone());
    kubectl.context = Some(k.context.clone());
    Ok((kind, kubectl))
}

fn up(config: &Config, name: &str, port: Option<u16>) -> Result<()> {
    crate::config::names::check_cluster(name)?;
    let engine = crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?;
    let target = crate::exec::record::target_dir(&config.root);
    if let Some(k) = clusters::load(&target, name) {
        if up_already(&engine, &k)? {
            println!(
                "cluster {name} is up (registry {}); `cargo xtask cluster status --name {name}`",
                k.registry
            );
            return Ok(());
        }
        bail!("cluster {name} is recorded but not fully up; take it down with `cargo xtask cluster down --name {name} --force` and run `up` again");
    }
    let port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let owner = crate::plan::facts::sanitize_user(&crate::host::facts::login_name());
    let dir = clusters::dir(&target, name);
    let k = Kept {
        name: name.to_string(),
        registry: format!("localhost:{port}"),
        registry_port: port,
        registry_container: format!("{name}-registry"),
        network: format!("{name}-registry"),
        kubeconfig: dir.join("kubeconfig"),
        context: format!("kind-{name}"),
        owner: owner.clone(),
        created: crate::host::facts::unix_now(),
    };
    clusters::save(&target, &k)?;
    let mut l = std::collections::BTreeMap::new();
    l.insert(labels::OWNER.to_string(), owner);
    l.insert(labels::CLUSTER.to_string(), name.to_string());
    l.insert(labels::CREATED.to_string(), k.created.to_string());
    let registry_image = config
        .images
        .get("registry")
        .context("infra.toml has no [images.registry] (the kept cluster's registry)")?
        .resolve(&|v| std::env::var(v).ok());
    println!(
        "cluster {name}: registry {} on 127.0.0.1:{port}",
        k.registry_container
    );
    engine.create_network(&k.network, &l)?;
    engine.run_container(&ContainerSpec {
        name: k.registry_container.clone(),
        image: registry_image,
        network: k.network.clone(),
        labels: l.clone(),
        publish: vec![(port, 5000)],
        ..ContainerSpec::default()
    })?;
    let (kind, kubectl) = kind_and_kubectl(&engine, &k)?;
    let kind_config = crate::plan::render::kept_kind_config(name, &l, port, &k.registry_container);
    let config_path = dir.join("kind-config.yaml");
    std::fs::write(&config_path, kind_config)?;
    println!("cluster {name}: creating the kind cluster");
    kind.create(name, &config_path, &k.kubeconfig)
        .timeout(Duration::from_secs(600))
        .run()
        .context("creating the kind cluster")?;
    connect_registry(&engine, &k)?;
    kubectl
        .apply(&crate::plan::render::registry_hosting(port))
        .timeout(Duration::from_secs(60))
        .run()?;
    println!("cluster {name} is up: `cargo xtask e2e <consumer> --cluster {name}`; `cargo xtask cluster down --name {name}` removes it");
    Ok(())
}

/// kind's nodes reach the registry by name on the `kind` network (real kind; the fake pulls
/// from the host).
fn connect_registry(engine: &Engine, k: &Kept) -> Result<()> {
    let exists = engine
        .cmd()
        .args(["network", "inspect", "kind"])
        .output()
        .is_ok_and(|o| o.success());
    if exists {
        engine
            .cmd()
            .args(["network", "connect", "kind", &k.registry_container])
            .uninterruptible()
            .run()
            .context("connecting the registry to the kind network")?;
    }
    Ok(())
}

fn up_already(engine: &Engine, k: &Kept) -> Result<bool> {
    let registry_running = engine
        .containers(&Filter::kept_cluster(&k.name))?
        .iter()
        .any(|c| c.name == k.registry_container && c.running);
    Ok(registry_running && k.kubeconfig.exists())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn down(config: &Config, name: &str, force: bool) -> Result<()> {
    let engine = tools::require(&[Need::Engine])?.context("no container engine")?;
    let target = crate::exec::record::target_dir(&config.root);
    let Some(k) = clusters::load(&target, name) else {
        bail!(
            "no kept cluster {name} is recorded under {}",
            clusters::dir(&target, "").display()
        );
    };
    let (kind, kubectl) = kind_and_kubectl(&engine, &k)?;
    if k.kubeconfig.exists() {
        let here = crate::host::facts::hostname();
        let now = crate::host::facts::unix_now();
        let live: Vec<_> = shared::namespaces(&kubectl)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !n.dead(&here, now))
            .collect();
        if !live.is_empty() && !force {
            let names: Vec<&str> = live.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "runs are live in cluster {name} ({}); wait for them, or `--force`",
                names.join(", ")
            );
        }
        kind.delete(name, &k.kubeconfig)
            .timeout(Duration::from_secs(300))
            .run()
            .context("deleting the kind cluster")?;
    }
    let removed = crate::host::removal::remove(&engine, &Filter::kept_cluster(name), false)?;
    std::fs::remove_dir_all(clusters::dir(&target, name))?;
    println!("cluster {name} deleted; removed {removed}");
    Ok(())
}

fn status(config: &Config, name: &str) -> Result<()> {
    let engine = tools::require(&[Need::Engine])?.context("no container engine")?;
    let target = crate::exec::record::target_dir(&config.root);
    let Some(k) = clusters::load(&target, name) else {
        bail!("no kept cluster {name} is recorded here; `cargo xtask cluster up --name {name}` creates one");
    };
    let (_, kubectl) = kind_and_kubectl(&engine, &k)?;
    let registry = crate::host::ready::http_get(k.registry_port, "/v2/", Duration::from_secs(2))
        .map(|(s, _)| format!("answers ({s})"))
        .unwrap_or_else(|e| format!("DOES NOT ANSWER ({e:#})"));
    println!(
        "cluster {name} (owner {}, context {}, kubeconfig {})",
        k.owner,
        k.context,
        k.kubeconfig.display()
    );
    println!(
        "  registry {} on {}: {registry}",
        k.registry_container, k.registry
    );
    let here = crate::host::facts::hostname();
    let now = crate::host::facts::unix_now();
    let runs = shared::namespaces(&kubectl)?;
    println!("  runs: {}", runs.len());
    for r in &runs {
        let state = if r.dead(&here, now) {
            "dead or expired"
        } else {
            "live"
        };
        println!(
            "    {} consumer {} owner {} run {} host {} pid {} ({state})",
            r.name,
            r.label(labels::CONSUMER),
            r.label(labels::OWNER),
            r.label(labels::RUN),
            r.label(shared::HOST),
            r.label(labels::PID)
        );
    }
    let slots = shared::slots(&kubectl)?;
    println!("  admission slots held: {}", slots.len());
    Ok(())
}
