//! `cargo xtask e2e <consumer>` against the fake kind/kubectl of `xtask/fake-kube` (real podman
//! underneath: images are built, saved, "loaded", and the pods run as podman containers).
//!
//! E2E host ports are fixed per consumer, and two runs building the same images at once share
//! image layers (a separate concern, tested with integration runs): the tests take one `e2e`
//! slot, one at a time. Each has its own fake state folder and call log.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn e2e(consumer: &str, fakes: &FakeKube) -> Xtask {
    Xtask::new(&["e2e", consumer])
        .fakes(fakes)
        .timeout(Duration::from_secs(600))
}

fn cluster_of(consumer: &str, run_id: &str) -> String {
    format!("{consumer}-e2e-{run_id}")
}

/// The archives passed to `kind load image-archive`, with the cluster each went to.
fn loaded_archives(fakes: &FakeKube) -> Vec<(PathBuf, String)> {
    fakes
        .calls()
        .into_iter()
        .filter(|c| {
            c.tool == "kind"
                && c.argv
                    .starts_with(&["load".to_string(), "image-archive".to_string()])
        })
        .map(|c| {
            let name = c
                .argv
                .iter()
                .position(|a| a == "--name")
                .and_then(|i| c.argv.get(i + 1))
                .cloned()
                .unwrap_or_default();
            (PathBuf::from(&c.argv[2]), name)
        })
        .collect()
}

/// Everything sent to `kubectl apply -f -`.
fn applied_yaml(fakes: &FakeKube) -> Vec<String> {
    fakes
        .calls()
        .into_iter()
        .filter(|c| {
            c.tool == "kubectl"
                && c.argv.iter().any(|a| a == "apply")
                && c.argv.windows(2).any(|w| w == ["-f", "-"])
        })
        .map(|c| c.stdin.unwrap_or_default())
        .collect()
}

