//! Kept clusters (`cargo xtask cluster up`) and `e2e --cluster`: the fake kind/kubectl of
//! `xtask/fake-kube` (pods are real podman containers that pull from the registry for real),
//! a real registry (the `registry:2` stand-in from Debian's `docker-registry`), real
//! `podman push` and digests, real `skopeo`.
//!
//! One scenario, in order, on one kept cluster: a first run into the empty registry; two runs
//! at once (both pass; each sends under 5% of the first's bytes); a run killed with SIGKILL,
//! cleaned by `clean --orphans` (namespace, slot, registry tags) while a namespace without our
//! labels stays; the TTL sweep (another host's expired run goes, its unexpired one stays);
//! `cluster down`.

#![allow(clippy::disallowed_methods)] // tests drive the built binaries and tools directly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn xtask(args: &[&str], fakes: &FakeKube) -> Xtask {
    Xtask::new(args)
        .fakes(fakes)
        .timeout(Duration::from_secs(900))
}

/// `cluster down` when the test ends, whatever happened.
struct Down<'a>(&'a str, &'a FakeKube);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = xtask(&["cluster", "down", "--name", self.0, "--force"], self.1).run();
    }
}

fn kubectl(fakes: &FakeKube, cluster: &str, args: &[&str], stdin: Option<&str>) -> Outcome {
    let kubeconfig = root().join(format!("target/xtask/clusters/{cluster}/kubeconfig"));
    let mut c = std::process::Command::new(fakes.bin_dir().join("kubectl"));
    c.arg("--kubeconfig").arg(&kubeconfig).args(args);
    for (k, v) in fakes.env() {
        c.env(k, v);
    }
    let out = if let Some(text) = stdin {
        use std::io::Write;
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    } else {
        c.output().unwrap()
    };
    Outcome {
        what: format!("kubectl {}", args.join(" ")),
        elapsed: Duration::ZERO,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn namespaces(fakes: &FakeKube, cluster: &str) -> BTreeSet<String> {
    let out = kubectl(fakes, cluster, &["get", "namespaces", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn bytes_sent(run_id: &str) -> u64 {
    read_report(run_id)["bytes_sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("the report of {run_id} has no bytes_sent"))
}

/// Whether the registry still has a tag (`skopeo inspect` of it succeeds).
fn tag_exists(reference: &str) -> bool {
    std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap()
        .status
        .success()
}

/// A namespace with our run labels, as a run on `host` would have made it.
fn foreign_run_namespace(name: &str, host: &str, expires: u64) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
         io.kubernaut.xtask.run: {run}\n    io.kubernaut.xtask.owner: someone\n    \
         io.kubernaut.xtask.pid: \"1\"\n    io.kubernaut.xtask.host: {host}\n  annotations:\n    \
         io.kubernaut.xtask/expires: \"{expires}\"\n",
        run = &hex8().repeat(2)[..12],
    )
}

#[test]
#[ignore = "needs podman, the stand-in images and skopeo: run by `cargo xtask test`"]
fn kept_cluster_runs_push_only_what_changed_and_leave_nothing() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let name = format!("kept-{}", &hex8()[..6]);
    xtask(&["cluster", "up", "--name", &name], &fakes)
        .run()
        .assert_success();
    let _down = Down(&name, &fakes);
    let first_bytes = first_run(&name, &fakes, &guard);
    two_at_once(&name, &fakes, &guard, first_bytes);
    killed_run(&name, &fakes, &guard);
    ttl_sweep(&name, &fakes);
    // `cluster down` refuses while a run is live in it (the other host's, within its TTL);
    // `--force` removes the cluster and its registry container.
    xtask(&["cluster", "down", "--name", &name], &fakes)
        .run()
        .assert_failure()
        .assert_contains("notification-current");
    xtask(&["cluster", "down", "--name", &name, "--force"], &fakes)
        .run()
        .assert_success();
    assert!(!fakes.clusters().contains(&name), "{:?}", fakes.clusters());
    assert!(!container_exists(&format!("{name}-registry")));
}

fn e2e(cluster: &str, fakes: &FakeKube) -> Xtask {
    xtask(&["e2e", "notification", "--cluster", cluster], fakes)
}

/// A first run into the empty registry: its images are sent, deployed by digest. Its bytes.
fn first_run(name: &str, fakes: &FakeKube, guard: &CleanRuns) -> u64 {
    let first = e2e(name, fakes).run();
    let first_id = first.run_id().expect("a run id");
    guard.add(&first_id);
    first.assert_success();
    let first_bytes = bytes_sent(&first_id);
    assert!(
        first_bytes > 50_000_000,
        "the first run sent {first_bytes} bytes"
    );
    let applied: Vec<String> = fakes
        .calls()
        .into_iter()
        .filter(|c| c.tool == "kubectl" && c.argv.iter().any(|a| a == "apply"))
        .filter_map(|c| c.stdin)
        .filter(|y| y.contains("kind: Deployment"))
        .collect();
    assert!(!applied.is_empty());
    for y in &applied {
        for line in y.lines().filter(|l| l.trim_start().starts_with("image:")) {
            assert!(line.contains("@sha256:"), "not pinned by digest: {line}");
        }
        assert!(!y.contains("imagePullPolicy: Never"), "{y}");
        assert!(
            !y.contains("nodePort"),
            "a NodePort on a kept cluster:\n{y}"
        );
    }
    first_bytes
}

/// Two runs at once: both pass, and neither re-sends the unchanged layers.
fn two_at_once(name: &str, fakes: &FakeKube, guard: &CleanRuns, first_bytes: u64) {
    let (a, b) = (e2e(name, fakes).spawn(), e2e(name, fakes).spawn());
    let (a, b) = (a.wait(), b.wait());
    for o in [&a, &b] {
        let id = o.run_id().expect("a run id");
        guard.add(&id);
        o.assert_success();
        let sent = bytes_sent(&id);
        assert!(
            sent * 20 < first_bytes,
            "run {id} sent {sent} bytes, not under 5% of the first run's {first_bytes}"
        );
    }
}

/// A run killed with SIGKILL once it has pushed and has its namespace: `clean --orphans`
/// removes its namespace, slot and registry tags; a namespace without our labels stays.
fn killed_run(name: &str, fakes: &FakeKube, guard: &CleanRuns) {
    let plain = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: not-ours\n";
    kubectl(fakes, name, &["apply", "-f", "-"], Some(plain)).assert_success();
    let killed = e2e(name, fakes).spawn();
    let rec = killed.wait_until(
        "a namespace and a pushed image",
        Duration::from_secs(600),
        || {
            killed
                .record()
                .filter(|r| !r.named("namespace").is_empty() && !r.named("pushed").is_empty())
        },
    );
    guard.add(&rec.run_id);
    let ns = rec.named("namespace")[0].clone();
    wait_for(
        "the killed run's namespace",
        Duration::from_secs(120),
        || namespaces(fakes, name).contains(&ns).then_some(()),
    );
    let pushed = killed.wait_until("the first push done", Duration::from_secs(600), || {
        killed
            .record()
            .map(|r| r.named("pushed"))
            .filter(|p| p.iter().any(|r| tag_exists(r)))
    });
    killed.signal(libc::SIGKILL);
    let _ = killed.wait();
    xtask(&["clean", "--orphans"], fakes)
        .run()
        .assert_success()
        .assert_contains(&format!("namespace {ns}"));
    let after = namespaces(fakes, name);
    assert!(!after.contains(&ns), "{ns} left: {after:?}");
    assert!(
        after.contains("not-ours"),
        "a namespace without our labels was removed"
    );
    let runs: Vec<&String> = after
        .iter()
        .filter(|n| n.starts_with("notification-"))
        .collect();
    assert!(runs.is_empty(), "namespaces of runs left: {runs:?}");
    for r in &pushed {
        assert!(
            !tag_exists(r),
            "the killed run's tag {r} is still in the registry"
        );
    }
    let slots = kubectl(
        fakes,
        name,
        &["-n", "xtask-system", "get", "configmaps", "-o", "json"],
        None,
    );
    assert!(
        !slots.stdout.contains(&rec.run_id),
        "the killed run's slot is left:\n{}",
        slots.stdout
    );
}

/// The TTL: another host's run past its TTL is swept, one within it is not.
fn ttl_sweep(name: &str, fakes: &FakeKube) {
    let now = unix_now();
    let expired = foreign_run_namespace("notification-expired", "elsewhere", now - 60);
    let current = foreign_run_namespace("notification-current", "elsewhere", now + 3600);
    for doc in [&expired, &current] {
        kubectl(fakes, name, &["apply", "-f", "-"], Some(doc)).assert_success();
    }
    xtask(&["clean", "--orphans"], fakes).run().assert_success();
    let after = namespaces(fakes, name);
    assert!(!after.contains("notification-expired"), "{after:?}");
    assert!(after.contains("notification-current"), "{after:?}");
    assert!(after.contains("not-ours"), "{after:?}");
}
