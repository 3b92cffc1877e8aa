//! Real flows against podman: the fakes create networks and containers, and the pods serve.
//!
//! Needs podman, a local Debian base image (`XTASK_IMAGE_RUNTIME`, else the runtime stand-in
//! `localhost/xtask-standin/runtime:bookworm` that `cargo xtask standins` builds), and on hosts
//! where the default runtime or ulimits fail, `CONTAINERS_CONF` pointing at a working
//! containers.conf.
//! Run with `cargo test -p fake-kube -- --include-ignored`. Every podman resource made here
//! carries the test's unique cluster name (or image name) and is removed at the end.

mod common;

use common::{free_port, manifest_only_archive, pod, poll, Fake};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The local base image the test images are built on.
fn base() -> String {
    std::env::var("XTASK_IMAGE_RUNTIME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "localhost/xtask-standin/runtime:bookworm".to_string())
}

fn podman(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Removes what a test made, even when it panicked: the cluster's containers and network (by
/// label / name), and the images it built.
struct Cleanup {
    cluster: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=io.kubernaut.fake-kube.cluster={}", self.cluster);
        let (_, ids) = podman(&["ps", "-a", "-q", "--filter", &label]);
        for id in ids.split_whitespace() {
            podman(&["rm", "-f", "-t", "0", id]);
        }
        let net = format!("kindfake-{}", self.cluster);
        if podman(&["network", "exists", &net]).0 {
            podman(&["network", "rm", "-f", &net]);
        }
        for image in &self.images {
            podman(&["rmi", "-f", image]);
        }
    }
}

/// `target/debug/examples/tiny_http`, built if `cargo test` did not build it.
fn tiny_http() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_fake-kube"));
    let path = bin.parent().unwrap().join("examples").join("tiny_http");
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "fake-kube", "--example", "tiny_http"])
            .status()
            .unwrap()
            .success();
        assert!(ok && path.exists(), "could not build the tiny_http example");
    }
    path
}

fn build_image(dir: &Path, image: &str) {
    let ctx = dir.join("image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(tiny_http(), ctx.join("tiny_http")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY tiny_http /usr/local/bin/tiny_http\nENTRYPOINT [\"/usr/local/bin/tiny_http\"]\n", base()),
    )
    .unwrap();
    let (ok, out) = podman(&[
        "build",
        "-q",
        "-t",
        image,
        "--label",
        "io.kubernaut.fake-kube.test=1",
        ctx.to_str().unwrap(),
    ]);
    assert!(ok, "podman build: {out}");
}

fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_string());
    }
    Ok(body.to_string())
}

fn pods(f: &Fake, ns: &str) -> Value {
    f.ok("kubectl", &["get", "pods", "-n", ns, "-o", "json"], None)
        .json()
}

fn waiting_reason(p: &Value) -> &str {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn stack(ns: &str, image: &str, id: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{greeting: hello-from-secret}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: conf, namespace: {ns}}}
data: {{LEVEL: debug}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, tier: front}}}}
    spec:
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        ports: [{{name: http, containerPort: 8080}}]
        env:
        - name: GREETING
          valueFrom: {{secretKeyRef: {{name: creds, key: greeting}}}}
        envFrom: [{{configMapRef: {{name: conf}}}}]
        readinessProbe:
          httpGet: {{path: /readyz, port: 8080}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: {ns}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: {image}
        imagePullPolicy: Never
        args: [get, "http://web.{ns}.svc.cluster.local:8080/env/GREETING"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ghost, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: ghost}}}}
  template:
    metadata: {{labels: {{app: ghost}}}}
    spec:
      containers:
      - {{name: ghost, image: "localhost/fk-never-loaded-{id}:t1", imagePullPolicy: Never}}
