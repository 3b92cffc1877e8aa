//! kind and kubectl: argument vectors (pure), and judging readiness from `kubectl get pods -o
//! json` (pure), so a pod that can never start (an image that was not loaded, a crash loop)
//! fails the run at once instead of at the timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::exec::process::Cmd;
use crate::plan::render::Workload;

/// The `kind` binary, for one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub program: PathBuf,
    /// With podman, kind needs `KIND_EXPERIMENTAL_PROVIDER=podman`.
    pub podman: bool,
}

impl Kind {
    fn cmd(&self) -> Cmd {
        let c = Cmd::new(&self.program);
        if self.podman {
            c.env("KIND_EXPERIMENTAL_PROVIDER", "podman")
        } else {
            c
        }
    }

    pub fn create(&self, name: &str, config: &Path, kubeconfig: &Path) -> Cmd {
        self.cmd()
            .args(["create", "cluster", "--name", name, "--config"])
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
    }

    /// `kind load image-archive`: with podman, `load docker-image` does not work.
    pub fn load_archive(&self, name: &str, archive: &Path) -> Cmd {
        self.cmd()
            .args(["load", "image-archive"])
            .arg(archive)
            .args(["--name", name])
    }

    /// Docker's own way: straight from the engine's store.
    pub fn load_docker_image(&self, name: &str, reference: &str) -> Cmd {
        self.cmd()
            .args(["load", "docker-image", reference, "--name", name])
    }

    pub fn delete(&self, name: &str, kubeconfig: &Path) -> Cmd {
        self.cmd()
            .args(["delete", "cluster", "--name", name, "--kubeconfig"])
            .arg(kubeconfig)
    }

    pub fn export_logs(&self, name: &str, dir: &Path) -> Cmd {
        self.cmd()
            .args(["export", "logs"])
            .arg(dir)
            .args(["--name", name])
    }

    /// The kubeconfig of an existing cluster, on stdout.
    pub fn get_kubeconfig(&self, name: &str) -> Cmd {
        self.cmd().args(["get", "kubeconfig", "--name", name])
    }

    pub fn get_clusters(&self) -> Cmd {
        self.cmd().args(["get", "clusters"])
    }
}

/// `kubectl` against one kubeconfig (a run's own, a kept cluster's, or the user's for a
/// shared cluster) and optionally one of its contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubectl {
    pub program: PathBuf,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
}

impl Kubectl {
    pub fn new(program: PathBuf, kubeconfig: PathBuf) -> Kubectl {
        Kubectl {
            program,
            kubeconfig,
            context: None,
        }
    }

    fn cmd(&self) -> Cmd {
        let c = Cmd::new(&self.program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        match &self.context {
            Some(ctx) => c.args(["--context", ctx]),
            None => c,
        }
    }

    /// `create -f -`: fails if the object exists (admission slots rely on that).
    pub fn create(&self, text: &str) -> Cmd {
        self.cmd()
            .args(["create", "-f", "-"])
            .stdin(text.as_bytes().to_vec())
    }

    pub fn get_namespaces(&self, selector: &str) -> Cmd {
        self.cmd()
            .args(["get", "namespaces", "-l", selector, "-o", "json"])
    }

    pub fn delete_namespace(&self, namespace: &str) -> Cmd {
        self.cmd().args([
            "delete",
            "namespace",
            namespace,
            "--wait=true",
            "--timeout=300s",
        ])
    }

    pub fn get_configmaps(&self, namespace: &str, selector: &str) -> Cmd {
        self.cmd().args([
            "--namespace",
            namespace,
            "get",
            "configmaps",
            "-l",
            selector,
            "-o",
            "json",
        ])
    }

    pub fn delete_configmap(&self, namespace: &str, name: &str) -> Cmd {
        self.cmd().args([
            "--namespace",
            namespace,
            "delete",
            "configmap",
            name,
            "--ignore-not-found",
        ])
    }

    /// `port-forward svc/NAME LOCAL:PORT` (`LOCAL` 0: a free one) on 127.0.0.1.
    pub fn port_forward(&self, namespace: &str, service: &str, local: u16, port: u16) -> Cmd {
        let ports = if local == 0 {
            format!(":{port}")
        } else {
            format!("{local}:{port}")
        };
        self.cmd().args([
            "--namespace",
            namespace,
            "port-forward",
            "--address",
            "127.0.0.1",
            &format!("svc/{service}"),
            &ports,
        ])
    }

    pub fn apply(&self, text: &str) -> Cmd {
        self.cmd()
            .args(["apply", "-f", "-"])
            .stdin(text.as_bytes().to_vec())
    }

    pub fn get_pods(&self, namespace: &str) -> Cmd {
        self.cmd()
            .args(["--namespace", namespace, "get", "pods", "-o", "json"])
    }

    pub fn get_nodes(&self) -> Cmd {
        self.cmd().args(["get", "nodes", "-o", "json"])
    }

    pub fn describe_pods(&self, namespace: &str, selector: &str) -> Cmd {
        self.cmd()
            .args(["--namespace", namespace, "describe", "pods", "-l", selector])
    }

    pub fn logs(&self, namespace: &str, selector: &str) -> Cmd {
        self.cmd().args([
            "--namespace",
            namespace,
            "logs",
            "-l",
            selector,
            "--all-containers",
            "--tail",
            "100",
        ])
    }
}

/// Where a workload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    Waiting(String),
    /// It will not get ready by waiting: say why.
    Failed(String),
}

