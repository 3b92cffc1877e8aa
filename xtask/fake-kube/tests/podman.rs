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
        readinessProbe:
          httpGet: {{path: /readyz, port: http}}
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
        env: [{{name: GREETING, valueFrom: {{secretKeyRef: {{name: creds, key: greeting}}}}}}]
        command:
        - /bin/bash
        - -c
        - echo job-ran-$(GREETING); for i in $(seq 1 40); do if exec 3<>/dev/tcp/web.{ns}.svc.cluster.local/8080; then printf 'GET /env/GREETING HTTP/1.0\r\n\r\n' >&3; read -r status <&3; case "$status" in *" 200 "*) cat <&3; exit 0;; esac; fi; sleep 0.5; done; exit 1
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
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{greeting: hello-from-secret}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
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
    f.ok(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            &name,
            "--config",
            cfg.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        None,
    );
    let (_, labels) = podman(&[
        "network",
        "inspect",
        &format!("kindfake-{name}"),
        "--format",
        "{{json .Labels}}",
    ]);
    let labels: Value = serde_json::from_str(labels.trim()).unwrap();
    assert_eq!(labels["io.kubernaut/test"], "fake-kube");
    assert_eq!(labels["io.kubernaut.fake-kube.cluster"], name.as_str());
    // The test uses the explicit kubeconfig from here on.
    let f = f.with_env("KUBECONFIG", kubeconfig.to_str().unwrap());

    build_image(&f.dir, &image);
    let archive = f.dir.join("image.tar");
    let (ok, out) = podman(&["save", "-o", archive.to_str().unwrap(), &image]);
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

    let out = f.ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&stack(&ns, &image, &id)),
    );
    assert!(
        out.stdout.starts_with(&format!(
            "namespace/{ns} created\nsecret/creds created\nservice/web created\n"
        )),
        "{out:?}"
    );

    let list = poll(90, "web Ready and migrate Succeeded", || {
        let list = pods(&f, &ns);
        let web = pod(&list, "web-fake-0").ok_or("no web pod")?;
        let job = pod(&list, "migrate-fake-0").ok_or("no job pod")?;
        if job["status"]["phase"] == "Failed" {
            panic!("the job failed: {job}");
        }
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
    assert_eq!(
        pod(&list, "migrate-fake-0").unwrap()["metadata"]["labels"]["job-name"],
        "migrate"
    );
    assert_eq!(
        waiting_reason(pod(&list, "ghost-fake-0").unwrap()),
        "ErrImageNeverPull"
    );

    // Host port -> NodePort -> pod, and env from the Secret.
    assert_eq!(
        poll(20, "the host port", || http_get(host_port, "/env/GREETING")),
        "hello-from-secret"
    );
    // The job reached the Service by its cluster DNS name.
    let logs = f
        .ok("kubectl", &["logs", "job/migrate", "-n", &ns], None)
        .stdout;
    assert!(
        logs.contains("job-ran-hello-from-secret") && logs.contains("hello-from-secret"),
        "{logs}"
    );

    let d = f
        .ok(
            "kubectl",
            &["get", "deployments", "-n", &ns, "-o", "json"],
            None,
        )
        .json();
    let web_d = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["metadata"]["name"] == "web")
        .unwrap();
    assert_eq!(web_d["status"]["readyReplicas"], 1);
    let j = f
        .ok("kubectl", &["get", "jobs", "-n", &ns, "-o", "json"], None)
        .json();
    assert_eq!(j["items"][0]["status"]["succeeded"], 1);
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        image.as_str()
    );
    f.ok(
        "kubectl",
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=web",
            "-n",
            &ns,
            "--timeout=10s",
        ],
        None,
    );
    let described = f
        .ok("kubectl", &["describe", "pods", "-n", &ns], None)
        .stdout;
    assert!(
        described.contains("ErrImageNeverPull")
            && described.contains("tiny_http: listening on 8080"),
        "{described}"
    );

    let (_, container_labels) = podman(&[
        "inspect",
        &format!("kindfake-{name}-{ns}-web-fake-0"),
        "--format",
        "{{json .Config.Labels}}",
    ]);
    let container_labels: Value = serde_json::from_str(container_labels.trim()).unwrap();
    assert_eq!(container_labels["io.kubernaut/test"], "fake-kube");
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
    assert!(std::fs::read_to_string(exported.join("web-fake-0.log"))
        .unwrap()
        .contains("listening on 8080"));
    assert!(exported.join("fake-kube-state.json").is_file());

    let calls = f.calls();
    let create = calls.iter().find(|c| c["argv"][0] == "create").unwrap();
    assert_eq!(create["env"]["KIND_EXPERIMENTAL_PROVIDER"], "podman");
    assert!(calls
        .iter()
        .any(|c| c["argv"][0] == "apply"
            && c["stdin"].as_str().is_some_and(|s| s.contains("kind: Job"))));

    f.ok(
        "kind",
        &[
            "delete",
            "cluster",
            "--name",
            &name,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        None,
    );
    let (_, left) = podman(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=io.kubernaut.fake-kube.cluster={name}"),
    ]);
    assert_eq!(left.trim(), "", "containers left behind");
    assert!(
        !podman(&["network", "exists", &format!("kindfake-{name}")]).0,
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
    f.ok("kind", &["create", "cluster", "--name", &name], None);
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
    let manifests = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: conf, namespace: {ns}}}
