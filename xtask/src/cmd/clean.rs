//! `cargo xtask clean --orphans | --run <id>`: removes what runs left behind: containers,
//! networks, images, kind clusters and archives.
//!
//! It works from the run records first (they list every resource, written before each was
//! created), then from the labels on the resources themselves (for runs whose record was lost,
//! e.g. to `cargo clean`), and for clusters from the labels on their nodes. A run whose process
//! is alive is never touched; nothing of another owner is ever selected.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::process::find_in_path;
use crate::exec::record::{self, Event, RunInfo};
use crate::flags;
use crate::host::facts::login_name;
use crate::host::kube::{Kind, Kubectl};
use crate::host::removal::{self, Removed};
use crate::host::tools::{self, Engine, Need};
use crate::plan::facts::sanitize_user;
use crate::plan::labels::{self, Filter};

pub fn run(config: &Config, args: &flags::Clean) -> Result<()> {
    let engine = tools::require(&[Need::Engine])?.context("no container engine")?;
    let runs_dir = record::runs_dir(&config.root);
    let owner = sanitize_user(&login_name());
    let kind = find_in_path("kind", None).map(|p| Kind {
        program: p,
        podman: engine.is_podman(),
    });
    let kubectl = find_in_path("kubectl", None);
    let ctx = Clean {
        engine: &engine,
        kind: kind.as_ref(),
        kubectl,
        runs_dir: &runs_dir,
        owner: &owner,
        dry_run: args.dry_run,
        kind_list: Default::default(),
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut total = 0usize;
    if let Some(id) = &args.run {
        let r = ctx.one_run(id)?;
        println!("run {id}: {verb} {r}");
        return Ok(());
    }
    let records = record::list(&runs_dir);
    // One listing of everything of ours that carries a run label (not one per record).
    let labelled = removal::labelled_runs(&engine, &Filter::owner(&owner))?;
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    for info in &records {
        covered.insert(info.run_id.clone());
        if info.kept && !args.include_kept {
            kept.insert(info.run_id.clone());
        }
        if info.finished && !labelled.contains_key(&info.run_id) {
            continue;
        }
        if info.alive() {
            continue;
        }
        if info.kept && !args.include_kept {
            println!(
                "run {} ({} {}) was kept with --keep: left alone (add --include-kept to remove it)",
                info.run_id, info.tier, info.consumer
            );
            continue;
        }
        let r = ctx.recorded_run(info)?;
        handled.insert(info.run_id.clone());
        total += 1;
        println!(
            "run {} ({} {}, process {} gone): {verb} {r}",
            info.run_id, info.tier, info.consumer, info.pid
        );
    }
    // Runs known only from labels: their record is gone.
    for (run, pid) in labelled {
        if covered.contains(&run) || crate::exec::process::pid_alive(pid) {
            continue;
        }
        let r = removal::remove_run(&engine, &run, args.dry_run)?;
        total += 1;
        println!("run {run} (no record; process {pid} gone): {verb} {r}");
        covered.insert(run);
    }
    // Clusters known only from their nodes' labels.
    for (cluster, run) in ctx.orphan_clusters(&covered)? {
        ctx.delete_cluster(&cluster, None)?;
        total += 1;
        println!("cluster {cluster} of run {run} (no record; process gone): {verb}");
    }
    // Namespaces of dead or expired runs in kept clusters and the given context.
    let skip = |run: &str| kept.contains(run) || handled.contains(run);
    total += ctx.sweep_clusters(config, args.cluster.as_deref(), &skip)?;
    if total == 0 {
        println!("nothing to clean: no run of {owner} whose process is gone left anything behind");
    }
    Ok(())
}

struct Clean<'a> {
    engine: &'a Engine,
    kind: Option<&'a Kind>,
    kubectl: Option<PathBuf>,
    runs_dir: &'a Path,
    owner: &'a str,
    dry_run: bool,
    /// `kind get clusters`, asked once per command.
    kind_list: std::cell::OnceCell<Option<BTreeSet<String>>>,
}

