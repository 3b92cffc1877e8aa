//! The images of one run, pure: the one reference per component (Phase 0: generated here once,
//! carried to build, load and deploy) and how each image is made.
//!
//! Rust services are compiled once on the host for every image of the run, then each image's
//! build context is a small folder holding its binary and the extra paths `infra.toml` lists;
//! a component with its own Dockerfile builds from its own context (no cargo); on E2E runs a
//! third-party image is re-tagged under the run's tag with our labels (`FROM` it), so that
//! everything the cluster runs is one of the run's references.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Component, Source, Stack};
use crate::plan::facts::rfc3339;
use crate::plan::specs::BuildSpec;
use crate::plan::Run;

/// How one image of the run is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Build {
    /// A Rust service: `binary` (from the run's one compile) and `extra` paths (relative to the
    /// root) are assembled into `spec.context`, then built.
    Rust {
        component: String,
        package: String,
        binary: String,
        extra: Vec<PathBuf>,
        spec: BuildSpec,
    },
    /// A Dockerfile that builds itself from its own context.
    Dockerfile { component: String, spec: BuildSpec },
    /// A third-party image under the run's tag, with our labels: `spec.dockerfile` is written
    /// with [`RETAG_DOCKERFILE`] first.
    Retag {
        component: String,
        base: String,
        spec: BuildSpec,
    },
}

/// The Dockerfile of a re-tagged third-party image (its labels come from `--label`).
pub const RETAG_DOCKERFILE: &str = "ARG BASE\nFROM ${BASE}\n";

impl Build {
    pub fn component(&self) -> &str {
        match self {
            Build::Rust { component, .. }
            | Build::Dockerfile { component, .. }
            | Build::Retag { component, .. } => component,
        }
    }

    pub fn spec(&self) -> &BuildSpec {
        match self {
            Build::Rust { spec, .. }
            | Build::Dockerfile { spec, .. }
            | Build::Retag { spec, .. } => spec,
        }
    }
}

/// Every image of a run: the reference each member runs, the builds, and the packages of the
/// one compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Member -> the image it runs (a job runs its service's).
    pub refs: BTreeMap<String, String>,
    pub builds: Vec<Build>,
    pub packages: Vec<String>,
}

/// Whether third-party images are used as they are (integration) or re-tagged (E2E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdParty {
    AsIs,
    Retag,
}

/// The images of `stack` for this run.
pub fn plan(run: &Run, stack: &Stack, third_party: ThirdParty) -> Result<Images> {
    let mut images = Images {
        refs: BTreeMap::new(),
        builds: Vec::new(),
        packages: Vec::new(),
    };
    for c in &stack.members {
        images
            .refs
            .insert(c.name.clone(), reference(run, c, third_party));
    }
    // What is built: each member's own image, and for a job its service's (which need not be
    // a member: DataStorage's migrations run in DataStorage's own integration stack).
    let mut owners: Vec<&Component> = Vec::new();
    for c in &stack.members {
        let owner = match &c.source {
            Source::Job { service } => run.config.component(service)?,
            _ => c,
        };
        if !owners.iter().any(|o| o.name == owner.name) {
            owners.push(owner);
        }
    }
    for owner in owners {
        let reference = reference(run, owner, third_party);
        if let Some(b) = build(run, stack, owner, &reference, third_party)? {
            if let Build::Rust { package, .. } = &b {
                images.packages.push(package.clone());
            }
            images.builds.push(b);
        }
        for c in stack.members.iter().filter(|c| c.is_job()) {
            if c.image_service() == Some(owner.name.as_str()) {
                images.refs.insert(c.name.clone(), reference.clone());
            }
        }
    }
    images.packages.sort();
    images.packages.dedup();
    Ok(images)
}

/// How `c`'s image is made under `reference`, if the run makes it.
fn build(
    run: &Run,
    stack: &Stack,
    c: &Component,
    reference: &str,
    third_party: ThirdParty,
) -> Result<Option<Build>> {
    let mut labels = run.labels(stack.tier.as_str()).for_service(&c.name);
    // Not a stand-in, even when built on one (an empty value is no value to our filters).
    labels.insert(crate::plan::labels::STANDIN.into(), String::new());
    let spec = |dockerfile: PathBuf, context: PathBuf| BuildSpec {
        reference: reference.to_string(),
        dockerfile,
        context,
        labels: labels.clone(),
        build_args: BTreeMap::new(),
        tags: Vec::new(),
    };
    let scratch = context_dir(run, &c.name);
    let root = &run.config.root;
    Ok(Some(match &c.source {
        Source::Job { .. } => return Ok(None),
        Source::Image { .. } if third_party == ThirdParty::AsIs => return Ok(None),
        Source::Image { image } => {
            // A cached data image (initialised, its jobs applied) where there is one.
            let base = match run.snapshots.get(&c.name).filter(|d| d.hit) {
                Some(d) => d.cache_ref.clone(),
                None => run.config.images[image].resolve(run.env),
            };
            let mut spec = spec(scratch.join("Dockerfile"), scratch);
            spec.build_args.insert("BASE".into(), base.clone());
            Build::Retag {
                component: c.name.clone(),
                base,
                spec,
            }
        }
        Source::Rust(r) => Build::Rust {
            component: c.name.clone(),
            package: r.package.clone(),
            binary: r.binary.clone(),
            extra: r.context.clone(),
            spec: with_args(run, c, spec(root.join(&r.dockerfile), scratch))?,
        },
        Source::Dockerfile {
            dockerfile,
            context,
        } => Build::Dockerfile {
            component: c.name.clone(),
            spec: with_args(run, c, spec(root.join(dockerfile), root.join(context)))?,
        },
    }))
}

/// A member's one reference: the consumer's own image gets the service tag
/// (`{service}-{user}-{git7}-{unix}` or `IMAGE_TAG`); everything else built for the run gets
/// `{consumer}-{8 hex}`; third-party images used as they are keep their reference.
fn reference(run: &Run, c: &Component, third_party: ThirdParty) -> String {
    let f = run.facts;
    match (&c.source, c.image_service()) {
        (Source::Image { image }, _) if third_party == ThirdParty::AsIs => {
            run.config.images[image].resolve(run.env)
        }
        (_, Some(s)) if s == run.consumer => f.service_ref(s),
        (_, Some(s)) => f.infra_ref(s, run.consumer),
        (_, None) => f.infra_ref(&c.name, run.consumer),
    }
}

/// The build arguments every image gets (the runtime base, the OCI labels' values), then the
/// component's own.
fn with_args(run: &Run, c: &Component, mut spec: BuildSpec) -> Result<BuildSpec> {
    spec.build_args
        .insert("BASE_IMAGE".into(), run.runtime_base()?);
    spec.build_args
        .insert("REVISION".into(), run.facts.revision.clone());
    spec.build_args
        .insert("CREATED".into(), rfc3339(run.facts.unix));
    spec.build_args.extend(c.build_args.clone());
    Ok(spec)
}

/// `target/xtask/runs/<run>/context/<component>`: where an image's context is assembled.
pub fn context_dir(run: &Run, component: &str) -> PathBuf {
    run.dir().join("context").join(component)
}
