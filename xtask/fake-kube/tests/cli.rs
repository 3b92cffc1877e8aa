//! The fake's command lines without podman (`FAKE_KUBE_PODMAN=true`: every podman call succeeds
//! and does nothing), so these run in plain `cargo test`.

mod common;

use common::{free_port, manifest_only_archive, pod, Fake};
use serde_json::Value;

fn fake(tag: &str) -> Fake {
    Fake::new(tag).with_env("FAKE_KUBE_PODMAN", "true")
}

#[test]
fn state_dir_is_required() {
    let f = fake("nostate");
    let mut cmd = f.command("kind", &["version"]);
    cmd.env_remove("FAKE_KUBE_STATE");
    let out = f.run_with(cmd, None);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("FAKE_KUBE_STATE"), "{out:?}");
}

#[test]
fn versions_and_the_call_log() {
    let f = fake("versions").with_env("KIND_EXPERIMENTAL_PROVIDER", "podman");
    assert_eq!(
        f.ok("kind", &["version"], None).stdout,
        "kind v0.27.0-fake go1.23 linux/amd64\n"
    );
    assert_eq!(
        f.ok("kubectl", &["version", "--client"], None).stdout,
        "Client Version: v1.32.0-fake\n"
    );
    let v = f
        .ok("kubectl", &["version", "--client", "-o", "json"], None)
        .json();
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.32.0-fake");
    let direct = f.run_with(
        {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fake-kube"));
            c.args(["kind", "version"]).env("FAKE_KUBE_STATE", &f.state);
            c
        },
        None,
    );
    assert_eq!(direct.code, 0);
    let out = f.run("kubectl", &["frobnicate", "--now"], None);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "fake-kubectl: unsupported command: frobnicate --now\n")
    );
    let calls = f.calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0]["tool"], "kind");
    assert_eq!(calls[0]["argv"], serde_json::json!(["version"]));
    assert_eq!(calls[0]["env"]["KIND_EXPERIMENTAL_PROVIDER"], "podman");
    assert_eq!(
        calls[0]["env"]["KUBECONFIG"],
        f.kubeconfig.display().to_string()
    );
    assert!(calls[0]["end_ms"].as_u64() >= calls[0]["start_ms"].as_u64());
    assert!(calls[0].get("stdin").is_none());
    assert_eq!(calls[4]["exit_code"], 1);
}

#[test]
fn concurrent_calls_log_whole_lines() {
    let f = fake("concurrent");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = f.command("kubectl", &["version", "--client", &format!("--v={i}")]);
            c.stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(f.calls().len(), 8);
}

#[test]
fn no_cluster_means_connection_refused() {
    let f = fake("refused");
    let out = f.run("kubectl", &["get", "pods", "-o", "json"], None);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "The connection to the server localhost:8080 was refused - did you specify the right host or port?\n");
    let out = f.run("kind", &["get", "clusters"], None);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "No kind clusters found.\n")
    );
    let out = f.run(
        "kind",
        &["load", "image-archive", "x.tar", "--name", "nope"],
        None,
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "ERROR: no nodes found for cluster \"nope\"\n")
    );
}

#[test]
fn host_port_in_use_fails_create() {
    let f = fake("busyport");
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = f.write_kind_config("busy", 30080, port);
    let out = f.run(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("0.0.0.0:{port}: bind: address already in use")),
        "{out:?}"
    );
    assert!(!f.state.join("clusters/busy").exists());
}

