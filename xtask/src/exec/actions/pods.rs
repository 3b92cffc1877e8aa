//! Waiting for a deploy: its images on the node, then its pods ready, with one `get pods`
//! shared by the deploys that wait at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Ctx, Runner};
use crate::exec::process::{Cmd, Timed};
use crate::host::kube::{self, Verdict};
use crate::plan::render::Workload;

impl Runner<'_> {
    /// Polled: the node's image list can lag behind the load.
    pub(super) fn on_node(
        &self,
        get_nodes: &Cmd<Timed>,
        images: &BTreeSet<String>,
        ctx: &Ctx,
    ) -> Result<()> {
        self.log(get_nodes);
        let start = Instant::now();
        loop {
            ctx.line.state("verifying", "images on the node");
            let out = get_nodes.read()?;
            let nodes: serde_json::Value =
                serde_json::from_str(&out).context("kubectl get nodes -o json")?;
            let missing = kube::missing_on_node(images, &kube::node_images(&nodes));
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the cluster's node does not have {} although it was loaded; what the manifests \
                     reference and what was loaded differ",
                    missing.join(", ")
                );
            }
            ctx.line.state(
                "waiting",
                &format!("node does not list {} yet", missing.join(", ")),
            );
            ctx.pause(Duration::from_millis(500))?;
        }
    }

    pub(super) fn pods(
        &self,
        get_pods: &Cmd<Timed>,
        w: &Workload,
        component: &str,
        timeout: Duration,
        ctx: &Ctx,
    ) -> Result<String> {
        self.log(get_pods);
        let start = Instant::now();
        loop {
            let out = self.observe(get_pods, start)?;
            let pods: serde_json::Value =
                serde_json::from_str(&out).context("kubectl get pods -o json")?;
            match kube::judge(&pods, w) {
                Verdict::Ready => {
                    return Ok(format!("ready after {:.1}s", start.elapsed().as_secs_f64()))
                }
                Verdict::Failed(why) => bail!("{component} cannot start: {why}"),
                Verdict::Waiting(why) => {
                    ctx.line.state("waiting", &why);
                    if start.elapsed() > timeout {
                        bail!(
                            "{component} was not ready after {}s: {why}",
                            timeout.as_secs()
                        );
                    }
                }
            }
            ctx.pause(POLL)?;
        }
    }

    /// `get pods`, shared by the deploys that wait at once (each poll asks the cluster for
    /// every pod of the namespace).
    fn observe(&self, get_pods: &Cmd<Timed>, since: Instant) -> Result<String> {
        shared_answer(&self.pods_seen, &get_pods.to_string(), since, || {
            get_pods.read()
        })
    }
}

/// The answer to `key` asked for after `since` (so it shows what the caller did before) and
/// under one poll interval old, else a new one; one question at a time, so callers that
/// arrive while it is asked take its answer.
fn shared_answer(
    seen: &Mutex<BTreeMap<String, (Instant, String)>>,
    key: &str,
    since: Instant,
    ask: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let mut seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, out)) = seen.get(key) {
        if *at >= since && at.elapsed() < POLL {
            return Ok(out.clone());
        }
    }
    let at = Instant::now();
    let out = ask()?;
    seen.insert(key.to_string(), (at, out.clone()));
    Ok(out)
}

/// How often a deploy asks whether its pods are ready.
const POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn deploys_waiting_at_once_share_one_get_pods() {
        let seen = Mutex::new(BTreeMap::new());
        let asked = AtomicUsize::new(0);
        let ask = || {
            asked.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            Ok(format!("answer {}", asked.load(Ordering::SeqCst)))
        };
        let since = Instant::now();
        // Three pollers at once: the first asks, the others wait and take its answer.
        let answers: Vec<String> = std::thread::scope(|s| {
            let polls: Vec<_> = (0..3)
                .map(|_| s.spawn(|| shared_answer(&seen, "get pods", since, ask).unwrap()))
                .collect();
            polls.into_iter().map(|p| p.join().unwrap()).collect()
        });
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a == "answer 1"), "{answers:?}");
        // A caller that applied after that answer was asked for gets a new one...
        let later = Instant::now();
        assert_eq!(
            shared_answer(&seen, "get pods", later, ask).unwrap(),
            "answer 2"
        );
        // ...and so does one whose last answer is a poll interval old.
        std::thread::sleep(POLL);
        assert_eq!(
            shared_answer(&seen, "get pods", since, ask).unwrap(),
            "answer 3"
        );
        // Another question is asked on its own.
        assert_eq!(
            shared_answer(&seen, "get nodes", since, ask).unwrap(),
            "answer 4"
        );
    }
}
