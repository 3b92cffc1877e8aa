//! The Phase 0 check applied before anything reaches a cluster: every image a manifest
//! references must be one this run built, under `localhost/`, not `:latest`, with
//! `imagePullPolicy: Never`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::yaml::Yaml;

/// One image reference found in the manifests, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub source: PathBuf,
    pub object: String,
    pub field: String,
    pub image: String,
    pub pull_policy: Option<String>,
}

/// Every container image field of every pod spec in `docs`.
pub fn image_uses(source: &Path, docs: &[Yaml]) -> Vec<ImageUse> {
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("?");
        let object = format!("{kind}/{}", d["metadata"]["name"].as_str().unwrap_or("?"));
        let (spec, path) = match kind {
            "Pod" => (&d["spec"], "spec"),
            "CronJob" => (
                &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "spec.jobTemplate.spec.template.spec",
            ),
            _ => (&d["spec"]["template"]["spec"], "spec.template.spec"),
        };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            if let Some(cs) = spec[list].as_vec() {
                for (i, c) in cs.iter().enumerate() {
                    out.push(ImageUse {
                        source: source.to_path_buf(),
                        object: object.clone(),
                        field: format!("{path}.{list}[{i}]"),
                        image: c["image"].as_str().unwrap_or_default().to_string(),
                        pull_policy: c["imagePullPolicy"].as_str().map(str::to_string),
                    });
                }
            }
        }
    }
    out
}

/// Where the run's images come from, for the Phase 0 check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Loaded onto a fresh cluster's node: `localhost/...`, never pulled.
    Loaded,
    /// Pushed to this registry: `HOST[/PREFIX]/...`, pulled if not present (by tag while
    /// planning; by digest once pushed: `pinned`).
    Registry { prefix: String, pinned: bool },
}

/// The Phase 0 check for where the images come from.
pub fn check_images_from(
    uses: &[ImageUse],
    built: &BTreeSet<String>,
    from: &Source,
) -> Vec<String> {
    let mut problems = Vec::new();
    for u in uses {
        let at = format!("{}: {} {}", u.source.display(), u.object, u.field);
        let img = &u.image;
        if img.is_empty() {
            problems.push(format!("{at}.image is missing"));
            continue;
        }
        if !built.contains(img) {
            problems.push(format!(
                "{at}.image `{img}` was not built by this run (it built: {}); use `${{IMAGE}}`",
                built.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        problems.extend(source_problems(&at, img, u.pull_policy.as_deref(), from));
    }
    problems
}

fn source_problems(at: &str, img: &str, pull: Option<&str>, from: &Source) -> Vec<String> {
    let mut p = Vec::new();
    let (prefix, want) = match from {
        Source::Loaded => ("localhost/", "Never"),
        Source::Registry { prefix, .. } => (prefix.as_str(), "IfNotPresent"),
    };
    if !img.starts_with(prefix) {
        p.push(format!(
            "{at}.image `{img}` lacks `{prefix}`: it would come from elsewhere"
        ));
    }
    match from {
        Source::Registry { pinned: true, .. } if !img.contains("@sha256:") => p.push(format!(
            "{at}.image `{img}` is not pinned by the digest its push returned"
        )),
        Source::Registry { pinned: true, .. } => {}
        _ => {
            let last = img.rsplit('/').next().unwrap_or(img);
            if !last.contains(':') || img.ends_with(":latest") {
                p.push(format!(
                    "{at}.image `{img}` is `:latest` or untagged: it would be pulled"
                ));
            }
        }
    }
    match pull {
        Some(x) if x == want => {}
        Some(x) => p.push(format!(
            "{at}.imagePullPolicy is `{x}`; it must be `{want}`"
        )),
        None => p.push(format!(
            "{at}.imagePullPolicy is not set; set it to `{want}`"
        )),
    }
    p
}
