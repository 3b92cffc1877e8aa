//! The fake's command lines without podman (`FAKE_KUBE_PODMAN=true`: every podman call succeeds
//! and does nothing, so no pod container ever appears), so these run in plain `cargo test`.

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
fn versions_unsupported_commands_and_the_call_log() {
    let f = fake("versions").with_env("KIND_EXPERIMENTAL_PROVIDER", "podman");
    assert_eq!(
        f.ok("kind", &["version"], None).stdout,
        "kind v0.27.0-fake go1.23 linux/amd64\n"
    );
    assert_eq!(
        f.ok("kubectl", &["version", "--client"], None).stdout,
        "Client Version: v1.32.0-fake\n"
    );
    let direct = f.run_with(
        {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fake-kube"));
            c.args(["kind", "version"]).env("FAKE_KUBE_STATE", &f.state);
            c
        },
        None,
    );
    assert_eq!(direct.code, 0);
    // What the xtask never runs is refused, not approximated.
    for (tool, args) in [
        ("kubectl", &["wait", "--for=condition=Ready", "pod/x"][..]),
        ("kubectl", &["rollout", "status", "deployment/x"]),
        ("kubectl", &["get", "pods"]),
        ("kubectl", &["get", "deployments", "-o", "json"]),
        ("kubectl", &["logs", "-l", "app in (a,b)"]),
        ("kind", &["load", "docker-image", "localhost/x:1"]),
    ] {
        let out = f.run(tool, args, None);
        let msg = format!("fake-{tool}: unsupported command: {}\n", args.join(" "));
        assert_eq!((out.code, out.stderr), (1, msg));
    }
    let calls = f.calls();
    assert_eq!(calls.len(), 9);
    assert_eq!(calls[0]["tool"], "kind");
    assert_eq!(calls[0]["argv"], serde_json::json!(["version"]));
    assert_eq!(calls[0]["env"]["KIND_EXPERIMENTAL_PROVIDER"], "podman");
    assert_eq!(
        calls[0]["env"]["KUBECONFIG"],
        f.kubeconfig.display().to_string()
    );
    assert!(calls[0]["end_ms"].as_u64() >= calls[0]["start_ms"].as_u64());
    assert!(calls[0].get("stdin").is_none());
    assert_eq!(calls[8]["exit_code"], 1);
}

#[test]
fn concurrent_calls_log_whole_lines() {
    let f = fake("concurrent");
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = f.command("kubectl", &["version", "--client"]);
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
fn host_ports_must_be_free_and_are_held_per_cluster() {
    let f = fake("ports");
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let busy = listener.local_addr().unwrap().port();
    let cfg = f.write_kind_config("busy", 30080, busy);
    let out = f.run(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("0.0.0.0:{busy}: bind: address already in use")),
        "{out:?}"
    );
    assert!(!f.state.join("clusters/busy").exists());

    // A port mapped by one fake cluster is held until it is deleted, as kind's node holds it.
    let port = free_port();
    let cfg = f.write_kind_config("a", 30080, port);
    let create_b = [
        "create",
        "cluster",
        "--name",
        "b",
        "--config",
        cfg.to_str().unwrap(),
    ];
    f.ok(
        "kind",
        &["create", "cluster", "--config", cfg.to_str().unwrap()],
        None,
    );
    let out = f.run("kind", &create_b, None);
    assert!(
        out.code == 1
            && out
                .stderr
                .contains(&format!(":{port}: bind: address already in use")),
        "{out:?}"
    );
    assert_eq!(f.ok("kind", &["get", "clusters"], None).stdout, "a\n");
    f.ok("kind", &["delete", "cluster", "--name", "a"], None);
    f.ok("kind", &create_b, None);
    f.ok("kind", &["delete", "cluster", "--name", "b"], None);
}

const STACK: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: demo}
stringData: {TOKEN: abc}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080, nodePort: 30080}]
---
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
"#;