/// Waiting reasons that never resolve by themselves.
const FATAL: [&str; 6] = [
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Judges a workload from `kubectl get pods -o json`.
pub fn judge(pods: &Value, w: &Workload) -> Verdict {
    let selector: BTreeMap<String, String> = match w {
        Workload::Deployment { selector, .. } => selector.clone(),
        Workload::Job { name } => [("job-name".to_string(), name.clone())].into(),
    };
    let items: Vec<&Value> = pods["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| {
                    selector
                        .iter()
                        .all(|(k, v)| p["metadata"]["labels"][k].as_str() == Some(v.as_str()))
                })
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        return Verdict::Waiting("no pod yet".into());
    }
    let mut waiting = Vec::new();
    for p in &items {
        let pod = p["metadata"]["name"].as_str().unwrap_or("?");
        for cs in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let c = cs["name"].as_str().unwrap_or("?");
            if let Some(reason) = cs["state"]["waiting"]["reason"].as_str() {
                let msg = cs["state"]["waiting"]["message"].as_str().unwrap_or("");
                let restarts = cs["restartCount"].as_u64().unwrap_or(0);
                if FATAL.contains(&reason) || (reason == "CrashLoopBackOff" && restarts >= 3) {
                    return Verdict::Failed(format!(
                        "pod {pod}, container {c}: {reason}{}{}",
                        if msg.is_empty() { "" } else { ": " },
                        msg
                    ));
                }
                waiting.push(format!("{pod}/{c}: {reason}"));
            }
        }
        let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
        match w {
            Workload::Job { .. } => match phase {
                "Succeeded" => return Verdict::Ready,
                "Failed" => {
                    let code = p["status"]["containerStatuses"][0]["state"]["terminated"]
                        ["exitCode"]
                        .as_i64();
                    return Verdict::Failed(format!(
                        "job pod {pod} failed{}",
                        code.map(|c| format!(" (exit code {c})"))
                            .unwrap_or_default()
                    ));
                }
                _ => {}
            },
            Workload::Deployment { .. } => {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready {
                    return Verdict::Ready;
                }
            }
        }
        if waiting.is_empty() {
            waiting.push(format!("{pod}: {phase}"));
        }
    }
    Verdict::Waiting(waiting.join(", "))
}

/// Image names the node reports (`status.images[].names`).
pub fn node_images(nodes: &Value) -> BTreeSet<String> {
    nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["status"]["images"].as_array().into_iter().flatten())
        .flat_map(|i| i["names"].as_array().into_iter().flatten())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Which of `wanted` the node does not have (names may carry a `docker.io/` prefix there).
pub fn missing_on_node(wanted: &BTreeSet<String>, present: &BTreeSet<String>) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !present.contains(*w) && !present.contains(&format!("docker.io/{w}")))
        .cloned()
        .collect()
}

