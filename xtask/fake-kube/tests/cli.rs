//! The fake's command lines without podman (`FAKE_KUBE_PODMAN=true`: every podman call succeeds
//! and does nothing, so no pod container ever appears), so these run in plain `cargo test`.

mod common;

use common::{free_port, manifest_only_archive, pod, Fake};
use serde_json::{json, Value};
use std::io::Write;
use std::process::Stdio;

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
        ("kind", &["build", "node-image"]),
        ("kubectl", &["port-forward", "pod/web-fake-0", "8080"]),
    ] {
        let out = f.run(tool, args, None);
        let msg = format!("fake-{tool}: unsupported command: {}\n", args.join(" "));
        assert_eq!((out.code, out.stderr), (1, msg));
    }
    let calls = f.calls();
    assert_eq!(calls.len(), 10);
    assert_eq!(calls[0]["tool"], "kind");
    assert_eq!(calls[0]["argv"], serde_json::json!(["version"]));
    assert_eq!(calls[0]["env"]["KIND_EXPERIMENTAL_PROVIDER"], "podman");
    assert_eq!(
        calls[0]["env"]["KUBECONFIG"],
        f.kubeconfig.display().to_string()
    );
    assert!(calls[0]["end_ms"].as_u64() >= calls[0]["start_ms"].as_u64());
    assert!(calls[0].get("stdin").is_none());
    assert_eq!(calls[9]["exit_code"], 1);
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
    let volumes = STACK.replace("envFrom:", "volumeDevices: []\n        envFrom:");
    let bad = f.run("kubectl", &["apply", "-f", "-"], Some(&volumes));
    assert!(
        bad.code == 1
            && bad.stderr.contains(
                "fake-kube: spec.template.spec.containers[].volumeDevices: not supported"
            ),
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

/// What the xtask's manifests use, each field once.
const FULL: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
    apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: demo}\ntype: Opaque\nstringData: {password: pw}\n---\n\
    apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: main, port: 8080, targetPort: 8080, protocol: TCP, nodePort: 30080}]\n---\n\
    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo, labels: {app: web}}\nspec:\n  replicas: 1\n  strategy: {type: Recreate}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 10\n      containers:\n      - name: web\n        image: localhost/web:t1\n        imagePullPolicy: Never\n        args: [serve]\n        ports: [{name: main, containerPort: 8080}]\n        env: [{name: A, value: b}, {name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n        envFrom: [{secretRef: {name: db}}]\n        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1, failureThreshold: 60}\n        livenessProbe: {httpGet: {path: /healthz, port: 8080, scheme: HTTP}}\n---\n\
    apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: demo}\nspec:\n  backoffLimit: 3\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: 'localhost/web:t1', args: [migrate]}]\n";