const STACK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: localhost/web:t1
        imagePullPolicy: Never
        envFrom: [{secretRef: {name: creds}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: demo}
stringData: {TOKEN: abc}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
"#;

#[test]
fn cluster_lifecycle_without_podman() {
    let f = fake("lifecycle");
    let cfg = f.write_kind_config("life", 30080, free_port());
    let out = f.ok(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            "life",
            "--config",
            cfg.to_str().unwrap(),
            "--wait",
            "60s",
        ],
        None,
    );
    assert!(
        out.stderr
            .starts_with("Creating cluster \"life\" ...\n ✓ Ensuring node image"),
        "{out:?}"
    );
    let kc = std::fs::read_to_string(&f.kubeconfig).unwrap();
    assert!(
        kc.contains("current-context: kind-life")
            && kc.contains("server: \"https://127.0.0.1:6443\"")
            || kc.contains("server: https://127.0.0.1:6443"),
        "{kc}"
    );
    let again = f.run(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            "life",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"life\""), "{again:?}");
    assert_eq!(f.ok("kind", &["get", "clusters"], None).stdout, "life\n");

    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(nodes["items"][0]["metadata"]["name"], "life-control-plane");
    assert_eq!(
        nodes["items"][0]["metadata"]["labels"]["io.kubernaut/test"],
        "fake-kube"
    );

    let out = f.ok("kubectl", &["apply", "-f", "-"], Some(STACK));
    assert_eq!(out.stdout, "namespace/demo created\nsecret/creds created\nservice/web created\ndeployment.apps/web created\n");
    let out = f.ok("kubectl", &["apply", "-f", "-"], Some(STACK));
    assert!(
        out.stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{out:?}"
    );
    let apply_call = f
        .calls()
        .into_iter()
        .find(|c| c["argv"][0] == "apply")
        .unwrap();
    assert_eq!(apply_call["stdin"], STACK);

    // The image was never loaded.
    let pods = f
        .ok(
            "kubectl",
            &["get", "pods", "-n", "demo", "-o", "json"],
            None,
        )
        .json();
    let web = pod(&pods, "web-fake-0").unwrap();
    assert_eq!(web["status"]["phase"], "Pending");
    assert_eq!(
        web["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImageNeverPull"
    );

    let archive = f.dir.join("web.tar");
    manifest_only_archive(&archive, &["localhost/web:t1"]);
    f.ok(
        "kind",
        &[
            "load",
            "image-archive",
            archive.to_str().unwrap(),
            "--name",
            "life",
        ],
        None,
    );
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        "localhost/web:t1"
    );
    // podman is `true` here, so the container never appears.
    let pods = f
        .ok(
            "kubectl",
            &["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"],
            None,
        )
        .json();
    assert_eq!(
        pod(&pods, "web-fake-0").unwrap()["status"]["containerStatuses"][0]["state"]["waiting"]
            ["reason"],
        "ContainerCreating"
    );
    let none = f
        .ok(
            "kubectl",
            &["get", "pods", "-n", "demo", "-l", "app=db", "-o", "json"],
            None,
        )
        .json();
    assert_eq!(none["items"], serde_json::json!([]));
    let d = f
        .ok(
            "kubectl",
            &["get", "deployment", "web", "-n", "demo", "-o", "json"],
            None,
        )
        .json();
    assert_eq!(
        (
            d["kind"].as_str(),
            d["status"]["unavailableReplicas"].as_i64()
        ),
        (Some("Deployment"), Some(1))
    );
    let svc = f
        .ok("kubectl", &["get", "svc", "-n", "demo", "-o", "json"], None)
        .json();
    assert_eq!(svc["items"][0]["spec"]["ports"][0]["nodePort"], 30080);
    let s = f
        .ok(
            "kubectl",
            &["get", "secrets", "-n", "demo", "-o", "json"],
            None,
        )
        .json();
    assert_eq!(s["items"][0]["data"]["TOKEN"], "YWJj");
    let missing = f.run("kubectl", &["get", "pod", "nope", "-n", "demo"], None);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (1, "Error from server (NotFound): pods \"nope\" not found\n")
    );
    let table = f.ok("kubectl", &["get", "pods", "-n", "demo"], None);
    assert!(
        table.stdout.starts_with("NAME") && table.stdout.contains("web-fake-0"),
        "{table:?}"
    );

    // Errors and injected failures.
    let bad = f.run(
        "kubectl",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n"),
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.starts_with("error: resource mapping not found for name: \"w\" namespace: \"\" from \"STDIN\": no matches for kind \"Widget\""), "{bad:?}");
    let mut cmd = f.command("kubectl", &["apply", "-f", "-"]);
    cmd.env("FAKE_KUBE_FAIL", "kubectl-apply");
    let injected = f.run_with(cmd, Some(STACK));
    assert_eq!(injected.code, 1);
    assert!(injected.stderr.contains("injected failure kubectl-apply"));
    let mut cmd = f.command("kubectl", &["get", "pods"]);
    cmd.env("FAKE_KUBE_FAIL", "kubectl-get");
    assert_eq!(f.run_with(cmd, None).code, 1);

    let ns = f.ok("kubectl", &["get", "namespaces", "-o", "name"], None);
    assert!(
        ns.stdout.contains("namespace/demo\n") && ns.stdout.contains("namespace/default\n"),
        "{ns:?}"
    );
    assert_eq!(
        f.ok("kubectl", &["delete", "namespace", "demo"], None)
            .stdout,
        "namespace \"demo\" deleted\n"
    );
    let gone = f.run("kubectl", &["delete", "namespace", "demo"], None);
    assert_eq!(
        gone.stderr,
        "Error from server (NotFound): namespaces \"demo\" not found\n"
    );

    let exported = f.dir.join("logs");
    let out = f.ok(
        "kind",
        &[
            "export",
            "logs",
            exported.to_str().unwrap(),
            "--name",
            "life",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), exported.display().to_string());
    let dump: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("fake-kube-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dump["cluster"]["name"], "life");

    let out = f.ok("kind", &["delete", "cluster", "--name", "life"], None);
    assert!(
        out.stderr.starts_with("Deleting cluster \"life\" ..."),
        "{out:?}"
    );
    assert!(!f.state.join("clusters/life").exists());
    assert!(!std::fs::read_to_string(&f.kubeconfig)
        .unwrap()
        .contains("kind-life"));
    let out = f.run("kubectl", &["get", "pods"], None);
    assert!(out.stderr.contains("was refused"), "{out:?}");
    f.ok("kind", &["delete", "cluster", "--name", "life"], None);
}

#[test]
fn kind_config_errors() {
    let f = fake("kindcfg");
    let path = f.dir.join("bad.yaml");
    std::fs::write(&path, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n").unwrap();
    let out = f.run(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            "x",
            "--config",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "ERROR: failed to create cluster: unknown apiVersion: kind.x-k8s.io/v1alpha3\n"
        )
    );
    let mut cmd = f.command("kind", &["create", "cluster", "--name", "x"]);
    cmd.env("FAKE_KUBE_FAIL", "kind-create");
    let out = f.run_with(cmd, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("injected failure kind-create"),
        "{out:?}"
    );
    assert!(!f.state.join("clusters/x").exists());
}

#[test]
fn load_docker_image_needs_the_docker_provider() {
    let f = fake("dockerimage");
    f.ok("kind", &["create", "cluster", "--name", "dock"], None);
    let mut cmd = f.command(
        "kind",
        &["load", "docker-image", "localhost/app:1", "--name", "dock"],
    );
    cmd.env("KIND_EXPERIMENTAL_PROVIDER", "podman");
    let out = f.run_with(cmd, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("ERROR: image: \"localhost/app:1\" not present locally"),
        "{out:?}"
    );
    // Without the podman provider, local storage stands in for docker's (podman is `true` here).
    f.ok(
        "kind",
        &["load", "docker-image", "localhost/app:1", "--name", "dock"],
        None,
    );
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"][0]["names"][0],
        "localhost/app:1"
    );
    f.ok("kind", &["delete", "cluster", "--name", "dock"], None);
}