impl Clean<'_> {
    fn one_run(&self, id: &str) -> Result<Removed> {
        let path = self.runs_dir.join(id).join("record.jsonl");
        match record::read(&path) {
            Ok(info) => {
                if info.alive() {
                    bail!("run {id} is still in progress (process {}); stop it (Ctrl-C), it cleans up itself", info.pid);
                }
                if info.owner != self.owner {
                    bail!(
                        "run {id} belongs to {}; only its owner removes it",
                        info.owner
                    );
                }
                self.recorded_run(&info)
            }
            Err(_) => {
                // No record: labels alone (still only ours).
                let filter = Filter::owner(self.owner).and(labels::RUN, id);
                let found = removal::remove(self.engine, &filter, true)?;
                let clusters = self
                    .orphan_clusters(&BTreeSet::new())?
                    .into_iter()
                    .filter(|(_, r)| r == id)
                    .collect::<Vec<_>>();
                if found.is_empty() && clusters.is_empty() {
                    bail!(
                        "no record of run {id} under {} and nothing of {} carries that run label",
                        self.runs_dir.display(),
                        self.owner
                    );
                }
                for (c, _) in &clusters {
                    self.delete_cluster(c, None)?;
                }
                removal::remove(self.engine, &filter, self.dry_run)
            }
        }
    }

    /// Everything a record lists, then everything labelled with its run id.
    fn recorded_run(&self, info: &RunInfo) -> Result<Removed> {
        for e in &info.resources {
            match e {
                Event::Cluster { name, kubeconfig } => {
                    self.delete_cluster(name, Some(kubeconfig))?
                }
                Event::Archive { path } if !self.dry_run => {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
        }
        let shared = info.resources.iter().any(|e| {
            matches!(
                e,
                Event::Namespace { .. } | Event::Slot { .. } | Event::Pushed { .. }
            )
        });
        if shared {
            let kubectl = self.kubectl.as_deref().context(
                "kubectl is not in PATH: the run's namespace is left (cargo xtask doctor)",
            )?;
            let gone = crate::host::shared::remove_recorded(kubectl, &info.resources, &info.run_id, self.dry_run)
                .with_context(|| format!("removing run {}'s namespace, slot and pushed images; fix that and run `cargo xtask clean --run {}`", info.run_id, info.run_id))?;
            let verb = if self.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!("run {}: {verb} {}", info.run_id, gone.join(", "));
        }
        // Named resources of the record that lost their labels cannot exist: everything is
        // created with labels. The labels are the selection.
        let untagged = removal::untag_names(
            self.engine,
            &removal::recorded_images(&info.path),
            self.dry_run,
        )?;
        let mut removed = removal::remove(
            self.engine,
            &Filter::owner(&info.owner).and(labels::RUN, &info.run_id),
            self.dry_run,
        )?;
        removed.images.extend(untagged);
        if !self.dry_run {
            if let Some(run_dir) = info.path.parent() {
                record::remove_scratch(run_dir)?;
            }
            record::mark_finished(&info.path)?;
        }
        Ok(removed)
    }

    fn delete_cluster(&self, name: &str, kubeconfig: Option<&Path>) -> Result<()> {
        let Some(kind) = self.kind else {
            eprintln!(
                "warning: cluster {name} is left: `kind` is not in PATH (cargo xtask doctor)"
            );
            return Ok(());
        };
        if self.dry_run {
            return Ok(());
        }
        let tmp;
        let kc = match kubeconfig {
            Some(k) => k,
            None => {
                tmp = std::env::temp_dir()
                    .join(format!("xtask-clean-{}", crate::host::facts::random_id()));
                &tmp
            }
        };
        let r = kind
            .delete(name, kc)
            .timeout(Duration::from_secs(180))
            .run();
        if kubeconfig.is_none() {
            let _ = std::fs::remove_file(kc);
        }
        r.with_context(|| format!("deleting cluster {name}"))?;
        Ok(())
    }

    /// The clusters to sweep for dead runs' namespaces: every kept cluster recorded here, and
    /// `context` (a kube context of the user's kubeconfig, or a kept cluster's name).
    fn clusters(&self, config: &Config, context: Option<&str>) -> Result<Vec<(String, Kubectl)>> {
        let Some(kubectl) = &self.kubectl else {
            return Ok(Vec::new());
        };
        let target = record::target_dir(&config.root);
        let known = self.kind_clusters()?;
        let mut out = Vec::new();
        for kc in crate::exec::clusters::all(&target) {
            if known.as_ref().is_some_and(|k| !k.contains(&kc.name)) {
                println!(
                    "kept cluster {0}: recorded, but kind has no such cluster: not swept \
                     (`cargo xtask cluster down --name {0}` forgets it)",
                    kc.name
                );
                continue;
            }
            let mut k = Kubectl::new(kubectl.clone(), kc.kubeconfig.clone());
            k.context = Some(kc.context.clone());
            out.push((kc.name, k));
        }
        if let Some(c) = context.filter(|c| !out.iter().any(|(n, _)| n == c)) {
            let mut k = Kubectl::new(kubectl.clone(), crate::host::kube::user_kubeconfig()?);
            k.context = Some(c.to_string());
            out.push((c.to_string(), k));
        }
        Ok(out)
    }

    /// Sweeps the kept clusters and `context` (see `shared::sweep`); returns how much went. A
    /// kept cluster that is down is reported, not fatal; the context asked for is.
    fn sweep_clusters(
        &self,
        config: &Config,
        context: Option<&str>,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<usize> {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut total = 0;
        for (cluster, k) in self.clusters(config, context)? {
            let swept = crate::host::shared::sweep(
                &k,
                &crate::host::facts::hostname(),
                crate::host::facts::unix_now(),
                skip,
                self.dry_run,
            )
            .with_context(|| format!("sweeping cluster {cluster}"));
            let gone = match swept {
                Err(e) if context != Some(cluster.as_str()) => {
                    let first = format!("{e:#}");
                    let first = first.lines().next().unwrap_or_default();
                    println!(
                        "kept cluster {cluster}: not swept ({first}); is it up? \
                         `cargo xtask cluster status --name {cluster}`"
                    );
                    continue;
                }
                r => r?,
            };
            total += gone.len();
            for g in gone {
                println!("cluster {cluster}: {verb} {g}");
            }
        }
        Ok(total)
    }

    /// The clusters `kind get clusters` lists (None without kind, or when it fails), asked
    /// once: clusters deleted since stay listed, which only the kept-cluster check reads.
    fn kind_clusters(&self) -> Result<Option<BTreeSet<String>>> {
        if let Some(list) = self.kind_list.get() {
            return Ok(list.clone());
        }
        let list = match self.kind {
            None => None,
            Some(kind) => {
                let out = kind
                    .get_clusters()
                    .timeout(Duration::from_secs(30))
                    .output()?;
                out.success()
                    .then(|| out.stdout.lines().map(|l| l.trim().to_string()).collect())
            }
        };
        Ok(self.kind_list.get_or_init(|| list).clone())
    }

    /// kind clusters named like ours whose node labels say they are ours, of a run not in
    /// `covered` whose process is gone: (cluster, run id).
    fn orphan_clusters(&self, covered: &BTreeSet<String>) -> Result<Vec<(String, String)>> {
        let (Some(kind), Some(kubectl)) = (self.kind, &self.kubectl) else {
            return Ok(Vec::new());
        };
        let names = self.kind_clusters()?.unwrap_or_default();
        let mut found = Vec::new();
        for name in names
            .iter()
            .map(String::as_str)
            .filter(|n| is_our_cluster_name(n))
        {
            let run = name.rsplit('-').next().unwrap_or_default().to_string();
            if covered.contains(&run) {
                continue;
            }
            let kc =
                std::env::temp_dir().join(format!("xtask-kc-{}", crate::host::facts::random_id()));
            match kind
                .get_kubeconfig(name)
                .timeout(Duration::from_secs(30))
                .output()
            {
                Ok(o) if o.success() && std::fs::write(&kc, &o.stdout).is_ok() => {}
                _ => continue,
            }
            let k = Kubectl::new(kubectl.clone(), kc.clone());
            let nodes = k.get_nodes().timeout(Duration::from_secs(30)).read();
            let _ = std::fs::remove_file(&kc);
            let Ok(nodes) = nodes else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&nodes) else {
                continue;
            };
            let l = &v["items"][0]["metadata"]["labels"];
            let owner_ok =
                l[labels::OWNER].as_str() == Some(&crate::plan::render::label_value(self.owner));
            let run_ok = l[labels::RUN].as_str() == Some(run.as_str());
            let pid: u32 = l[labels::PID]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if owner_ok && run_ok && !crate::exec::process::pid_alive(pid) {
                found.push((name.to_string(), run));
            }
        }
        Ok(found)
    }
}

/// `{consumer}-e2e-{8 hex}`: the names e2e runs give their clusters.
pub fn is_our_cluster_name(n: &str) -> bool {
    let Some((head, run)) = n.rsplit_once("-e2e-") else {
        return false;
    };
    !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && run.len() == 12
        && run
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_of_ours() {
        assert!(is_our_cluster_name("notification-e2e-1884d074a1b2"));
        assert!(is_our_cluster_name("mock-llm-e2e-1884d074a1b2"));
        assert!(!is_our_cluster_name("kind"));
        assert!(!is_our_cluster_name("notification-e2e-1884D074A1B2"));
        assert!(!is_our_cluster_name("Team_X-e2e-1884d074a1b2"));
        assert!(!is_our_cluster_name("notification-e2e-1884d074"));
    }
}