fn names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().unwrap();
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_checks_like_the_api_server() {
    let f = fake("apply");
    f.ok("kind", &["create", "cluster", "--name", "ap"], None);
    let apply = |text: &str| f.run("kubectl", &["apply", "-f", "-"], Some(text));
    assert_eq!(apply(FULL).stdout, "namespace/demo created\nsecret/db created\nservice/web created\ndeployment.apps/web created\njob.batch/migrate created\n");
    let again = apply(FULL).stdout;
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    let changed = apply(&FULL.replace("web:t1", "web:t2")).stdout;
    assert_eq!(
        changed.lines().nth(3),
        Some("deployment.apps/web configured")
    );
    apply(FULL);
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n";
    assert_eq!(
        apply(cm).stdout,
        "configmap/x created\n",
        "the default namespace exists"
    );
    // One error each, on stderr, exit code 1; the other documents are applied.
    let error = |text: &str| {
        let out = apply(text);
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr.trim_end().to_string()
    };
    let e = error("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n");
    assert_eq!(e, "error: resource mapping not found for name: \"x\" namespace: \"\" from \"STDIN\": no matches for kind \"Ingress\" in version \"networking.k8s.io/v1\"\nensure CRDs are installed first");
    let e = error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nope}\n");
    assert_eq!(e, "Error from server (NotFound): error when creating \"STDIN\": namespaces \"nope\" not found");
    assert!(error("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
        .ends_with("resource name may not be empty"));
    // What is not emulated is refused.
    let e = error(&FULL.replace("terminationGracePeriodSeconds: 10", "hostNetwork: true"));
    assert_eq!(e, "The Deployment \"web\" is invalid: fake-kube: spec.template.spec.hostNetwork: not supported by fake-kube (see xtask/fake-kube/README.md)");
    let e = error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\ndata: {k: dg==}\n",
    );
    assert!(e.contains("fake-kube: data: not supported"), "{e}");
    let e = error(&FULL.replace("type: NodePort", "type: LoadBalancer"));
    assert!(e.contains("fake-kube: spec.type: \"LoadBalancer\" is not supported by fake-kube (only ClusterIP NodePort)"), "{e}");
    let e = error(&FULL.replace("replicas: 1", "replicas: 2"));
    assert!(e.contains("spec.replicas: \"2\" is not supported"), "{e}");
    let e = error(&FULL.replace("restartPolicy: Never", "restartPolicy: OnFailure"));
    assert!(
        e.contains("restartPolicy: \"OnFailure\" is not supported"),
        "{e}"
    );
    let e = error(&FULL.replace("secretKeyRef", "fieldRef"));
    assert!(
        e.contains(
            "fake-kube: spec.template.spec.containers[].env[].valueFrom.fieldRef: not supported"
        ),
        "{e}"
    );
    let e = error(&FULL.replace(
        "{path: /readyz, port: 8080}",
        "{path: /readyz, port: 8080, scheme: HTTPS}",
    ));
    assert!(
        e.contains("readinessProbe.httpGet.scheme: not supported"),
        "{e}"
    );
    // Checks like the API server's.
    let e = error(&FULL.replace(
        "metadata: {labels: {app: web}}",
        "metadata: {labels: {app: x}}",
    ));
    assert!(
        e.contains("`selector` does not match template `labels`"),
        "{e}"
    );
    let e = error(&FULL.replace("password: pw", "port: 8080"));
    assert_eq!(e, "The Secret \"db\" is invalid: stringData.port: Invalid value: 8080: must be a string (quote it)");
    let e = error(&FULL.replace("targetPort: 8080,", "targetPort: 9090,"));
    assert!(e.contains("targetPort 9090 differs from port 8080"), "{e}");
    let e = error(&FULL.replace("nodePort: 30080", "nodePort: 8080"));
    assert!(e.contains("provided port is not in the valid range"), "{e}");
    let e = error(&FULL.replace(
        "{name: web, namespace: demo}",
        "{name: web2, namespace: demo}",
    ));
    assert!(
        e.contains("30080: provided port is already allocated"),
        "{e}"
    );
    let e = error(&FULL.replace("      restartPolicy: Never\n", ""));
    assert!(e.contains("restartPolicy: Required value"), "{e}");
    let job = "containers: [{name: m, image: 'localhost/web:t1', args: [migrate]}]";
    let e = error(&FULL.replace(job, "containers: [{name: m}]"));
    assert!(
        e.ends_with("spec.template.spec.containers[0].image: Required value"),
        "{e}"
    );
    let e = error(&FULL.replace(job, "containers: []"));
    assert!(e.contains("exactly one container per pod, not 0"), "{e}");
}

