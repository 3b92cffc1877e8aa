//! Real flows against podman: the fakes create networks and containers, and the pods serve.
//!
//! Needs podman, a local Debian base image (`XTASK_IMAGE_RUNTIME`, else the runtime stand-in
//! `localhost/xtask-standin/runtime:bookworm` that `cargo xtask standins` builds), and on hosts
//! where the default runtime or ulimits fail, `CONTAINERS_CONF` pointing at a working
//! containers.conf. The registry test runs `docker-registry` (Debian's `docker-registry`
//! package), the docker test a private `dockerd` (`docker.io`), both started and removed here.
//! Run with `cargo test -p fake-kube -- --include-ignored`. Every podman resource made here
//! carries the test's unique cluster name (or image name) and is removed at the end.

mod common;

use common::{free_port, manifest_only_archive, pod, poll, Fake};
use serde_json::{json, Value};
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
        let (_, nets) = podman(&["network", "ls", "-q", "--filter", &label]);
        for net in nets.split_whitespace() {
            podman(&["network", "rm", "-f", net]);
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
    build_image_with(dir, image, "");
}

/// The test image with more Dockerfile lines (e.g. a `CMD`).
fn build_image_with(dir: &Path, image: &str, more: &str) {
    let ctx = dir.join("image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(tiny_http(), ctx.join("tiny_http")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY tiny_http /usr/local/bin/tiny_http\nENTRYPOINT [\"/usr/local/bin/tiny_http\"]\n{more}", base()),
    )
    .unwrap();
    let (ok, out) = podman(&[
        "build",
        "-q",
        "-t",
        image,
        "--label",
        // Unique: a build of the same content must not share the image id with another test.
        &format!("io.kubernaut.fake-kube.test={image}"),
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
    for net in [network, format!("kindfake-{name}_{ns}")] {
        assert!(!podman(&["network", "exists", &net]).0, "{net} left behind");
    }
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

    // No tag: pull policy Always, and no registry answers on localhost: the pull failed when
    // the Deployment was applied, so the pod is in back-off now, with the pull's error.
    let puller = pod(&pods(&f, &ns), "puller-fake-0").unwrap().clone();
    let waiting = &puller["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ImagePullBackOff", "{puller}");
    let msg = waiting["message"].as_str().unwrap();
    assert!(msg.starts_with("Back-off pulling image \"localhost/never-loaded:latest\": ErrImagePull: failed to pull and unpack image \"localhost/never-loaded:latest\": "), "{msg}");

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
        format!("{{{{json (index .NetworkSettings.Networks \"kindfake-{name}_{ns}\").Aliases}}}}");
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

/// A process this test started (a registry, a docker engine), stopped by its pid (SIGTERM, then
/// SIGKILL) and its folder removed when dropped, also when the test failed.
struct Daemon {
    child: std::process::Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(program: &str, args: &[&str], dir: PathBuf) -> Daemon {
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Daemon { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which it keeps until it is waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..80 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A registry (`docker-registry serve`) on a free localhost port, storing under `dir`.
fn registry(dir: &Path) -> (Daemon, u16) {
    let port = free_port();
    let dir = dir.join("registry");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        "/usr/bin/docker-registry",
        &["serve", config.to_str().unwrap()],
        dir,
    );
    poll(20, "the registry", || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port));
        up.map(drop).map_err(|e| format!("{e}\n{}", d.log()))
    });
    (d, port)
}

/// A private docker engine (no bridge, no iptables: it only stores images); `DOCKER_HOST`.
fn dockerd() -> (Daemon, String) {
    // Short: the engine's sockets live under it.
    let d = std::env::temp_dir().join(format!("fk-dockerd-{}", common::unique()));
    let at = |p: &str| d.join(p).to_str().unwrap().to_string();
    let host = format!("unix://{}", at("sock"));
    let args = [
        "--data-root",
        &at("data"),
        "--exec-root",
        &at("exec"),
        "--pidfile",
        &at("pid"),
        "-H",
        &host,
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ];
    let daemon = Daemon::start("dockerd", &args, d.clone());
    poll(60, "dockerd", || {
        let out = Command::new("docker")
            .arg("version")
            .env("DOCKER_HOST", &host)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(daemon.log()),
        }
    });
    (daemon, host)
}