"#
    )
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, and the runtime stand-in (cargo xtask standins)"]
fn deploys_a_real_stack() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let ns = format!("ns-{id}");
    let image = format!("localhost/fk-test-{id}:t1");
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: vec![image.clone()],
    };
    let f = Fake::new("flow").with_env("KIND_EXPERIMENTAL_PROVIDER", "podman");
    let host_port = free_port();
    let cfg = f.write_kind_config(&name, 30080, host_port);
    let kubeconfig = f.dir.join("kc-explicit");
    let kc = kubeconfig.to_str().unwrap();
    let create = [
        "create",
        "cluster",
        "--name",
        &name,
        "--config",
        cfg.to_str().unwrap(),
        "--kubeconfig",
        kc,
    ];
    f.ok("kind", &create, None);
    let network = format!("kindfake-{name}");
    let (_, labels) = podman(&[
        "network",
        "inspect",
        &network,
        "--format",
        "{{json .Labels}}",
    ]);
    let labels: Value = serde_json::from_str(labels.trim()).unwrap();
    assert_eq!(labels["io.kubernaut.fake-kube.cluster"], name.as_str());

    build_image(&f.dir, &image);
    let archive = f.dir.join("image.tar");
    let (ok, out) = podman(&[
        "save",
        "--format=docker-archive",
        "-o",
        archive.to_str().unwrap(),
        &image,
    ]);
    assert!(ok, "podman save: {out}");
    f.ok(
        "kind",
        &[
            "load",
            "image-archive",
            archive.to_str().unwrap(),
            "--name",
            &name,
        ],
        None,
    );

    // As the xtask calls kubectl: --kubeconfig and --namespace first.
    let kubectl = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kc, "--namespace", &ns];
        all.extend(args);
        f.ok("kubectl", &all, None).stdout
    };
    let out = f.ok(
        "kubectl",
        &["--kubeconfig", kc, "apply", "-f", "-"],
        Some(&stack(&ns, &image, &id)),
    );
    assert!(
        out.stdout.starts_with(&format!("namespace/{ns} created\nsecret/creds created\nconfigmap/conf created\nservice/web created\n")),
        "{out:?}"
    );
    let list = poll(90, "web Ready and migrate Succeeded", || {
        let list: Value = serde_json::from_str(&kubectl(&["get", "pods", "-o", "json"])).unwrap();
        let web = pod(&list, "web-fake-0").ok_or("no web pod")?;
        let job = pod(&list, "migrate-fake-0").ok_or("no job pod")?;
        assert_ne!(job["status"]["phase"], "Failed", "the job failed: {job}");
        if ready(web) && job["status"]["phase"] == "Succeeded" {
            Ok(list)
        } else {
            Err(list.to_string())
        }
    });
    let web = pod(&list, "web-fake-0").unwrap();
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        web["status"]["containerStatuses"][0]["image"],
        image.as_str()
    );
    let job = pod(&list, "migrate-fake-0").unwrap();
    assert_eq!(job["metadata"]["labels"]["job-name"], "migrate");
    assert_eq!(
        job["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        waiting_reason(pod(&list, "ghost-fake-0").unwrap()),
        "ErrImageNeverPull"
    );

    // Host port -> NodePort -> pod; env from the Secret and the ConfigMap.
    assert_eq!(
        poll(20, "the host port", || http_get(host_port, "/env/GREETING")),
        "hello-from-secret"
    );
    assert_eq!(http_get(host_port, "/env/LEVEL").unwrap(), "debug");
    // The job reached the Service by its cluster DNS name.
    let logs = kubectl(&[
        "logs",
        "-l",
        "job-name=migrate",
        "--all-containers",
        "--tail",
        "100",
    ]);
    assert!(logs.contains("hello-from-secret"), "{logs}");
    let nodes: Value = serde_json::from_str(&kubectl(&["get", "nodes", "-o", "json"])).unwrap();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        image.as_str()
    );
    let described = kubectl(&["describe", "pods", "-l", "app=ghost"]);
    assert!(
        described.contains("ErrImageNeverPull") && !described.contains("web-fake-0"),
        "{described}"
    );
    let described = kubectl(&["describe", "pods"]);
    assert!(
        described.contains("tiny_http: listening on 8080"),
        "{described}"
    );

    let container = format!("kindfake-{name}-{ns}-web-fake-0");
    let (_, container_labels) =
        podman(&["inspect", &container, "--format", "{{json .Config.Labels}}"]);
    let container_labels: Value = serde_json::from_str(container_labels.trim()).unwrap();
    assert_eq!(container_labels["io.kubernaut.fake-kube.pod"], "web-fake-0");
    assert_eq!(
        container_labels["io.kubernaut.fake-kube.namespace"],
        ns.as_str()
    );
    assert_eq!(container_labels["io.kubernaut.fake-kube.label.app"], "web");

    let exported = f.dir.join("exported");
    f.ok(
        "kind",
        &[
            "export",
            "logs",
            exported.to_str().unwrap(),
            "--name",
            &name,
        ],
        None,
    );
    let web_log = std::fs::read_to_string(exported.join(&ns).join("web-fake-0.log")).unwrap();
    assert!(web_log.contains("listening on 8080"), "{web_log}");
    assert!(exported.join("fake-kube-state.json").is_file());

    let calls = f.calls();
    let create = calls.iter().find(|c| c["argv"][0] == "create").unwrap();
    assert_eq!(create["env"]["KIND_EXPERIMENTAL_PROVIDER"], "podman");

    f.ok(
        "kind",
        &["delete", "cluster", "--name", &name, "--kubeconfig", kc],
        None,
    );
    let label = format!("label=io.kubernaut.fake-kube.cluster={name}");
    assert_eq!(
        podman(&["ps", "-a", "-q", "--filter", &label]).1.trim(),
        "",
        "containers left behind"
    );
    assert!(
        !podman(&["network", "exists", &network]).0,
        "network left behind"
    );
    assert!(!std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .contains(&name));
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, and the runtime stand-in (cargo xtask standins)"]
fn restarts_probes_injections_and_late_services() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let ns = format!("ns-{id}");
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: Vec::new(),
    };
    let f = Fake::new("restarts");
    let host_port = free_port();
    let cfg = f.write_kind_config(&name, 30090, host_port);
    f.ok(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    // The base image is in local storage already: an archive that only names it is enough.
    let archive = f.dir.join("base.tar");
    let base = base();
    manifest_only_archive(&archive, &[base.as_str()]);
    f.ok(
        "kind",
        &[
            "load",
            "image-archive",
            archive.to_str().unwrap(),
            "--name",
            &name,
        ],
        None,
    );
    let deployment = |app: &str, image: &str, rest: &str| {
        format!("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers:\n      - {{name: c, image: \"{image}\"{rest}}}\n")
    };
    let manifests = [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        deployment(
            "sleeper",
            &base,
            ", args: [sleep, infinity], readinessProbe: {exec: {command: [test, -f, /tmp/ready]}}",
        ),
        deployment("crasher", &base, ", args: [sh, -c, \"echo boom; exit 3\"]"),
        deployment("puller", "localhost/never-loaded", ""),
    ]
    .concat();
    f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    let sleeper = format!("kindfake-{name}-{ns}-sleeper-fake-0");
    let sleeper_pod = |f: &Fake| pod(&pods(f, &ns), "sleeper-fake-0").unwrap().clone();

    // Running but not Ready until the exec probe passes.
    poll(30, "sleeper running", || {
        let p = sleeper_pod(&f);
        (p["status"]["phase"] == "Running")
            .then_some(())
            .ok_or(p.to_string())
    });
    assert!(!ready(&sleeper_pod(&f)));
    assert!(podman(&["exec", &sleeper, "touch", "/tmp/ready"]).0);
    assert!(ready(&sleeper_pod(&f)));
    // The pod-unready injection acts on the call that carries it.
    let mut cmd = f.command("kubectl", &["get", "pods", "-n", &ns, "-o", "json"]);
    cmd.env("FAKE_KUBE_FAIL", "pod-unready:sleeper");
    let p = pod(&f.run_with(cmd, None).json(), "sleeper-fake-0")
        .unwrap()
        .clone();
    assert!(!ready(&p) && p["status"]["phase"] == "Running", "{p}");

    // No tag: pull policy Always, and there is no registry.
    assert_eq!(
        waiting_reason(pod(&pods(&f, &ns), "puller-fake-0").unwrap()),
        "ErrImagePull"
    );

    // A crashing container is restarted by the fake kubelet with back-off, not by podman.
    let crasher = poll(40, "crasher in CrashLoopBackOff after a restart", || {
        let p = pod(&pods(&f, &ns), "crasher-fake-0").unwrap().clone();
        let cs = &p["status"]["containerStatuses"][0];
        if waiting_reason(&p) == "CrashLoopBackOff" && cs["restartCount"].as_i64() >= Some(1) {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    });
    let cs = &crasher["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    let restarts_before = cs["restartCount"].as_i64();
    let crasher_container = format!("kindfake-{name}-{ns}-crasher-fake-0");
    let (_, podman_restarts) = podman(&[
        "inspect",
        "--format",
        "{{.RestartCount}}",
        &crasher_container,
    ]);
    assert_eq!(
        podman_restarts.trim(),
        "0",
        "podman must not restart on its own"
    );
    let again = pods(&f, &ns);
    let cs = &pod(&again, "crasher-fake-0").unwrap()["status"]["containerStatuses"][0];
    assert_eq!(
        cs["restartCount"].as_i64(),
        restarts_before,
        "back-off: no restart at once"
    );
    let logs = f
        .ok("kubectl", &["logs", "-n", &ns, "-l", "app=crasher"], None)
        .stdout;
    assert!(logs.contains("boom"), "{logs}");

    // A Service applied after its pod recreates the container with the new aliases and the
    // NodePort's host port; while that port is taken, the pod shows podman's error and is
    // retried whenever it is looked at.
    let holder = std::net::TcpListener::bind(("0.0.0.0", host_port)).unwrap();
    let svc = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: late, namespace: {ns}}}\nspec:\n  type: NodePort\n  selector: {{app: sleeper}}\n  ports: [{{port: 9000, nodePort: 30090}}]\n");
    let out = f.ok("kubectl", &["apply", "-f", "-"], Some(&svc));
    assert!(out.stderr.contains("podman could not start it"), "{out:?}");
    let p = sleeper_pod(&f);
    assert_eq!(waiting_reason(&p), "CreateContainerError");
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].to_string();
    assert!(msg.contains("address already in use"), "{msg}");
    drop(holder);
    poll(30, "recreated sleeper running", || {
        let p = sleeper_pod(&f);
        (p["status"]["phase"] == "Running")
            .then_some(())
            .ok_or(p.to_string())
    });
    let alias_format =
        format!("{{{{json (index .NetworkSettings.Networks \"kindfake-{name}\").Aliases}}}}");
    let (_, aliases) = podman(&["inspect", &sleeper, "--format", &alias_format]);
    assert!(
        aliases.contains(&format!("\"late.{ns}.svc.cluster.local\""))
            && aliases.contains("\"late\""),
        "{aliases}"
    );
    assert!(podman(&["exec", &sleeper, "touch", "/tmp/ready"]).0);
    assert!(ready(&sleeper_pod(&f)));

    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    let label = format!("label=io.kubernaut.fake-kube.cluster={name}");
    assert_eq!(podman(&["ps", "-a", "-q", "--filter", &label]).1.trim(), "");
    assert!(!podman(&["network", "exists", &format!("kindfake-{name}")]).0);
}