#[test]
fn contexts_select_clusters() {
    let f = fake("contexts");
    f.ok("kind", &["create", "cluster", "--name", "ctx-a"], None);
    f.ok("kind", &["create", "cluster", "--name", "ctx-b"], None);
    let contexts = ["config", "get-contexts", "-o", "name"];
    assert_eq!(
        f.ok("kubectl", &contexts, None).stdout,
        "kind-ctx-a\nkind-ctx-b\n"
    );
    let node = |first: &[&str]| {
        let args = [first, &["get", "nodes", "-o", "json"]].concat();
        f.ok("kubectl", &args, None).json()["items"][0]["metadata"]["name"].clone()
    };
    assert_eq!(
        node(&[]),
        "ctx-b-control-plane",
        "the current context: the last created"
    );
    assert_eq!(node(&["--context", "kind-ctx-a"]), "ctx-a-control-plane");
    assert_eq!(node(&["--context=kind-ctx-b"]), "ctx-b-control-plane");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: only-in-a}\n";
    f.ok(
        "kubectl",
        &["--context", "kind-ctx-a", "create", "-f", "-"],
        Some(cm),
    );
    let cms = |ctx: &str| {
        names(
            &f.ok(
                "kubectl",
                &["--context", ctx, "get", "configmaps", "-o", "json"],
                None,
            )
            .json(),
        )
    };
    assert_eq!(
        (cms("kind-ctx-a"), cms("kind-ctx-b")),
        (vec!["only-in-a".to_string()], vec![])
    );
    // kubectl words a missing context two ways.
    let out = f.run(
        "kubectl",
        &["--context", "nope", "get", "pods", "-o", "json"],
        None,
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "Error in configuration: context was not found for specified context: nope\n"
        )
    );
    for verb in ["apply", "create"] {
        let out = f.run("kubectl", &[verb, "-f", "-", "--context", "nope"], Some(cm));
        assert_eq!(
            (out.code, out.stderr.as_str()),
            (1, "error: context \"nope\" does not exist\n")
        );
    }
    f.ok("kind", &["delete", "cluster", "--name", "ctx-a"], None);
    assert_eq!(f.ok("kubectl", &contexts, None).stdout, "kind-ctx-b\n");
    f.ok("kind", &["delete", "cluster", "--name", "ctx-b"], None);
    assert_eq!(f.ok("kubectl", &contexts, None).stdout, "");
}

#[test]
fn configmaps_are_created_once() {
    let f = fake("configmaps");
    f.ok("kind", &["create", "cluster", "--name", "cm"], None);
    let slot = |n: u32| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slot-{n}\n  labels: {{io.kubernaut/slot: \"true\", n: \"{n}\"}}\ndata: {{run: r{n}}}\n")
    };
    let create = ["create", "-n", "kube-public", "-f", "-"];
    assert_eq!(
        f.ok("kubectl", &create, Some(&slot(1))).stdout,
        "configmap/slot-1 created\n"
    );
    let again = f.run("kubectl", &create, Some(&slot(1)));
    assert_eq!((again.code, again.stderr.as_str()), (1, "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"slot-1\" already exists\n"));
    // Concurrent creates of one name: exactly one wins.
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let mut c = f.command("kubectl", &create);
            c.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = c.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(slot(2).as_bytes())
                .unwrap();
            child
        })
        .collect();
    let won = racers
        .into_iter()
        .filter_map(|mut c| c.wait().unwrap().success().then_some(()))
        .count();
    assert_eq!(won, 1);
    // The kind local-registry pattern's ConfigMap, applied.
    let hosting = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local-registry-hosting, namespace: kube-public}\ndata:\n  localRegistryHosting.v1: |\n    host: \"localhost:5001\"\n";
    f.ok("kubectl", &["apply", "-f", "-"], Some(hosting));
    let get = |sel: &[&str]| {
        let args = [
            &["get", "configmaps", "-n", "kube-public", "-o", "json"][..],
            sel,
        ]
        .concat();
        f.ok("kubectl", &args, None).json()
    };
    assert_eq!(
        names(&get(&[])),
        ["local-registry-hosting", "slot-1", "slot-2"]
    );
    assert_eq!(
        names(&get(&["-l", "io.kubernaut/slot"])),
        ["slot-1", "slot-2"]
    );
    let two = get(&["-l", "io.kubernaut/slot=true,n=2"]);
    assert_eq!(
        (names(&two), two["kind"].clone()),
        (vec!["slot-2".to_string()], json!("List"))
    );
    let item = &two["items"][0];
    assert_eq!(
        (&item["data"]["run"], &item["metadata"]["namespace"]),
        (&json!("r2"), &json!("kube-public"))
    );
    let ts = item["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    let hosting = &get(&[])["items"][0]["data"]["localRegistryHosting.v1"];
    assert_eq!(hosting, "host: \"localhost:5001\"\n");
    let delete = ["delete", "configmap", "slot-1", "-n", "kube-public"];
    assert_eq!(
        f.ok("kubectl", &delete, None).stdout,
        "configmap \"slot-1\" deleted\n"
    );
    let gone = f.run("kubectl", &delete, None);
    assert_eq!(
        (gone.code, gone.stderr.as_str()),
        (
            1,
            "Error from server (NotFound): configmaps \"slot-1\" not found\n"
        )
    );
    let ignored = f.ok(
        "kubectl",
        &[&delete[..], &["--ignore-not-found"]].concat(),
        None,
    );
    assert_eq!((ignored.stdout.as_str(), ignored.stderr.as_str()), ("", ""));
    assert_eq!(
        f.ok("kubectl", &create, Some(&slot(1))).stdout,
        "configmap/slot-1 created\n"
    );
}