/// The kubeconfig kubectl would use: the first entry of `KUBECONFIG`, else `~/.kube/config`.
pub fn user_kubeconfig() -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    if let Some(first) =
        std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set KUBECONFIG")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep() -> Workload {
        Workload::Deployment {
            name: "ds".into(),
            selector: [("app".to_string(), "ds".to_string())].into(),
        }
    }

    fn pod(labels: Value, status: Value) -> Value {
        json!({"metadata": {"name": "ds-1", "labels": labels}, "status": status})
    }

    #[test]
    fn deployment_readiness() {
        let none = json!({"items": []});
        assert_eq!(judge(&none, &dep()), Verdict::Waiting("no pod yet".into()));
        let ready = json!({"items": [pod(json!({"app": "ds"}), json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}))]});
        assert_eq!(judge(&ready, &dep()), Verdict::Ready);
        let other = json!({"items": [pod(json!({"app": "redis"}), json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}))]});
        assert_eq!(judge(&other, &dep()), Verdict::Waiting("no pod yet".into()));
        let starting = json!({"items": [pod(json!({"app": "ds"}), json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}))]});
        assert_eq!(
            judge(&starting, &dep()),
            Verdict::Waiting("ds-1: Running".into())
        );
    }

    #[test]
    fn images_that_were_not_loaded_fail_at_once() {
        let p = json!({"items": [pod(json!({"app": "ds"}), json!({"phase": "Pending", "containerStatuses": [
            {"name": "ds", "restartCount": 0, "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "Container image \"localhost/ds:x\" is not present with pull policy of Never"}}}]}))]});
        match judge(&p, &dep()) {
            Verdict::Failed(m) => assert!(
                m.contains("ErrImageNeverPull") && m.contains("localhost/ds:x"),
                "{m}"
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn crash_loops_fail_after_three_restarts() {
        let cl = |n: u64| {
            json!({"items": [pod(json!({"app": "ds"}), json!({"phase": "Running", "containerStatuses": [
            {"name": "ds", "restartCount": n, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}))]})
        };
        assert!(matches!(judge(&cl(1), &dep()), Verdict::Waiting(_)));
        assert!(matches!(judge(&cl(3), &dep()), Verdict::Failed(_)));
    }

    #[test]
    fn jobs_complete_or_fail() {
        let job = Workload::Job {
            name: "migrations".into(),
        };
        let p = |phase: &str| {
            json!({"items": [pod(json!({"job-name": "migrations"}), json!({"phase": phase,
            "containerStatuses": [{"name": "m", "state": {"terminated": {"exitCode": 3}}}]}))]})
        };
        assert_eq!(judge(&p("Succeeded"), &job), Verdict::Ready);
        assert_eq!(
            judge(&p("Failed"), &job),
            Verdict::Failed("job pod ds-1 failed (exit code 3)".into())
        );
        assert!(matches!(judge(&p("Running"), &job), Verdict::Waiting(_)));
    }

    #[test]
    fn node_images_and_what_is_missing() {
        let nodes = json!({"items": [{"status": {"images": [{"names": ["docker.io/localhost/a:1", "sha256:x"]}, {"names": ["localhost/b:2"]}]}}]});
        let present = node_images(&nodes);
        let wanted: BTreeSet<String> = ["localhost/a:1", "localhost/b:2", "localhost/c:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(missing_on_node(&wanted, &present), ["localhost/c:3"]);
    }

    #[test]
    fn kind_uses_the_podman_provider_and_archives() {
        let k = Kind {
            program: "kind".into(),
            podman: true,
        };
        let c = k.load_archive("n", Path::new("/r/a.tar"));
        assert_eq!(
            c.argv(),
            ["kind", "load", "image-archive", "/r/a.tar", "--name", "n"]
        );
        assert_eq!(
            c.env_vars(),
            [(
                "KIND_EXPERIMENTAL_PROVIDER".to_string(),
                "podman".to_string()
            )]
        );
        let kc = Kubectl::new("kubectl".into(), "/r/kubeconfig".into());
        assert_eq!(
            kc.get_pods("ns").argv()[..3],
            ["kubectl", "--kubeconfig", "/r/kubeconfig"]
        );
    }
}