/// `kubectl port-forward` running in the background (killed when dropped) and its port.
struct Forward {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Forward {
    fn start(f: &Fake, args: &[&str]) -> Forward {
        let mut cmd = f.command("kubectl", args);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        let port = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split_once(" -> 8080\n"))
            .and_then(|(p, _)| p.parse().ok())
            .unwrap_or_else(|| panic!("not kubectl's first line: {line:?}"));
        Forward {
            child,
            stdout,
            port,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
        line
    }

    /// Its exit code and stderr, once it exits (within `secs`).
    fn exited(&mut self, secs: u64) -> (Option<i32>, String) {
        let status = poll(secs, "port-forward to exit", || {
            self.child.try_wait().unwrap().ok_or("running".to_string())
        });
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deployment(ns: &str, name: &str, image: &str, rest: &str) -> String {
    format!("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: {name}\n        image: \"{image}\"\n{rest}")
}

fn service(ns: &str, name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 8080, targetPort: 8080}}]\n")
}

const PROBE: &str = "        readinessProbe: {httpGet: {path: /readyz, port: 8080}}\n";

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, the runtime stand-in (cargo xtask standins) and docker-registry"]
fn pulls_by_digest_from_a_registry_and_port_forwards() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let ns = format!("ns-{id}");
    let image = format!("localhost/fk-reg-{id}:t1");
    let f = Fake::new("registry");
    let (_registry, port) = registry(&f.dir);
    build_image(&f.dir, &image);
    let repo = format!("localhost:{port}/fk-{id}/web");
    let digest_file = f.dir.join("digest");
    let (ok, out) = podman(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digest_file.to_str().unwrap(),
        &image,
        &format!("{repo}:t1"),
    ]);
    assert!(ok, "podman push: {out}");
    let by_digest = format!(
        "{repo}@{}",
        std::fs::read_to_string(&digest_file).unwrap().trim()
    );
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: vec![image.clone(), by_digest.clone()],
    };
    // Only the registry has the image now: the fake must pull it.
    assert!(podman(&["rmi", &image]).0);

    // The kind local-registry pattern's config.
    let cfg = f.dir.join("kind.yaml");
    std::fs::write(&cfg, format!("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n- |-\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"localhost:{port}\"]\n    endpoint = [\"http://kind-registry:5000\"]\n")).unwrap();
    f.ok(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            &name,
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let manifests = [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        service(&ns, "web"),
        deployment(
            &ns,
            "web",
            &by_digest,
            &format!("        imagePullPolicy: IfNotPresent\n{PROBE}"),
        ),
        deployment(&ns, "missing", &format!("{repo}:nope"), ""),
    ]
    .concat();
    f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    let pulls = f
        .calls()
        .into_iter()
        .find(|c| c["argv"][0] == "apply")
        .unwrap()["pulls"]
        .clone();
    // Pulled in image order: `:nope` before `@sha256:`.
    assert_eq!(pulls[1]["image"], by_digest.as_str(), "{pulls}");
    assert_eq!(
        (&pulls[0]["ok"], &pulls[1]["ok"]),
        (&json!(false), &json!(true))
    );
    let failed = pulls[0]["message"].as_str().unwrap();
    assert!(failed.ends_with("manifest unknown"), "{failed}");
    poll(60, "web Ready", || {
        let list = pods(&f, &ns);
        let web = pod(&list, "web-fake-0").unwrap();
        ready(web).then_some(()).ok_or(web.to_string())
    });
    // A failed pull: back-off with the registry's message, then ErrImagePull again on the next try.
    let missing = |f: &Fake| {
        let list = pods(f, &ns);
        pod(&list, "missing-fake-0").unwrap()["status"]["containerStatuses"][0]["state"]["waiting"]
            .clone()
    };
    let waiting = missing(&f);
    assert_eq!(waiting["reason"], "ImagePullBackOff");
    let msg = waiting["message"].as_str().unwrap();
    let pulled = format!("failed to pull and unpack image \"{repo}:nope\": ");
    assert!(
        msg.starts_with(&format!(
            "Back-off pulling image \"{repo}:nope\": ErrImagePull: {pulled}"
        )),
        "{msg}"
    );
    let again = poll(30, "ErrImagePull after the back-off", || {
        let w = missing(&f);
        (w["reason"] == "ErrImagePull")
            .then_some(w.clone())
            .ok_or(w.to_string())
    });
    assert!(
        again["message"].as_str().unwrap().starts_with(&pulled),
        "{again}"
    );
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        by_digest.as_str()
    );

    // Through port-forward, until the pod goes away.
    let mut fwd = Forward::start(
        &f,
        &[
            "-n",
            &ns,
            "port-forward",
            "svc/web",
            ":8080",
            "--address",
            "127.0.0.1",
        ],
    );
    assert!(http_get(fwd.port, "/").unwrap().contains("web-fake-0"));
    assert_eq!(
        fwd.line(),
        format!("Handling connection for {}\n", fwd.port)
    );
    assert_eq!(http_get(fwd.port, "/env/HOSTNAME").unwrap(), "web-fake-0");
    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    let (code, err) = fwd.exited(15);
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "error: lost connection to pod\n")
    );
    assert!(
        !podman(&["image", "exists", &by_digest]).0,
        "the image the fake pulled is removed with the cluster"
    );
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, and the runtime stand-in (cargo xtask standins)"]
fn namespaces_keep_same_named_services_apart_and_are_deleted() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let image = format!("localhost/fk-ns-{id}:t1");
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: vec![image.clone()],
    };
    let f = Fake::new("namespaces");
    build_image(&f.dir, &image);
    f.ok("kind", &["create", "cluster", "--name", &name], None);
    let archive = f.dir.join("image.tar");
    manifest_only_archive(&archive, &[image.as_str()]);
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
    let (a, b) = (format!("a-{id}"), format!("b-{id}"));
    for ns in [&a, &b] {
        let job = format!("---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: whoami, namespace: {ns}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: whoami, image: \"{image}\", imagePullPolicy: Never, args: [get, \"http://datastorage:8080/env/WHO\"]}}\n");
        let manifests = [
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{io.kubernaut/test: \"{id}\"}}\n"),
            service(ns, "datastorage"),
            deployment(ns, "datastorage", &image, &format!("        imagePullPolicy: Never\n        env: [{{name: WHO, value: {ns}}}]\n{PROBE}")),
            job,
        ]
        .concat();
        f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    }
    for ns in [&a, &b] {
        poll(60, "datastorage Ready and whoami Succeeded", || {
            let list = pods(&f, ns);
            let job = pod(&list, "whoami-fake-0").unwrap();
            assert_ne!(job["status"]["phase"], "Failed", "{job}");
            let up = ready(pod(&list, "datastorage-fake-0").unwrap());
            (up && job["status"]["phase"] == "Succeeded")
                .then_some(())
                .ok_or(list.to_string())
        });
        let logs = f
            .ok(
                "kubectl",
                &["logs", "-n", ns, "-l", "job-name=whoami"],
                None,
            )
            .stdout;
        assert_eq!(
            logs.trim(),
            ns.as_str(),
            "each namespace reaches its own datastorage"
        );
        let net = format!("kindfake-{name}_{ns}");
        let (_, labels) = podman(&["network", "inspect", &net, "--format", "{{json .Labels}}"]);
        let labels: Value = serde_json::from_str(labels.trim()).unwrap();
        assert_eq!(labels["io.kubernaut.fake-kube.cluster"], name.as_str());
        assert_eq!(labels["io.kubernaut.fake-kube.namespace"], ns.as_str());
    }
    // LOCAL:PORT, on the default address (localhost).
    let local = free_port();
    let ports = format!("{local}:8080");
    let mut fwd = Forward::start(&f, &["port-forward", "-n", &a, "svc/datastorage", &ports]);
    assert_eq!(fwd.port, local);
    assert_eq!(http_get(fwd.port, "/env/WHO").unwrap(), a);

    let out = f.ok(
        "kubectl",
        &["delete", "namespace", &a, "--wait=true", "--timeout=120s"],
        None,
    );
    assert_eq!(out.stdout, format!("namespace \"{a}\" deleted\n"));
    let (code, err) = fwd.exited(15);
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "error: lost connection to pod\n")
    );
    let in_ns = |ns: &str| {
        let filter = [
            "--filter",
            &format!("label=io.kubernaut.fake-kube.cluster={name}"),
        ];
        let ns_label = format!("label=io.kubernaut.fake-kube.namespace={ns}");
        let args = [&["ps", "-a", "-q"][..], &filter, &["--filter", &ns_label]].concat();
        podman(&args).1.split_whitespace().count()
    };
    assert_eq!(
        (in_ns(&a), in_ns(&b)),
        (0, 2),
        "a's containers are gone, b's are not"
    );
    assert!(!podman(&["network", "exists", &format!("kindfake-{name}_{a}")]).0);
    assert!(podman(&["network", "exists", &format!("kindfake-{name}_{b}")]).0);
    assert!(ready(pod(&pods(&f, &b), "datastorage-fake-0").unwrap()));
    let sel = format!("io.kubernaut/test={id}");
    let left = f
        .ok(
            "kubectl",
            &["get", "namespaces", "-l", &sel, "-o", "json"],
            None,
        )
        .json();
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    assert_eq!(left["items"][0]["metadata"]["name"], b.as_str());
    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    assert!(!podman(&["network", "exists", &format!("kindfake-{name}_{b}")]).0);
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, the runtime stand-in (cargo xtask standins) and dockerd"]
fn loads_images_from_a_docker_engine() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let ns = format!("ns-{id}");
    let image = format!("localhost/fk-docker-{id}:t1");
    // A name podman had before the load: `kind delete` must leave it.
    let both = format!("localhost/fk-docker-{id}:both");
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: vec![image.clone(), both.clone()],
    };
    let (_dockerd, host) = dockerd();
    let f = Fake::new("docker").with_env("DOCKER_HOST", &host);
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
    let loaded = Command::new("docker")
        .args(["load", "-i", archive.to_str().unwrap()])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    assert!(loaded.status.success(), "docker load: {loaded:?}");
    let tagged = Command::new("docker")
        .args(["tag", &image, &both])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    assert!(tagged.status.success(), "docker tag: {tagged:?}");
    assert!(podman(&["tag", &image, &both]).0);
    // Only the docker engine has the image by its first name now.
    assert!(podman(&["rmi", &image]).0);

    let host_port = free_port();
    let cfg = f.write_kind_config(&name, 30100, host_port);
    f.ok(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    let load = ["load", "docker-image", &image, "--name", &name];
    let out = f.ok("kind", &load, None);
    let node = format!("{name}-control-plane");
    assert!(
        out.stderr
            .starts_with(&format!("Image: \"{image}\" with ID \"sha256:"))
            && out
                .stderr
                .ends_with(&format!("not yet present on node \"{node}\", loading...\n")),
        "{out:?}"
    );
    assert!(
        podman(&["image", "exists", &image]).0,
        "loaded into podman storage"
    );
    let out = f.ok("kind", &load, None);
    assert!(
        out.stderr
            .ends_with("found to be already present on all nodes.\n"),
        "{out:?}"
    );
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        image.as_str()
    );
    let missing = format!("localhost/fk-nope-{id}:t1");
    let out = f.run(
        "kind",
        &["load", "docker-image", &missing, "--name", &name],
        None,
    );
    assert_eq!(
        (out.code, out.stderr),
        (
            1,
            format!("ERROR: image: \"{missing}\" not present locally\n")
        )
    );

    let node_port = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: NS}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 8080, nodePort: 30100}]\n".replace("NS", &ns);
    let manifests = [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        node_port,
        deployment(
            &ns,
            "web",
            &image,
            &format!("        imagePullPolicy: Never\n{PROBE}"),
        ),
    ]
    .concat();
    f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    let body = poll(60, "the NodePort through the host port", || {
        http_get(host_port, "/")
    });
    assert!(body.contains("web-fake-0"), "{body}");
    f.ok(
        "kind",
        &["load", "docker-image", &both, "--name", &name],
        None,
    );
    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    // The node's images go with it: the name the load put into podman is gone, the one
    // podman had before stays.
    assert!(
        !podman(&["image", "exists", &image]).0,
        "kind delete left {image} in podman"
    );
    assert!(
        podman(&["image", "exists", &both]).0,
        "kind delete removed {both}, which podman had before"
    );
}