#[test]
fn namespaces_are_selected_by_label_and_deleted() {
    let f = fake("namespaces");
    f.ok("kind", &["create", "cluster", "--name", "nsc"], None);
    let runs = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: run-a\n  labels: {io.kubernaut/run: a, io.kubernaut/consumer: gw}\n  annotations: {io.kubernaut/ttl: 2h}\n---\n\
        apiVersion: v1\nkind: Namespace\nmetadata:\n  name: run-b\n  labels: {io.kubernaut/run: b}\n";
    // An apply that changes no pod does not ask podman (whose locks can be slow to get).
    let mut cmd = f.command("kubectl", &["apply", "-f", "-"]);
    cmd.env("FAKE_KUBE_PODMAN", "false");
    let out = f.run_with(cmd, Some(runs));
    assert_eq!(out.code, 0, "{out:?}");
    let in_a = STACK.split_once("---").unwrap().1.replace("demo", "run-a");
    f.ok("kubectl", &["apply", "-f", "-"], Some(&in_a));
    let get = |sel: &[&str]| {
        let args = [&["get", "namespaces", "-o", "json"][..], sel].concat();
        f.ok("kubectl", &args, None).json()
    };
    let all = get(&[]);
    assert_eq!(
        names(&all),
        [
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "run-a",
            "run-b"
        ]
    );
    assert_eq!(names(&get(&["-l", "io.kubernaut/run"])), ["run-a", "run-b"]);
    let a = get(&["-l", "io.kubernaut/run=a,io.kubernaut/consumer=gw"]);
    assert_eq!(names(&a), ["run-a"]);
    let ns = &a["items"][0];
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"io.kubernaut/run": "a", "io.kubernaut/consumer": "gw", "kubernetes.io/metadata.name": "run-a"})
    );
    assert_eq!(ns["metadata"]["annotations"]["io.kubernaut/ttl"], "2h");
    assert_eq!(
        (&ns["kind"], &ns["status"]["phase"]),
        (&json!("Namespace"), &json!("Active"))
    );
    assert!(ns["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        names(&get(&["-l", "kubernetes.io/metadata.name=default"])),
        ["default"]
    );
    let pods = |ns: &str| {
        names(
            &f.ok("kubectl", &["get", "pods", "-n", ns, "-o", "json"], None)
                .json(),
        )
    };
    assert_eq!(pods("run-a"), ["web-fake-0"]);

    let delete = [
        "delete",
        "namespace",
        "run-a",
        "--wait=true",
        "--timeout=120s",
    ];
    assert_eq!(
        f.ok("kubectl", &delete, None).stdout,
        "namespace \"run-a\" deleted\n"
    );
    assert_eq!(names(&get(&["-l", "io.kubernaut/run"])), ["run-b"]);
    assert!(pods("run-a").is_empty());
    let secret = f.run("kubectl", &["apply", "-f", "-"], Some(&in_a));
    assert!(
        secret.stderr.contains("namespaces \"run-a\" not found"),
        "{secret:?}"
    );
    let gone = f.run("kubectl", &delete, None);
    assert_eq!(
        (gone.code, gone.stderr.as_str()),
        (
            1,
            "Error from server (NotFound): namespaces \"run-a\" not found\n"
        )
    );
    f.ok(
        "kubectl",
        &["delete", "namespace", "run-a", "--ignore-not-found"],
        None,
    );
    let kept = f.run("kubectl", &["delete", "ns", "default"], None);
    assert_eq!(kept.stderr, "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted\n");
    let bad = f.run(
        "kubectl",
        &["delete", "namespace", "run-b", "--timeout=soon"],
        None,
    );
    assert_eq!(bad.stderr, "error: invalid argument \"soon\" for \"--timeout\" flag: time: invalid duration \"soon\"\n");
    assert_eq!(names(&get(&["-l", "io.kubernaut/run"])), ["run-b"]);
}