fn archive_files(run_id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(run_dir(run_id).join("images"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// After a run that did not keep anything: no cluster (state, containers, network), no image
/// with the run label, no archive.
fn assert_all_removed(consumer: &str, run_id: &str, fakes: &FakeKube) {
    let cluster = cluster_of(consumer, run_id);
    let left = fakes.cluster_leftovers(&cluster);
    assert!(
        left.is_empty(),
        "cluster {cluster} left: {}",
        left.join(", ")
    );
    assert!(
        fakes.clusters().is_empty(),
        "fake clusters left: {:?}",
        fakes.clusters()
    );
    assert_nothing_left(run_id);
    let archives = archive_files(run_id);
    assert!(archives.is_empty(), "archives left: {archives:?}");
    for (a, _) in loaded_archives(fakes) {
        assert!(!a.exists(), "archive {} left", a.display());
    }
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn loaded_archives_hold_exactly_the_deployed_images_and_clean_run_removes_a_kept_run() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let out = e2e("notification", &fakes).arg("--keep").run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_success()
        .assert_contains(&format!("clean --run {id}"));
    let cluster = cluster_of("notification", &id);

    // What went into the cluster: the names inside each archive given to `kind load`.
    let archives = loaded_archives(&fakes);
    assert!(
        !archives.is_empty(),
        "nothing was loaded with `kind load image-archive`"
    );
    let mut loaded = BTreeSet::new();
    for (path, to) in &archives {
        assert_eq!(
            to,
            &cluster,
            "{} was loaded into another cluster",
            path.display()
        );
        let names = archive_image_names(path);
        assert!(!names.is_empty(), "{} names no image", path.display());
        loaded.extend(names);
    }

    // What the cluster was told to run.
    let yaml = applied_yaml(&fakes);
    let deployed: BTreeSet<String> = yaml.iter().flat_map(|y| image_lines(y)).collect();
    assert_eq!(
        loaded, deployed,
        "loaded images differ from the applied manifests' images"
    );
    let containers: Vec<_> = yaml.iter().flat_map(|y| workload_containers(y)).collect();
    assert!(
        containers.len() >= 4,
        "too few containers applied: {containers:?}"
    );
    let parsed: BTreeSet<String> = containers.iter().map(|c| c.2.clone()).collect();
    assert_eq!(
        parsed, deployed,
        "`image:` lines and parsed containers disagree"
    );
    for (what, name, image, policy) in &containers {
        assert_eq!(
            policy.as_deref(),
            Some("Never"),
            "{what} container {name} ({image}) is not imagePullPolicy: Never"
        );
    }
    // The run's own tags: built (or given to a cached image) by this run, never `:latest`.
    let built = run_images(&id);
    assert_eq!(
        built, deployed,
        "the images run {id} recorded differ from those deployed"
    );
    assert!(
        deployed
            .iter()
            .all(|i| i.starts_with("localhost/") && !i.ends_with(":latest")),
        "{deployed:?}"
    );

    // Kept: cluster, images, archives.
    assert!(
        fakes.clusters().contains(&cluster),
        "the kept cluster is gone"
    );
    assert!(
        archives.iter().all(|(p, _)| p.exists()),
        "kept archives are gone"
    );
    assert_eq!(
        read_record(&id)
            .and_then(|r| r.last_event().cloned())
            .map(|e| e["event"].clone()),
        Some("kept".into())
    );

    Xtask::new(&["clean", "--run", &id])
        .fakes(&fakes)
        .run()
        .assert_success();
    assert_all_removed("notification", &id, &fakes);
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn the_cluster_is_created_while_images_build() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let out = e2e("notification", &fakes).run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_success();

    let create = fakes
        .calls()
        .into_iter()
        .find(|c| {
            c.tool == "kind"
                && c.argv
                    .starts_with(&["create".to_string(), "cluster".to_string()])
        })
        .expect("no `kind create cluster` call");
    let report = read_report(&id);
    let t0 = report["started_unix_ms"].as_u64().expect("started_unix_ms") as u128;
    let builds: Vec<(String, u128, u128)> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().is_some_and(|i| i.starts_with("image:")))
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t0 + t["start_ms"].as_u64().unwrap() as u128,
                t0 + t["end_ms"].as_u64().unwrap() as u128,
            )
        })
        .collect();
    assert!(builds.len() >= 4, "image tasks: {builds:?}");
    let overlapping: Vec<&String> = builds
        .iter()
        .filter(|(_, s, e)| *s < create.end_ms && *e > create.start_ms)
        .map(|(i, ..)| i)
        .collect();
    assert!(
        !overlapping.is_empty(),
        "`kind create cluster` ran {}..{} (unix ms) and no image build overlapped it: {builds:?}",
        create.start_ms,
        create.end_ms
    );
    assert_all_removed("notification", &id, &fakes);
}