#[test]
#[ignore = "needs podman, CONTAINERS_CONF where required, and the runtime stand-in (cargo xtask standins)"]
fn commands_and_mounted_config_maps() {
    let id = common::unique();
    let name = format!("fk-{id}");
    let ns = format!("ns-{id}");
    let image = format!("localhost/fk-mounts-{id}:t1");
    let _cleanup = Cleanup {
        cluster: name.clone(),
        images: vec![image.clone()],
    };
    let f = Fake::new("mounts");
    // A CMD that fails: the pods run only if `command` drops it, as in Kubernetes.
    build_image_with(&f.dir, &image, "CMD [\"exit\", \"3\"]\n");
    let host_port = free_port();
    let cfg = f.write_kind_config(&name, 30080, host_port);
    let create = [
        "create",
        "cluster",
        "--name",
        &name,
        "--config",
        cfg.to_str().unwrap(),
    ];
    f.ok("kind", &create, None);
    let archive = f.dir.join("image.tar");
    manifest_only_archive(&archive, &[image.as_str()]);
    let load = [
        "load",
        "image-archive",
        archive.to_str().unwrap(),
        "--name",
        &name,
    ];
    f.ok("kind", &load, None);
    let volume = "      volumes:\n      - name: xtask-files\n        configMap:\n          name: web-files\n          items: [{key: m0, path: m0}, {key: m1-a.txt, path: m1/a.txt}, {key: m1-b.txt, path: m1/b.txt}]\n";
    let mounts = "        volumeMounts:\n        - {name: xtask-files, mountPath: /etc/fk/one.txt, subPath: m0, readOnly: true}\n        - {name: xtask-files, mountPath: /etc/fk-dir, subPath: m1, readOnly: true}\n";
    let web = format!("        imagePullPolicy: Never\n        command: [/usr/local/bin/tiny_http]\n        env: [{{name: PORT, value: '8081'}}]\n        readinessProbe: {{httpGet: {{path: /readyz, port: 8081}}}}\n{mounts}{volume}");
    let reader = "cat /etc/fk/one.txt /etc/fk-dir/b.txt; if touch /etc/fk-dir/new 2>/dev/null; then exit 9; fi; echo read-only";
    let job = format!("---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: reader, namespace: {ns}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: reader\n        image: \"{image}\"\n        imagePullPolicy: Never\n        command: [/bin/sh, -c]\n        args: [\"{reader}\"]\n{mounts}{volume}");
    let manifests = [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  type: NodePort\n  selector: {{app: web}}\n  ports: [{{port: 8081, targetPort: 8081, nodePort: 30080}}]\n"),
        deployment(&ns, "web", &image, &web),
        job,
    ]
    .concat();
    f.ok("kubectl", &["apply", "-f", "-"], Some(&manifests));
    // No ConfigMap yet: the pods wait on their volume, without containers.
    let list = pods(&f, &ns);
    for p in ["web-fake-0", "reader-fake-0"] {
        let state = &pod(&list, p).unwrap()["status"]["containerStatuses"][0]["state"];
        assert_eq!(state["waiting"]["reason"], "ContainerCreating", "{state}");
        let msg = state["waiting"]["message"].as_str().unwrap();
        assert!(msg.ends_with("configmap \"web-files\" not found"), "{msg}");
    }
    let data = "data: {m0: \"one\\n\", m1-a.txt: alpha, m1-b.txt: \"beta\\n\"}";
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-files, namespace: {ns}}}\n{data}\n"
    );
    f.ok("kubectl", &["apply", "-f", "-"], Some(&cm));
    poll(60, "web Ready and reader Succeeded", || {
        let list = pods(&f, &ns);
        let job = pod(&list, "reader-fake-0").unwrap();
        assert_ne!(job["status"]["phase"], "Failed", "{job}");
        let web = pod(&list, "web-fake-0").unwrap();
        assert_eq!(
            web["status"]["containerStatuses"][0]["restartCount"], 0,
            "{web}"
        );
        let done = ready(web) && job["status"]["phase"] == "Succeeded";
        done.then_some(()).ok_or(list.to_string())
    });
    assert_eq!(
        http_get(host_port, "/file/etc/fk/one.txt").unwrap(),
        "one\n"
    );
    assert_eq!(
        http_get(host_port, "/file/etc/fk-dir/a.txt").unwrap(),
        "alpha"
    );
    let logs = f.ok(
        "kubectl",
        &["-n", &ns, "logs", "-l", "job-name=reader"],
        None,
    );
    assert_eq!(logs.stdout, "one\nbeta\nread-only\n");
    let files = f.state.join("clusters").join(&name).join("files");
    assert!(files
        .join(format!("{ns}_web-fake-0/xtask-files/m1/a.txt"))
        .is_file());
    f.ok("kind", &["delete", "cluster", "--name", &name], None);
    assert!(!files.exists(), "the files go with the cluster");
}