#[test]
fn registry_patches_pulls_and_docker_loads_are_recorded() {
    let f = fake("registry");
    let cfg = f.dir.join("kind.yaml");
    let patch = "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"localhost:5001\"]\n  endpoint = [\"http://kind-registry:5000\"]";
    let text = format!(
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n- |-\n{}\n",
        patch
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    std::fs::write(&cfg, text).unwrap();
    f.ok(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            "reg",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(f.state.join("clusters/reg/cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["containerd_patches"], json!([patch]));

    // A pod whose image is in no node is pulled (here `podman` is `true`: the pull succeeds).
    let image = "localhost:5001/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let deploy = STACK
        .replace("localhost/web:t1", image)
        .replace("imagePullPolicy: Never", "imagePullPolicy: IfNotPresent");
    f.ok("kubectl", &["apply", "-f", "-"], Some(&deploy));
    let apply = f
        .calls()
        .into_iter()
        .find(|c| c["argv"][0] == "apply")
        .unwrap();
    assert_eq!(
        apply["pulls"],
        json!([{"image": image, "reference": image, "ok": true, "message": ""}])
    );
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    assert_eq!(
        nodes["items"][0]["status"]["images"],
        json!([{"names": [image]}])
    );

    let junk = f.dir.join("junk.tar");
    std::fs::write(&junk, [0u8; 1024]).unwrap();
    let out = f.run(
        "kind",
        &[
            "load",
            "image-archive",
            junk.to_str().unwrap(),
            "--name",
            "reg",
        ],
        None,
    );
    assert!(
        out.code == 1
            && out
                .stderr
                .contains("junk.tar is not a docker-archive (no manifest.json)"),
        "{out:?}"
    );

    // kind load docker-image asks the docker client (FAKE_KUBE_DOCKER) for each image first.
    let load = [
        "load",
        "docker-image",
        "localhost/a:1",
        "localhost/b:2",
        "--name",
        "reg",
    ];
    let mut cmd = f.command("kind", &load);
    cmd.env("FAKE_KUBE_DOCKER", "false");
    let out = f.run_with(cmd, None);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "ERROR: image: \"localhost/a:1\" not present locally\n")
    );
    let docker_true = |f: &Fake| {
        let mut cmd = f.command("kind", &load);
        cmd.env("FAKE_KUBE_DOCKER", "true");
        f.run_with(cmd, None)
    };
    let out = docker_true(&f);
    assert_eq!(out.stderr, "Image: \"localhost/a:1\" with ID \"\" not yet present on node \"reg-control-plane\", loading...\nImage: \"localhost/b:2\" with ID \"\" not yet present on node \"reg-control-plane\", loading...\n");
    let out = docker_true(&f);
    assert!(
        out.stderr.starts_with(
            "Image: \"localhost/a:1\" with ID \"\" found to be already present on all nodes.\n"
        ),
        "{out:?}"
    );
    // A load no pod waits for does not ask podman (whose locks can be slow to get).
    let other = f.dir.join("other.tar");
    manifest_only_archive(&other, &["localhost/other:1"]);
    let mut cmd = f.command(
        "kind",
        &[
            "load",
            "image-archive",
            other.to_str().unwrap(),
            "--name",
            "reg",
        ],
    );
    cmd.env("FAKE_KUBE_PODMAN", "false");
    let out = f.run_with(cmd, None);
    assert_eq!(out.code, 0, "{out:?}");
    let nodes = f
        .ok("kubectl", &["get", "nodes", "-o", "json"], None)
        .json();
    let names: Vec<&str> = nodes["items"][0]["status"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["names"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["localhost/a:1", "localhost/b:2", "localhost/other:1", image]
    );
}

#[test]
fn port_forward_fails_like_kubectl() {
    let f = fake("forward");
    f.ok("kind", &["create", "cluster", "--name", "pf"], None);
    let lonely = "---\napiVersion: v1\nkind: Service\nmetadata: {name: lonely, namespace: demo}\nspec:\n  selector: {app: none}\n  ports: [{port: 80}]\n";
    f.ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&format!("{STACK}{lonely}")),
    );
    let forward = |args: &[&str]| {
        let out = f.run(
            "kubectl",
            &[&["-n", "demo", "port-forward"][..], args].concat(),
            None,
        );
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr
    };
    assert_eq!(
        forward(&["svc/nope", ":80"]),
        "Error from server (NotFound): services \"nope\" not found\n"
    );
    assert_eq!(
        forward(&["svc/web", ":9999"]),
        "error: Service web does not have a service port 9999\n"
    );
    // The image was never loaded: the pod is Pending.
    let not_running =
        "error: unable to forward port because pod is not running. Current status=Pending\n";
    assert_eq!(forward(&["service/web", "18080:8080"]), not_running);
    let start = std::time::Instant::now();
    let out = forward(&[
        "svc/lonely",
        "80",
        "--pod-running-timeout=1s",
        "--address",
        "127.0.0.1",
    ]);
    assert_eq!(out, "error: timed out waiting for the condition\n");
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

/// A stand-in engine that records every argv (words separated by \x1f, one call a line) and
/// succeeds, printing nothing.
fn recording(tag: &str) -> (Fake, std::path::PathBuf) {
    let f = Fake::new(tag);
    let (script, log) = (f.dir.join("engine.sh"), f.dir.join("engine.log"));
    let text = format!(
        "#!/bin/sh\nprintf '%s\\037' \"$@\" >> '{0}'\necho >> '{0}'\n",
        log.display()
    );
    std::fs::write(&script, text).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&script, mode).unwrap();
    let script = script.to_str().unwrap().to_string();
    (f.with_env("FAKE_KUBE_PODMAN", &script), log)
}

/// The `podman run` argv of each container of the pod created so far (the engine never shows
/// one, so every look creates it again).
fn runs(log: &std::path::Path, pod: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let calls = text
        .lines()
        .map(|l| l.split('\x1f').map(String::from).collect::<Vec<_>>());
    calls
        .filter(|a| a[0] == "run" && a.windows(2).any(|w| w == ["--hostname", pod]))
        .map(|mut a| {
            a.pop();
            a
        })
        .collect()
}

const MOUNTS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: llm, namespace: demo}\nspec:\n  selector: {matchLabels: {app: llm}}\n  template:\n    metadata: {labels: {app: llm}}\n    spec:\n      containers:\n      - name: llm\n        image: localhost/web:t1\n        imagePullPolicy: Never\n        command: [python3, /opt/mock llm.py]\n        args: [--responses, /etc/mock/responses.json, '']\n        volumeMounts:\n        - {name: xtask-files, mountPath: /etc/mock/responses.json, subPath: m0, readOnly: true}\n        - {name: xtask-files, mountPath: /etc/migrations, subPath: m1, readOnly: true}\n      volumes:\n      - name: xtask-files\n        configMap:\n          name: llm-files\n          items: [{key: m0, path: m0}, {key: m1-001.sql, path: m1/001.sql}]\n---\n\
    apiVersion: batch/v1\nkind: Job\nmetadata: {name: probe, namespace: demo}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: p, image: 'localhost/web:t1', imagePullPolicy: Never, command: [/bin/probe]}]\n";