data: {{app.conf: "answer = 42\n"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleeper, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: sleeper}}}}
  template:
    metadata: {{labels: {{app: sleeper}}}}
    spec:
      containers:
      - name: s
        image: {base}
        command: [sleep, infinity]
        readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}}}
        volumeMounts: [{{name: tmp, mountPath: /tmp}}, {{name: conf, mountPath: /etc/app}}]
      volumes: [{{name: tmp, emptyDir: {{}}}}, {{name: conf, configMap: {{name: conf}}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: crasher, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: crasher}}}}
  template:
    metadata: {{labels: {{app: crasher}}}}
    spec:
      containers:
      - {{name: c, image: {base}, command: [/bin/sh, -c, "echo boom; exit 3"]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: puller, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: puller}}}}
  template:
    metadata: {{labels: {{app: puller}}}}
    spec:
      containers:
      - {{name: p, image: "localhost/never-loaded"}}
"#
    );
    f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    let sleeper_container = format!("kindfake-{name}-{ns}-sleeper-fake-0");

    // Running but not Ready until the exec probe passes.
    poll(30, "sleeper running", || {
        let list = pods(&f, &ns);
        let p = pod(&list, "sleeper-fake-0").unwrap();
        if p["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    assert!(!ready(pod(&pods(&f, &ns), "sleeper-fake-0").unwrap()));
    let (_, conf) = podman(&["exec", &sleeper_container, "cat", "/etc/app/app.conf"]);
    assert_eq!(conf, "answer = 42\n");
    assert!(podman(&["exec", &sleeper_container, "touch", "/tmp/ready"]).0);
    assert!(ready(pod(&pods(&f, &ns), "sleeper-fake-0").unwrap()));

    // Unset tag: pull policy Always, and there is no registry.
    assert_eq!(
        waiting_reason(pod(&pods(&f, &ns), "puller-fake-0").unwrap()),
        "ErrImagePull"
    );

    // Injected failures apply to the call that carries them.
    let mut cmd = f.command("kubectl", &["get", "pods", "-n", &ns, "-o", "json"]);
    cmd.env("FAKE_KUBE_FAIL", "pod-unready:sleeper");
    let list = f.run_with(cmd, None).json();
    let p = pod(&list, "sleeper-fake-0").unwrap();
    assert!(!ready(p) && p["status"]["phase"] == "Running");
    let mut cmd = f.command("kubectl", &["get", "pods", "-n", &ns, "-o", "json"]);
    cmd.env("FAKE_KUBE_FAIL", "pod-crash:sleeper");
    assert_eq!(
        waiting_reason(pod(&f.run_with(cmd, None).json(), "sleeper-fake-0").unwrap()),
        "CrashLoopBackOff"
    );

    // A crashing container is restarted by the fake kubelet with back-off, not by podman.
    let crasher = poll(40, "crasher in CrashLoopBackOff after a restart", || {
        let list = pods(&f, &ns);
        let p = pod(&list, "crasher-fake-0").unwrap().clone();
        let cs = &p["status"]["containerStatuses"][0];
        if waiting_reason(&p) == "CrashLoopBackOff" && cs["restartCount"].as_i64() >= Some(1) {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    });
    assert_eq!(
        crasher["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        3
    );
    let (_, podman_restarts) = podman(&[
        "inspect",
        "--format",
        "{{.RestartCount}}",
        &format!("kindfake-{name}-{ns}-crasher-fake-0"),
    ]);
    assert_eq!(
        podman_restarts.trim(),
        "0",
        "podman must not restart on its own"
    );
    let logs = f
        .ok("kubectl", &["logs", "-n", &ns, "-l", "app=crasher"], None)
        .stdout;
    assert!(logs.contains("boom"), "{logs}");

    // A Service applied after its pod: the pod container is recreated with the DNS aliases.
    let svc = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: late, namespace: {ns}}}\nspec:\n  selector: {{app: sleeper}}\n  ports: [{{port: 9000}}]\n");
    f.ok("kubectl", &["apply", "-f", "-"], Some(&svc));
    let (_, aliases) = podman(&[
        "inspect",
        &sleeper_container,
        "--format",
        &format!("{{{{json (index .NetworkSettings.Networks \"kindfake-{name}\").Aliases}}}}"),
    ]);
    assert!(
        aliases.contains(&format!("\"late.{ns}.svc.cluster.local\""))
            && aliases.contains("\"late\""),
        "{aliases}"
    );
    poll(20, "recreated sleeper running", || {
        if podman(&["exec", &sleeper_container, "touch", "/tmp/ready"]).0 {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    f.ok(
        "kubectl",
        &[
            "wait",
            "--for=condition=Ready",
            "pod/sleeper-fake-0",
            "-n",
            &ns,
            "--timeout=20s",
        ],
        None,
    );

    // Deleting the namespace removes its pods' containers.
    f.ok("kubectl", &["delete", "namespace", &ns], None);
    let (_, left) = podman(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=io.kubernaut.fake-kube.namespace={ns}"),
    ]);
    assert_eq!(left.trim(), "");
    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    assert!(!podman(&["network", "exists", &format!("kindfake-{name}")]).0);
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required"]
fn host_ports_are_held_per_cluster() {
    let id = common::unique();
    let (a, b) = (format!("fk-{id}-a"), format!("fk-{id}-b"));
    let _ca = Cleanup {
        cluster: a.clone(),
        images: Vec::new(),
    };
    let _cb = Cleanup {
        cluster: b.clone(),
        images: Vec::new(),
    };
    let f = Fake::new("ports");
    let port = free_port();
    let cfg = f.write_kind_config(&a, 30080, port);
    f.ok(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    let out = f.run(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            &b,
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!(":{port}: bind: address already in use")),
        "{out:?}"
    );
    assert_eq!(
        f.ok("kind", &["get", "clusters"], None).stdout,
        format!("{a}\n")
    );
    f.ok("kind", &["delete", "cluster", "--name", &a], None);
    f.ok(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            &b,
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    f.ok("kind", &["delete", "cluster", "--name", &b], None);
}