/// One failing run: the error, and that everything of it is gone.
fn fails_and_cleans_up(
    consumer: &str,
    x: Xtask,
    fakes: &FakeKube,
    guard: &CleanRuns,
) -> (Outcome, String) {
    let out = x.run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_failure();
    // Something was created before the failure, so the cleanup had work to do.
    let rec = read_record(&id).unwrap_or_else(|| panic!("no record of {id}"));
    assert!(
        !rec.named("image").is_empty(),
        "run {id} built nothing before failing: {:?}",
        rec.kinds()
    );
    let calls = fakes.calls();
    let created = calls.iter().any(|c| {
        c.tool == "kind" && c.argv.starts_with(&["create".to_string()]) && c.exit_code == 0
    });
    let deleted = calls
        .iter()
        .any(|c| c.tool == "kind" && c.argv.starts_with(&["delete".to_string()]));
    assert!(
        !created || deleted,
        "the cluster was created but `kind delete cluster` never ran"
    );
    assert_all_removed(consumer, &id, fakes);
    assert_eq!(
        read_record(&id)
            .and_then(|r| r.last_event().cloned())
            .map(|e| e["event"].clone()),
        Some("finished".into()),
        "the record of {id} does not end finished"
    );
    (out, id)
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase1_a_failed_build_removes_cluster_images_and_archives() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let x = e2e("datastorage", &fakes).env("XTASK_IMAGE_RUNTIME", "localhost/does-not-exist:1");
    let (out, _) = fails_and_cleans_up("datastorage", x, &fakes, &guard);
    out.assert_contains("localhost/does-not-exist:1");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase2_a_failed_cluster_creation_removes_images_and_archives() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let x = e2e("datastorage", &fakes).env("FAKE_KUBE_FAIL", "kind-create");
    let (out, _) = fails_and_cleans_up("datastorage", x, &fakes, &guard);
    out.assert_contains("creating the kind cluster");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase3_a_failed_load_deletes_the_cluster_images_and_archives() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let x = e2e("notification", &fakes).env("FAKE_KUBE_FAIL", "kind-load");
    let (out, id) = fails_and_cleans_up("notification", x, &fakes, &guard);
    out.assert_contains(&format!("into {}", cluster_of("notification", &id)));
    assert!(!loaded_archives(&fakes).is_empty(), "no load was attempted");
    assert!(
        fakes
            .calls()
            .iter()
            .any(|c| c.tool == "kind" && c.argv.first().is_some_and(|a| a == "delete")),
        "the cluster was never deleted"
    );
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase4_a_pod_that_never_gets_ready_writes_diagnostics_and_removes_everything() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let x = e2e("notification", &fakes)
        .env("FAKE_KUBE_FAIL", "pod-unready:datastorage")
        .args(["--set", "datastorage.timeout=10s"]);
    let (out, id) = fails_and_cleans_up("notification", x, &fakes, &guard);
    out.assert_contains("datastorage was not ready after 10s");
    let diag = run_dir(&id).join("diagnostics");
    assert_diagnostics(&diag, &out);
}