const FILES: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: llm-files, namespace: demo}\ndata: {m0: '{\"a\": 1}', m1-001.sql: 'select 1;', unused: x}\n";

#[test]
fn commands_args_and_config_map_volumes() {
    let (f, log) = recording("volumes");
    f.ok("kind", &["create", "cluster", "--name", "vol"], None);
    let archive = f.dir.join("web.tar");
    manifest_only_archive(&archive, &["localhost/web:t1"]);
    let load = [
        "load",
        "image-archive",
        archive.to_str().unwrap(),
        "--name",
        "vol",
    ];
    f.ok("kind", &load, None);
    // Without its ConfigMap the pod waits, like kubelet's failing mount; the Job starts.
    f.ok("kubectl", &["apply", "-f", "-"], Some(MOUNTS));
    let get = ["-n", "demo", "get", "pods", "-o", "json"];
    let llm = pod(&f.ok("kubectl", &get, None).json(), "llm-fake-0")
        .unwrap()
        .clone();
    assert_eq!(
        llm["status"]["containerStatuses"][0]["state"]["waiting"],
        json!({"reason": "ContainerCreating",
        "message": "MountVolume.SetUp failed for volume \"xtask-files\" : configmap \"llm-files\" not found"})
    );
    let job = &runs(&log, "probe-fake-0")[0];
    let tail = &job[job.len() - 5..];
    assert_eq!(tail[..2], ["--entrypoint", "[\"/bin/probe\"]"], "{job:?}");
    assert_eq!(
        tail[4], "localhost/web:t1",
        "no args: the image's CMD is dropped"
    );
    // The ConfigMap applied later: the pod starts, its files laid out as the items say.
    f.ok("kubectl", &["apply", "-f", "-"], Some(FILES));
    let all = runs(&log, "llm-fake-0");
    assert_eq!(all.len(), 1, "{all:?}");
    let run = &all[0];
    let dir = f.state.join("clusters/vol/files/demo_llm-fake-0");
    let volumes: Vec<&str> = run
        .windows(2)
        .filter(|w| w[0] == "--volume")
        .map(|w| w[1].as_str())
        .collect();
    let vol = dir.join("xtask-files");
    assert_eq!(
        volumes,
        [
            format!("{}/m0:/etc/mock/responses.json:ro", vol.display()),
            format!("{}/m1:/etc/migrations:ro", vol.display())
        ]
    );
    let at = run.iter().position(|w| w == "--entrypoint").unwrap();
    assert_eq!(
        run[at + 1],
        r#"["python3","/opt/mock llm.py"]"#,
        "one word, spaces kept"
    );
    assert_eq!(
        run[run.len() - 4..],
        [
            "localhost/web:t1",
            "--responses",
            "/etc/mock/responses.json",
            ""
        ]
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("m0")).unwrap(),
        "{\"a\": 1}"
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("m1/001.sql")).unwrap(),
        "select 1;"
    );
    assert!(!vol.join("unused").exists(), "only the items");
    // A changed ConfigMap changes the container's spec hash (it is recreated with new files).
    f.ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&FILES.replace("select 1", "select 2")),
    );
    let all = runs(&log, "llm-fake-0");
    let hash = |a: &[String]| a[a.len() - 5].clone();
    assert_eq!(all.len(), 2);
    assert_ne!(hash(&all[0]), hash(&all[1]));
    assert_eq!(
        std::fs::read_to_string(vol.join("m1/001.sql")).unwrap(),
        "select 2;"
    );
    // A key the items name that the ConfigMap lacks.
    f.ok(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&FILES.replace("m1-001.sql", "m1-002.sql")),
    );
    let llm = pod(&f.ok("kubectl", &get, None).json(), "llm-fake-0")
        .unwrap()
        .clone();
    let msg = &llm["status"]["containerStatuses"][0]["state"]["waiting"]["message"];
    assert_eq!(msg, "MountVolume.SetUp failed for volume \"xtask-files\" : configmap references non-existent config key: m1-001.sql");
    // The files go with the pod's namespace.
    assert!(dir.is_dir(), "kept while the pod exists");
    f.ok("kubectl", &["delete", "namespace", "demo"], None);
    assert_eq!(
        std::fs::read_dir(f.state.join("clusters/vol/files"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn volume_refusals_and_checks() {
    let f = fake("volrefuse");
    f.ok("kind", &["create", "cluster", "--name", "vr"], None);
    let error = |from: &str, to: &str| {
        assert!(MOUNTS.contains(from), "{from}");
        let out = f.run(
            "kubectl",
            &["apply", "-f", "-"],
            Some(&MOUNTS.replace(from, to)),
        );
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr.trim_end().to_string()
    };
    let at = "The Deployment \"llm\" is invalid: ";
    let e = error(
        "      - name: xtask-files\n        configMap:",
        "      - name: xtask-files\n        emptyDir: {}\n        configMap:",
    );
    assert_eq!(e, format!("{at}fake-kube: spec.template.spec.volumes[].emptyDir: not supported by fake-kube (see xtask/fake-kube/README.md)"));
    let e = error(
        "name: llm-files\n",
        "name: llm-files\n          defaultMode: 420\n",
    );
    assert!(
        e.contains("fake-kube: spec.template.spec.volumes[].configMap.defaultMode: not supported"),
        "{e}"
    );
    let e = error("{key: m0, path: m0}", "{key: m0, path: m0, mode: 256}");
    assert!(e.contains("configMap.items[].mode: not supported"), "{e}");
    let e = error(
        "subPath: m0, readOnly: true",
        "subPath: m0, mountPropagation: None",
    );
    assert!(
        e.contains("volumeMounts[].mountPropagation: not supported"),
        "{e}"
    );
    let e = error(
        "        configMap:\n          name: llm-files\n",
        "        configMap:\n",
    );
    assert!(e.contains("fake-kube: spec.template.spec.volumes[0]: only configMap volumes that name their ConfigMap are supported"), "{e}");
    let e = error(
        "{name: xtask-files, mountPath: /etc/migrations",
        "{name: other, mountPath: /etc/migrations",
    );
    assert_eq!(
        e,
        format!("{at}spec.template.spec.containers[0].volumeMounts[1].name: Not found: \"other\"")
    );
    let e = error("subPath: m1,", "subPath: ../m1,");
    assert!(
        e.ends_with("volumeMounts[1].subPath: Invalid value: \"../m1\": must not contain '..'"),
        "{e}"
    );
    let e = error("path: m1/001.sql", "path: /m1/001.sql");
    assert!(
        e.ends_with(
            "configMap.items[1].path: Invalid value: \"/m1/001.sql\": must be a relative path"
        ),
        "{e}"
    );
    let e = error("mountPath: /etc/migrations, ", "");
    assert!(
        e.ends_with("volumeMounts[1].mountPath: Required value"),
        "{e}"
    );
    let e = error("args: [--responses,", "args: [--port, 8080,");
    assert!(
        e.ends_with("containers[0].args[1]: Invalid value: 8080: must be a string (quote it)"),
        "{e}"
    );
}
