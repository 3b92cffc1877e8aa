//! The seeds' way of bringing a stack up (DD-TEST-002's sequential script), for comparison on
//! the same images in the same bench: PostgreSQL, `pg_isready` polled every second, the
//! migrations, Redis, `PING` polled every second, DataStorage, its health polled every second.
//! Containers carry a bench run's labels and are removed by them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{names, Config, PortRef, Source, TierName};
use crate::host::engine::ContainerSpec;
use crate::host::tools::Engine;
use crate::plan::labels::RunLabels;
use crate::plan::stack::{self, Site};

const POLL: Duration = Duration::from_secs(1);

/// Brings `consumer`'s integration stack up the seeds' way with `datastorage_image` prebuilt;
/// returns the time it took. Everything is removed afterwards.
pub fn run(
    config: &Config,
    engine: &Engine,
    consumer: &str,
    datastorage_image: &str,
) -> Result<Duration> {
    let labels = RunLabels {
        owner: crate::plan::facts::sanitize_user(&crate::host::facts::login_name()),
        run: crate::host::facts::random_id(),
        created: crate::host::facts::unix_now(),
        consumer: consumer.to_string(),
        tier: "bench",
        pid: std::process::id(),
    };
    let t = Instant::now();
    let result = up(config, engine, consumer, datastorage_image, &labels);
    let took = t.elapsed();
    crate::host::removal::remove_run(engine, &labels.run, false)?;
    result.map(|_| took)
}

fn up(
    config: &Config,
    engine: &Engine,
    consumer: &str,
    ds_image: &str,
    l: &RunLabels,
) -> Result<()> {
    let stack = config.stack(consumer, TierName::Integration)?;
    let ports = &config
        .consumer(consumer)?
        .integration
        .as_ref()
        .context("no integration tier")?
        .ports;
    let network = names::network_name(consumer);
    engine.create_network(&network, &l.for_service("network"))?;
    let start = |name: &str, args: Vec<String>| -> Result<String> {
        let c = stack
            .get(name)
            .with_context(|| format!("{name} is not in the stack"))?;
        let image = match &c.source {
            Source::Image { image } => config.images[image].resolve(&|k| std::env::var(k).ok()),
            _ => ds_image.to_string(),
        };
        let container = names::container_name(consumer, name);
        let publish = ports
            .iter()
            .filter(|(pr, _)| pr.component == name)
            .filter_map(|(pr, h)| Some((*h, c.internal_port(pr.port.as_deref())?)))
            .collect();
        engine.run_container(&ContainerSpec {
            name: container.clone(),
            image,
            network: network.clone(),
            labels: l.for_service(name),
            env: stack::env(config, &stack, c, Site::Network { consumer })?,
            publish,
            args,
            ..ContainerSpec::default()
        })?;
        Ok(container)
    };
    let pg = start("postgres", Vec::new())?;
    let user = config.postgres.user.clone();
    poll("pg_isready", || {
        engine
            .exec(&pg, &["pg_isready".into(), "-U".into(), user.clone()], &[])
            .output()
            .is_ok_and(|o| o.success())
    })?;
    // The script ran the migrations once PostgreSQL looked ready, and again a second later if
    // that was initdb's temporary server.
    let mut migrated = false;
    for attempt in 0..5 {
        let job = start("migrations", vec!["migrate".into()])?;
        let code = engine.wait_exit(&job, Duration::from_secs(60))?;
        let rm = crate::host::removal::remove(
            engine,
            &crate::plan::labels::Filter::run(&l.run)
                .and(crate::plan::labels::SERVICE, "migrations"),
            false,
        );
        rm?;
        if code == 0 {
            migrated = true;
            break;
        }
        if attempt < 4 {
            std::thread::sleep(POLL);
        }
    }
    if !migrated {
        bail!("the seeds' way: migrations failed five times");
    }
    let redis = start("redis", Vec::new())?;
    poll("redis PING", || {
        engine
            .exec(&redis, &["redis-cli".into(), "ping".into()], &[])
            .read()
            .is_ok_and(|o| o.contains("PONG"))
    })?;
    start("datastorage", Vec::new())?;
    let port = *ports
        .get(&PortRef {
            component: "datastorage".into(),
            port: None,
        })
        .context("no host port for datastorage")?;
    poll("datastorage health", || {
        crate::host::ready::http_get(port, "/readyz", Duration::from_secs(1))
            .is_ok_and(|(s, _)| s == 200)
    })
}

/// The script's wait: check, sleep a second, for up to a minute.
fn poll(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..60 {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    bail!("the seeds' way: {what} did not answer within a minute")
}