fn assert_diagnostics(diag: &Path, out: &Outcome) {
    assert!(diag.is_dir(), "{} was not written", diag.display());
    let files: Vec<String> = std::fs::read_dir(diag)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("datastorage.")),
        "no datastorage diagnostics in {}: {files:?}",
        diag.display()
    );
    let describe =
        std::fs::read_to_string(diag.join("datastorage.describe.txt")).unwrap_or_default();
    assert!(
        describe.contains("datastorage"),
        "datastorage.describe.txt says nothing about datastorage:\n{describe}"
    );
    out.assert_contains(&diag.display().to_string());
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase5_failing_tests_remove_cluster_images_and_archives() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let x = e2e("notification", &fakes).args(["--", "--definitely-not-a-flag"]);
    let (out, id) = fails_and_cleans_up("notification", x, &fakes, &guard);
    // The test binary's own complaint, passed through, and the xtask's verdict.
    out.assert_contains("definitely-not-a-flag")
        .assert_contains("notification e2e tests failed");
    assert_eq!(read_report(&id)["outcome"], "tests failed");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_held_job_runs_beside_the_tests_and_its_failure_still_fails_the_run() {
    let _slot = slots(&["e2e", "integration:notification"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    // Warm: after an integration run, PostgreSQL's data image (migrations applied) is cached.
    warm_integration_run("notification", &guard);
    let x = e2e("notification", &fakes).args([
        "--set",
        "migrations.env.DATABASE_URL=postgres://nobody:none@127.0.0.1:1/none",
        "--set",
        "migrations.timeout=60s",
    ]);
    let (out, id) = fails_and_cleans_up("notification", x, &fakes, &guard);
    out.assert_contains("phase 5: tests (deploy:migrations beside them")
        .assert_contains("test result: ok")
        .assert_contains("the tests passed; a task beside them failed: deploy:migrations failed");
    let report = read_report(&id);
    let task = |id: &str| {
        report["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id))
            .unwrap_or_else(|| panic!("no task {id} in {report:#}"))
            .clone()
    };
    let (job, last) = (task("deploy:migrations"), task("deploy:notification"));
    // The job started once everything else was deployed, when the tests did.
    assert!(
        job["start_ms"].as_u64() >= last["end_ms"].as_u64(),
        "{job} {last}"
    );
    assert!(
        report["deployed_ms"].as_u64() <= job["end_ms"].as_u64(),
        "{report:#}"
    );
    assert_eq!(job["outcome"], "failed");
    assert_eq!(report["outcome"], "failed");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn phase4_failure_with_keep_keeps_cluster_and_images_until_clean_run() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let out = e2e("notification", &fakes)
        .env("FAKE_KUBE_FAIL", "pod-unready:datastorage")
        .args(["--keep", "--set", "datastorage.timeout=10s"])
        .run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_failure()
        .assert_contains(&format!("clean --run {id}"));
    let cluster = cluster_of("notification", &id);

    assert!(
        fakes.clusters().contains(&cluster),
        "--keep: cluster {cluster} was deleted"
    );
    assert!(
        !containers(&format!("io.kubernaut.fake-kube.cluster={cluster}")).is_empty(),
        "--keep: the cluster's pods are gone"
    );
    let kept = run_images(&id);
    assert!(
        kept.len() >= 4,
        "--keep: images of run {id} are gone: {kept:?}"
    );
    assert!(!archive_files(&id).is_empty(), "--keep: archives are gone");
    assert_diagnostics(&run_dir(&id).join("diagnostics"), &out);

    let clean = Xtask::new(&["clean", "--run", &id]).fakes(&fakes).run();
    clean.assert_success();
    assert_all_removed("notification", &id, &fakes);
}

/// A PATH with podman, cargo and git, plus the given fake tools.
fn path_without(fakes: &FakeKube, keep: &TempDir) -> std::ffi::OsString {
    for tool in ["podman", "cargo", "git", "rustup", "rustc"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        if let Some(p) = found {
            std::os::unix::fs::symlink(p, keep.path().join(tool)).unwrap();
        }
    }
    std::env::join_paths([fakes.bin_dir(), keep.path().to_path_buf()]).unwrap()
}

fn missing_tool_stops_before_any_build(present: &str, missing: &str) {
    let _slot = exclusive(&["e2e"]);
    let fakes = FakeKube::with_tools(&[present]);
    let tools = TempDir::new("path");
    let path = path_without(&fakes, &tools);
    let e2e_images = || images(&format!("{TIER}=e2e"));
    let (images_before, runs_before) = (e2e_images(), run_ids());

    let out = e2e("notification", &fakes)
        .env("PATH", path)
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_failure()
        .assert_contains(&format!("`{missing}` not found in PATH"))
        .assert_contains("install it:");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?} to notice a missing tool",
        out.elapsed
    );
    assert_eq!(run_ids(), runs_before, "a run record was written");
    assert_eq!(e2e_images(), images_before, "an e2e image was built");
    assert!(
        fakes.calls().is_empty(),
        "the fakes were called: {:?}",
        fakes.calls()
    );
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_missing_kind_stops_the_run_before_any_build() {
    missing_tool_stops_before_any_build("kubectl", "kind");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_missing_kubectl_stops_the_run_before_any_build() {
    missing_tool_stops_before_any_build("kind", "kubectl");
}

/// The dry run and the run come from the same actions: every command the dry run lists for
/// phases 1-4 is exactly what the run executed (its `commands.log`), once the values that
/// differ between two processes (run id, pid, clock) are replaced by placeholders. The fake's
/// own call log confirms the kind and kubectl commands independently.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn the_dry_run_lists_exactly_the_commands_the_run_executes() {
    let _slot = slots(&["e2e"]);
    let fakes = FakeKube::new();
    let guard = CleanRuns::with_fakes(&fakes);
    let dry = e2e("datastorage", &fakes).arg("--dry-run").run();
    dry.assert_success();
    let dry_id = dry.run_id().expect("the dry run names its run id");
    let phases_1_to_4 = dry.stdout.split("phase 5:").next().unwrap_or_default();
    let listed: BTreeSet<String> = phases_1_to_4
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("$ "))
        .map(|l| normalise(l.split("   # ").next().unwrap_or(l), &dry_id))
        .collect();
    // `$? `: commands that run or not, as the input cache decides (tag or build, save or not).
    let maybe: BTreeSet<String> = phases_1_to_4
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("$? "))
        .map(|l| generalise(&normalise(l, &dry_id)))
        .collect();
    // Every command of the dry run, phases 5 and 6 included (for the fake's call log).
    let listed_all: BTreeSet<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("$ "))
        .map(|l| normalise(l.split("   # ").next().unwrap_or(l), &dry_id))
        .collect();
    let out = e2e("datastorage", &fakes).run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_success();
    let log = std::fs::read_to_string(run_dir(&id).join("commands.log")).unwrap();
    let ran: BTreeSet<String> = log.lines().map(|l| normalise(l, &id)).collect();
    assert!(
        listed.len() >= 8 && maybe.len() >= 6,
        "too few commands listed: {listed:#?} {maybe:#?}"
    );
    assert_eq!(
        listed.difference(&ran).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "listed by the dry run but not run"
    );
    let unlisted: Vec<&String> = ran
        .difference(&listed)
        .filter(|c| !maybe.contains(&generalise(c)))
        .collect();
    assert_eq!(
        unlisted,
        Vec::<&String>::new(),
        "run but not listed by the dry run (certain or conditional: {maybe:#?})"
    );
    // Independently of our own log: every kind/kubectl call the fake saw is one the dry run
    // listed (by its arguments; polls repeat).
    for c in fakes.calls() {
        let call = normalise(&c.argv.join(" "), &id);
        assert!(
            listed_all.iter().any(|l| l.ends_with(&call)),
            "the fake saw `{} {call}`, which the dry run did not list",
            c.tool
        );
    }
}

