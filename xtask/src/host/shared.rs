//! What E2E runs do in a kept or shared cluster besides deploying: list the runs' namespaces
//! (by our labels only), take and release admission slots (ConfigMaps created atomically in
//! `xtask-system`), and remove a run's images from the registry (by digest, after checking the
//! image's config carries that run's label: a digest names exactly one run's image).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::exec::process::Cmd;
use crate::host::kube::Kubectl;
use crate::plan::labels;

pub use crate::plan::labels::{EXPIRES, HOST, SYSTEM_NAMESPACE};

/// A run's namespace (or slot) as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl RunObject {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }

    pub fn expires(&self) -> u64 {
        self.annotations
            .get(EXPIRES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    }

    /// Dead: on its own host, its process is gone (a live run is kept past its TTL); on
    /// another host (liveness unknown), it is past its TTL.
    pub fn dead(&self, here: &str, now: u64) -> bool {
        if self.label(HOST) == here {
            let pid = self.label(labels::PID).parse().unwrap_or(0);
            return !crate::exec::process::pid_alive(pid);
        }
        now > self.expires()
    }
}

/// Objects of a `kubectl get ... -o json` list that carry our run label.
pub fn parse_list(json: &str) -> Result<Vec<RunObject>> {
    let v: Value = serde_json::from_str(json).context("kubectl's JSON")?;
    let map = |m: &Value| -> BTreeMap<String, String> {
        m.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| RunObject {
                    name: i["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    labels: map(&i["metadata"]["labels"]),
                    annotations: map(&i["metadata"]["annotations"]),
                })
                .filter(|o| !o.label(labels::RUN).is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// Every run namespace of ours in the cluster.
pub fn namespaces(k: &Kubectl) -> Result<Vec<RunObject>> {
    let out = k
        .get_namespaces(labels::RUN)
        .timeout(Duration::from_secs(60))
        .read()?;
    parse_list(&out)
}

/// Every admission slot in the cluster.
pub fn slots(k: &Kubectl) -> Result<Vec<RunObject>> {
    let out = k
        .get_configmaps(SYSTEM_NAMESPACE, labels::RUN)
        .timeout(Duration::from_secs(60))
        .output()?;
    if !out.success() {
        // No system namespace yet: no slots.
        return Ok(Vec::new());
    }
    parse_list(&out.stdout)
}

/// Takes the first free of `max` slots for the run (`doc(i)` is slot i's ConfigMap); a slot
/// whose run is dead is freed first. `Ok(None)`: all are held by live runs (wait and retry).
pub fn try_slot(
    k: &Kubectl,
    max: usize,
    here: &str,
    now: u64,
    doc: &dyn Fn(usize) -> String,
) -> Result<Option<String>> {
    let held = slots(k)?;
    for s in held.iter().filter(|s| s.dead(here, now)) {
        k.delete_configmap(SYSTEM_NAMESPACE, &s.name)
            .timeout(Duration::from_secs(60))
            .run()?;
    }
    for i in 0..max.max(1) {
        let out = k
            .create(&doc(i))
            .timeout(Duration::from_secs(60))
            .output()?;
        if out.success() {
            return Ok(Some(slot_name(i)));
        }
        if !out.stderr.contains("AlreadyExists") && !out.stderr.contains("already exists") {
            bail!("taking an admission slot: {}", out.tail(3));
        }
    }
    Ok(None)
}

pub fn slot_name(i: usize) -> String {
    format!("xtask-slot-{i}")
}

/// Removes one pushed image from its registry by digest, only if the image's config carries
/// `run` as its run label. `reference` is `HOST/REPO:TAG` or `HOST/REPO@DIGEST`.
pub fn delete_pushed(reference: &str, run: &str) -> Result<String> {
    let tls = tls_flag(reference);
    let config = Cmd::new("skopeo")
        .args([
            "inspect",
            "--config",
            &tls,
            &format!("docker://{reference}"),
        ])
        .timeout(Duration::from_secs(60))
        .output()?;
    if !config.success() {
        if config.stderr.contains("manifest unknown") || config.stderr.contains("not found") {
            return Ok(format!("{reference} (already gone)"));
        }
        bail!("reading {reference} from its registry: {}", config.tail(2));
    }
    let v: Value = serde_json::from_str(&config.stdout).context("the image's config")?;
    let theirs = v["config"]["Labels"][labels::RUN]
        .as_str()
        .unwrap_or_default();
    if theirs != run {
        bail!("{reference} is not this run's image (its run label is `{theirs}`); left alone");
    }
    Cmd::new("skopeo")
        .args(["delete", &tls, &format!("docker://{reference}")])
        .timeout(Duration::from_secs(60))
        .run()
        .with_context(|| {
            format!("deleting {reference} from its registry (is deletion enabled?)")
        })?;
    Ok(reference.to_string())
}

/// What a run recorded in a kept or shared cluster and its registry, removed: its namespace
/// (waited for), its admission slot, its pushed images (by digest, only if the image carries
/// `run`'s label). Returns what went; an error names every failure.
pub fn remove_recorded(
    kubectl: &std::path::Path,
    recorded: &[crate::exec::record::Event],
    run: &str,
    dry_run: bool,
) -> Result<Vec<String>> {
    use crate::exec::record::Event;
    let k = |kubeconfig: &std::path::Path, context: &Option<String>| {
        let mut k = Kubectl::new(kubectl.to_path_buf(), kubeconfig.to_path_buf());
        k.context = context.clone();
        k
    };
    let (mut gone, mut errors) = (Vec::new(), Vec::new());
    // A kept cluster taken down (`cluster down` removes its folder and kubeconfig) took the
    // run's namespace, slot and registry with it.
    let cluster_gone = recorded.iter().any(|e| {
        matches!(e, Event::Namespace { kubeconfig, .. } | Event::Slot { kubeconfig, .. }
            if !kubeconfig.exists())
    });
    for e in recorded {
        if cluster_gone {
            if matches!(
                e,
                Event::Namespace { .. } | Event::Slot { .. } | Event::Pushed { .. }
            ) {
                gone.push(format!("{} (gone with its kept cluster)", e.describe()));
            }
            continue;
        }
        let (what, result) = match e {
            Event::Namespace {
                name,
                kubeconfig,
                context,
            } => (
                format!("namespace {name}"),
                (!dry_run).then(|| {
                    k(kubeconfig, context)
                        .delete_namespace(name)
                        .timeout(Duration::from_secs(330))
                        .output()
                }),
            ),
            Event::Slot {
                name,
                kubeconfig,
                context,
            } => (
                format!("run slot {name}"),
                (!dry_run).then(|| {
                    k(kubeconfig, context)
                        .delete_configmap(SYSTEM_NAMESPACE, name)
                        .timeout(Duration::from_secs(60))
                        .output()
                }),
            ),
            Event::Pushed { reference } => {
                if !dry_run {
                    if let Err(e) = delete_pushed(reference, run) {
                        errors.push(format!("{e:#}"));
                        continue;
                    }
                }
                (format!("pushed {reference}"), None)
            }
            _ => continue,
        };
        match result {
            Some(Ok(o))
                if !o.success()
                    && !o.stderr.contains("NotFound")
                    && !o.stderr.contains("not found") =>
            {
                errors.push(format!("removing {what}: {}", o.tail(2)))
            }
            Some(Err(e)) => errors.push(format!("removing {what}: {e:#}")),
            _ => gone.push(what),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(gone)
}

/// Runs in one cluster that are dead (see [`RunObject::dead`]) and not
/// in `skip` (runs `clean` already handled from their records): their pushed images (listed on
/// the namespace), namespace and admission slot, removed. Only objects with our run label are
/// ever listed; a live run's namespace is never touched.
pub fn sweep(
    k: &Kubectl,
    here: &str,
    now: u64,
    skip: &dyn Fn(&str) -> bool,
    dry_run: bool,
) -> Result<Vec<String>> {
    let (mut gone, mut errors) = (Vec::new(), Vec::new());
    for ns in namespaces(k)?.into_iter().filter(|n| n.dead(here, now)) {
        let run = ns.label(labels::RUN).to_string();
        if skip(&run) {
            continue;
        }
        let pushed = ns
            .annotations
            .get(labels::PUSHED)
            .map_or("", String::as_str);
        for reference in pushed.split_whitespace() {
            let r = if dry_run {
                Ok(String::new())
            } else {
                delete_pushed(reference, &run)
            };
            match r {
                Ok(_) => gone.push(format!("pushed {reference}")),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !dry_run {
            let o = k
                .delete_namespace(&ns.name)
                .timeout(Duration::from_secs(330))
                .output()?;
            if !o.success() && !o.stderr.contains("NotFound") {
                errors.push(format!("removing namespace {}: {}", ns.name, o.tail(2)));
                continue;
            }
        }
        gone.push(format!("namespace {} (run {run})", ns.name));
    }
    for slot in slots(k)?
        .into_iter()
        .filter(|s| s.dead(here, now) && !skip(s.label(labels::RUN)))
    {
        if !dry_run {
            k.delete_configmap(SYSTEM_NAMESPACE, &slot.name)
                .timeout(Duration::from_secs(60))
                .output()?;
        }
        gone.push(format!(
            "run slot {} (run {})",
            slot.name,
            slot.label(labels::RUN)
        ));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(gone)
}

/// Local registries are plain HTTP; others must have valid TLS.
pub fn tls_flag(reference: &str) -> String {
    let host = reference.split('/').next().unwrap_or_default();
    let local = host.starts_with("localhost") || host.starts_with("127.0.0.1");
    format!("--tls-verify={}", !local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labelled_objects_are_runs_and_dead_ones_are_told_apart() {
        let json = r#"{"items":[
            {"metadata":{"name":"notification-aaaaaaaaaaaa","labels":{"io.kubernaut.xtask.run":"aaaaaaaaaaaa","io.kubernaut.xtask.pid":"0","io.kubernaut.xtask.host":"here"},"annotations":{"io.kubernaut.xtask/expires":"2000"}}},
            {"metadata":{"name":"kube-system","labels":{"kubernetes.io/metadata.name":"kube-system"}}},
            {"metadata":{"name":"gateway-bbbbbbbbbbbb","labels":{"io.kubernaut.xtask.run":"bbbbbbbbbbbb","io.kubernaut.xtask.pid":"1","io.kubernaut.xtask.host":"elsewhere"},"annotations":{"io.kubernaut.xtask/expires":"2000"}}}
        ]}"#;
        let runs = parse_list(json).unwrap();
        assert_eq!(runs.len(), 2, "kube-system has no run label");
        assert!(runs[0].dead("here", 1000), "pid 0 on this host is gone");
        assert!(
            !runs[1].dead("here", 1000),
            "another host's pid says nothing here"
        );
        assert!(runs[1].dead("here", 3000), "past its TTL");
        let me = std::process::id();
        let live = json.replace(".pid\":\"0\"", &format!(".pid\":\"{me}\""));
        let live = &parse_list(&live).unwrap()[0];
        assert!(
            !live.dead("here", 3000),
            "a live run on this host is kept past its TTL"
        );
    }

    #[test]
    fn local_registries_are_plain_http() {
        assert_eq!(tls_flag("localhost:5001/ds:t"), "--tls-verify=false");
        assert_eq!(
            tls_flag("registry.example.com/team/ds@sha256:ab"),
            "--tls-verify=true"
        );
    }
}
