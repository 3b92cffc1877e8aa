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

/// The Phase 0 check: every problem with the images the manifests reference.
pub fn check_images(uses: &[ImageUse], built: &BTreeSet<String>) -> Vec<String> {
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
        if !img.starts_with("localhost/") {
            problems.push(format!(
                "{at}.image `{img}` lacks `localhost/`: kind would look for it in a registry"
            ));
        }
        let last = img.rsplit('/').next().unwrap_or(img);
        if !last.contains(':') || img.ends_with(":latest") {
            problems.push(format!(
                "{at}.image `{img}` is `:latest` or untagged: kind would pull it"
            ));
        }
        match u.pull_policy.as_deref() {
            Some("Never") => {}
            Some(p) => problems.push(format!("{at}.imagePullPolicy is `{p}`; it must be `Never` (the image is loaded, not pulled)")),
            None => problems.push(format!("{at}.imagePullPolicy is not set; set it to `Never`")),
        }
    }
    problems
}
