//! Ready-made databases: a component with a `snapshot` (PostgreSQL) starts from a data image
//! made once per (its image's id, its environment and credentials, the content of the jobs'
//! `inputs` such as `migrations/`): initialised and with the `after` jobs applied, committed,
//! cached and labelled. Decided before planning, so the dry run shows the same choice: a hit
//! names the cached data image with the run's own reference and the jobs are verified by the
//! key instead of run; a miss runs the jobs and commits the image for the next run. A running
//! database is never shared: every run starts its own container from the image.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::config::{Component, Config, Stack};
use crate::exec::cache::{Cache, Inputs};
use crate::host::tools::Engine;

pub use crate::plan::Snapshot as Decision;

/// `localhost/xtask-cache/<component>-data:<key>`.
pub fn cache_ref(component: &str, key: &str) -> String {
    format!("{}{component}-data:{key}", crate::plan::labels::CACHE_NAMES)
}

/// The decision for every member of `stack` with a `snapshot` (`rebuild`: always a miss, a
/// new data image is made).
pub fn decide(
    config: &Config,
    stack: &Stack,
    engine: &Engine,
    cache: &Cache,
    rebuild: bool,
) -> Result<BTreeMap<String, Decision>> {
    let mut out = BTreeMap::new();
    for (c, inputs, d) in lookup(config, stack, engine, cache, rebuild)? {
        let why = if d.hit {
            String::new()
        } else if rebuild {
            "--rebuild".into()
        } else {
            match cache.latest(&format!("{}-data", c.name)) {
                Some(old) => {
                    let w = inputs.explain(&old, None);
                    if w.is_empty() {
                        "no cached data image".into()
                    } else {
                        w.join(", ")
                    }
                }
                None => "no earlier data image here".into(),
            }
        };
        cache.remember(&d.key, &inputs, &format!("{}-data", c.name))?;
        out.insert(c.name.clone(), Decision { why, ..d });
    }
    Ok(out)
}

/// E2E runs: only the data images already cached (a cluster's pod cannot be committed into
/// one). A member without one starts empty and its jobs run, as without a snapshot; the E2E
/// jobs still run against a data image and find their work done. Nothing is remembered.
pub fn cached(
    config: &Config,
    stack: &Stack,
    engine: &Engine,
    cache: &Cache,
    rebuild: bool,
) -> Result<BTreeMap<String, Decision>> {
    Ok(lookup(config, stack, engine, cache, rebuild)?
        .into_iter()
        .filter(|(_, _, d)| d.hit)
        .map(|(c, _, d)| (c.name.clone(), d))
        .collect())
}

/// Each member with a `snapshot`: its inputs, and whether its data image is cached.
fn lookup<'s>(
    config: &Config,
    stack: &'s Stack,
    engine: &Engine,
    cache: &Cache,
    rebuild: bool,
) -> Result<Vec<(&'s Component, Inputs, Decision)>> {
    let mut out = Vec::new();
    for c in stack.members.iter().filter(|c| c.snapshot.is_some()) {
        let inputs = inputs(config, c, engine, cache)?;
        let key = inputs.key();
        let cache_ref = cache_ref(&c.name, &key);
        let hit = !rebuild && engine.cached_image(&cache_ref, &key)?.is_some();
        let d = Decision {
            key,
            cache_ref,
            hit,
            why: String::new(),
        };
        out.push((c, inputs, d));
    }
    Ok(out)
}

/// What goes into a data image: the image it starts from (by id), the environment it runs
/// with (credentials included), the snapshot's environment, the jobs' arguments, and every
/// file of the `inputs`.
fn inputs(config: &Config, c: &Component, engine: &Engine, cache: &Cache) -> Result<Inputs> {
    let Some(snap) = &c.snapshot else {
        return Ok(Inputs::default());
    };
    let mut m = BTreeMap::new();
    if let crate::config::Source::Image { image } = &c.source {
        let reference = config.images[image].resolve(&|k| std::env::var(k).ok());
        let id = engine.image_id(&reference).with_context(|| {
            format!("{reference} is not in local storage (`cargo xtask doctor`)")
        })?;
        m.insert("base:image".into(), id);
    }
    let pg = &config.postgres;
    m.insert(
        "arg:postgres".into(),
        format!("{}:{}:{}", pg.user, pg.password, pg.database),
    );
    for (k, v) in c.env.iter().chain(&snap.env) {
        m.insert(format!("arg:env {k}"), v.clone());
    }
    for job in &snap.after {
        let args = config
            .component(job)
            .map(|j| j.args.join(" "))
            .unwrap_or_default();
        m.insert(format!("arg:job {job}"), args);
    }
    for input in &snap.inputs {
        let path = config.root.join(input);
        if path.is_dir() {
            for (k, v) in cache.tree(&path)? {
                m.insert(
                    format!("file:{}/{}", input.display(), &k["file:".len()..]),
                    v,
                );
            }
        } else {
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            m.insert(
                format!("file:{}", input.display()),
                cache.file(&path, &meta)?,
            );
        }
    }
    Ok(Inputs(m))
}