#[test]
fn cluster_lifecycle_without_podman() {
    let f = fake("lifecycle");
    let cfg = f.write_kind_config("life", 30080, free_port());
    let create = [
        "create",
        "cluster",
        "--name",
        "life",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let out = f.ok("kind", &create, None);
    assert!(
        out.stderr
            .starts_with("Creating cluster \"life\" ...\n ✓ Ensuring node image"),
        "{out:?}"
    );
    let kc: Value = serde_json::from_str(&std::fs::read_to_string(&f.kubeconfig).unwrap()).unwrap();
    assert_eq!(kc["current-context"], "kind-life");
    let again = f.run("kind", &create, None);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"life\""), "{again:?}");
    assert_eq!(f.ok("kind", &["get", "clusters"], None).stdout, "life\n");
    let kc: Value = serde_json::from_str(
        &f.ok("kind", &["get", "kubeconfig", "--name", "life"], None)
            .stdout,
    )
    .unwrap();
    assert_eq!(kc["contexts"][0]["name"], "kind-life");

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
    let get_pods = ["--namespace", "demo", "get", "pods", "-o", "json"];
    let web = |f: &Fake| {
        pod(&f.ok("kubectl", &get_pods, None).json(), "web-fake-0")
            .unwrap()
            .clone()
    };
    let reason =
        |p: &Value| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
    assert_eq!(web(&f)["status"]["phase"], "Pending");
    assert_eq!(reason(&web(&f)), "ErrImageNeverPull");

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
    assert_eq!(reason(&web(&f)), "ContainerCreating");
    let described = f.ok(
        "kubectl",
        &["-n", "demo", "describe", "pods", "-l", "app=web"],
        None,
    );
    assert!(
        described.stdout.contains("Name:          web-fake-0")
            && described.stdout.contains("ContainerCreating"),
        "{described:?}"
    );
    let none = f.ok(
        "kubectl",
        &["-n", "demo", "describe", "pods", "-l", "app=db"],
        None,
    );
    assert_eq!(none.stdout, "No resources found in demo namespace.\n");
    let logs = f.run(
        "kubectl",
        &[
            "-n",
            "demo",
            "logs",
            "-l",
            "app=web",
            "--all-containers",
            "--tail",
            "100",
        ],
        None,
    );
    assert_eq!(
        (logs.code, logs.stderr.as_str()),
        (1, "Error from server (BadRequest): container \"web\" in pod \"web-fake-0\" is waiting to start: ContainerCreating\n")
    );

    // Errors and injected failures.
    let bad = f.run(
        "kubectl",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n"),
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.starts_with("error: resource mapping not found for name: \"w\" namespace: \"\" from \"STDIN\": no matches for kind \"Widget\""), "{bad:?}");
    let volumes = STACK.replace("envFrom:", "volumeMounts: []\n        envFrom:");
    let bad = f.run("kubectl", &["apply", "-f", "-"], Some(&volumes));
    assert!(
        bad.code == 1
            && bad
                .stderr
                .contains("fake-kube: spec.template.spec.containers[].volumeMounts: not supported"),
        "{bad:?}"
    );
    for (injection, tool, args) in [
        ("kubectl-apply", "kubectl", &["apply", "-f", "-"][..]),
        ("kubectl-get", "kubectl", &["get", "pods", "-o", "json"]),
        (
            "kind-export",
            "kind",
            &["export", "logs", "/nonexistent", "--name", "life"],
        ),
    ] {
        let mut cmd = f.command(tool, args);
        cmd.env("FAKE_KUBE_FAIL", injection);
        let out = f.run_with(cmd, Some(""));
        assert_eq!(
            (out.code, out.stderr),
            (
                1,
                format!("ERROR: fake-kube: injected failure {injection}\n")
            )
        );
    }

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
    assert_eq!(dump["pods"][0]["metadata"]["name"], "web-fake-0");

    let out = f.ok("kind", &["delete", "cluster", "--name", "life"], None);
    assert!(
        out.stderr.starts_with("Deleting cluster \"life\" ..."),
        "{out:?}"
    );
    assert!(!f.state.join("clusters/life").exists());
    assert!(!std::fs::read_to_string(&f.kubeconfig)
        .unwrap()
        .contains("kind-life"));
    let out = f.run("kubectl", &["get", "pods", "-o", "json"], None);
    assert!(out.stderr.contains("was refused"), "{out:?}");
    f.ok("kind", &["delete", "cluster", "--name", "life"], None);
}

#[test]
fn kind_config_errors_and_injected_create_failure() {
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
    cmd.env("FAKE_KUBE_FAIL", "kind-create")
        .env("FAKE_KIND_CREATE_DELAY_MS", "300");
    let start = std::time::Instant::now();
    let out = f.run_with(cmd, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("injected failure kind-create"),
        "{out:?}"
    );
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(300),
        "fails after the create delay"
    );
    assert!(!f.state.join("clusters/x").exists());
}