/// The image names a run recorded (its own tags; a cached image gets its name, not its
/// label) that exist in the engine now.
fn run_images(run_id: &str) -> BTreeSet<String> {
    let rec = read_record(run_id).unwrap_or_else(|| panic!("no record of {run_id}"));
    rec.named("image")
        .into_iter()
        .filter(|i| image_exists(i))
        .collect()
}

/// A command with the values only the run knows put back as the dry run shows them: a cache
/// key (`localhost/xtask-cache/C:{key}`), a cached image's id, an archive's path in the cache;
/// quotes dropped.
fn generalise(cmd: &str) -> String {
    let hex16 = |t: &str| t.len() == 16 && t.chars().all(|c| c.is_ascii_hexdigit());
    cmd.split(' ')
        .map(|w| {
            let w = w.replace('\'', "");
            for sep in [':', '='] {
                if let Some((head, key)) = w.rsplit_once(sep) {
                    if (head.contains("xtask-cache/") || head.ends_with("cache-key")) && hex16(key)
                    {
                        return format!("{head}{sep}{{key}}");
                    }
                }
            }
            if w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                return "<cached-image-id>".to_string();
            }
            let file = w.rsplit('/').next().unwrap_or_default();
            if w.contains("/archives/") && hex16(file.trim_end_matches(".tar.partial")) {
                return "<cache>/archives/<image id>.tar.partial".to_string();
            }
            w
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces what differs between two processes planning the same run.
fn normalise(cmd: &str, run_id: &str) -> String {
    let mut out = cmd.replace(run_id, "RUN").replace(&run_id[..8], "RUN8");
    for key in ["pid=", "created=", "CREATED="] {
        let mut rest = out.as_str();
        let mut s = String::new();
        while let Some(i) = rest.find(key) {
            s.push_str(&rest[..i + key.len()]);
            rest = &rest[i + key.len()..];
            let end = rest.find([' ', '\'']).unwrap_or(rest.len());
            s.push('N');
            rest = &rest[end..];
        }
        s.push_str(rest);
        out = s;
    }
    // The consumer's own tag ends in the clock: `{service}-{user}-{git7}-{unix}`.
    let words: Vec<String> = out
        .split(' ')
        .map(|w| match w.rsplit_once('-') {
            Some((head, t)) if t.len() == 10 && t.chars().all(|c| c.is_ascii_digit()) => {
                format!("{head}-UNIX")
            }
            _ => w.to_string(),
        })
        .collect();
    words.join(" ")
}
