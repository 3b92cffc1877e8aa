//! `cargo xtask integration <consumer>` against real podman stacks, running the services' own
//! integration tests. Needs podman and the stand-in images (see `xtask/tests/common`).
//!
//! Host ports are fixed per consumer, so tests of one consumer take its slot
//! (`integration:<consumer>`) and never overlap.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const STACK: [&str; 3] = [
    "notification_postgres_test",
    "notification_redis_test",
    "notification_datastorage_test",
];

/// The run's record lists what it created, before creating it, and ends `finished`.
fn assert_record_finished(run_id: &str, containers: &[&str], network: &str) {
    let rec = read_record(run_id).unwrap_or_else(|| panic!("no record for run {run_id}"));
    let listed = rec.named("container");
    // A warm run starts from the cached data image and runs no migrations job.
    let data_image = rec
        .named("image")
        .iter()
        .any(|i| i.contains("/postgres-data:"));
    for c in containers {
        assert!(
            listed.iter().any(|l| l == c) || (c.ends_with("_migrations_test") && data_image),
            "record of {run_id} does not list container {c}: {:?}",
            rec.kinds()
        );
    }
    assert_eq!(rec.named("network"), [network], "record of {run_id}");
    assert!(
        !rec.named("image").is_empty(),
        "record of {run_id} lists no image"
    );
    assert_eq!(
        rec.last_event().map(|e| e["event"].clone()),
        Some("finished".into()),
        "record of {run_id} does not end finished"
    );
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn datastorage_passes_leaves_nothing_and_its_stack_starts_along_the_critical_path() {
    // Alone: timings are the point, and a concurrent build could share its image layers.
    let _all = exclusive(&["integration:datastorage"]);
    let guard = CleanRuns::new();
    let out = Xtask::new(&["integration", "datastorage"])
        .timeout(Duration::from_secs(300))
        .run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id in the output:\n{}", out.all()));
    guard.add(&id);
    out.assert_success();

    assert_nothing_left(&id);
    assert_record_finished(
        &id,
        &[
            "datastorage_postgres_test",
            "datastorage_redis_test",
            "datastorage_migrations_test",
        ],
        "datastorage_test_network",
    );

    let report = read_report(&id);
    assert_eq!(report["run_id"], id.as_str());
    assert_eq!(report["consumer"], "datastorage");
    assert_eq!(report["tier"], "integration");
    assert_eq!(report["outcome"], "passed", "{report:#}");
    assert!(
        report["tests_ms"].as_u64().is_some_and(|t| t > 0),
        "no tests_ms: {report:#}"
    );
    let ratio = report["total_over_critical_path"]
        .as_f64()
        .expect("total_over_critical_path");
    assert!(
        (1.0..1.25).contains(&ratio),
        "stack took {ratio}x its critical path: {report:#}"
    );
    let path: Vec<&str> = report["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        matches!(
            path.first(),
            Some(&"compile") | Some(&"postgres") | Some(&"network") | Some(&"data:postgres")
        ),
        "the critical path starts with the work that bounds the stack (compile, or PostgreSQL, \
         its cached data image or the network it waits for), got {path:?}"
    );
    for t in report["tasks"].as_array().unwrap() {
        assert_eq!(t["outcome"], "done", "task {t}");
    }
}

/// Starts `integration <c>` for each consumer back to back, waits for all; each must pass,
/// record what it made, and leave nothing (intermediate image layers included).
fn all_at_once(consumers: &[&str]) {
    let guard = CleanRuns::new();
    let running: Vec<Running> = consumers
        .iter()
        .map(|c| Xtask::new(&["integration", c]).spawn())
        .collect();
    let outs: Vec<Outcome> = running.into_iter().map(Running::wait).collect();
    let ids: Vec<String> = outs
        .iter()
        .map(|o| {
            o.run_id()
                .unwrap_or_else(|| panic!("no run id:\n{}", o.all()))
        })
        .collect();
    for id in &ids {
        guard.add(id);
    }
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        ids.len(),
        "run ids repeat: {ids:?}"
    );
    for (c, o) in consumers.iter().zip(&outs) {
        o.assert_success();
        // The positive half of the negative check below: this line is what tests starting
        // looks like, so its absence elsewhere means something.
        o.assert_contains(&tests_started(c));
        assert!(
            !o.all().contains(TEARDOWN_FAILED),
            "{}: teardown failed:\n{}",
            o.what,
            o.all()
        );
    }
    let left: Vec<String> = ids
        .iter()
        .flat_map(|id| leftovers(id).into_iter().map(move |l| format!("{id}: {l}")))
        .collect();
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    for (c, id) in consumers.iter().zip(&ids) {
        let names: Vec<String> = ["postgres", "redis", "migrations"]
            .iter()
            .map(|m| format!("{c}_{m}_test"))
            .collect();
        assert_record_finished(
            id,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
            &format!("{c}_test_network"),
        );
        assert_eq!(read_report(id)["outcome"], "passed", "run {id} of {c}");
    }
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn two_consumers_started_together_both_pass_and_leave_nothing() {
    let _slot = slots(&["integration:gateway", "integration:notification"]);
    all_at_once(&["gateway", "notification"]);
}

/// The same with every consumer: three builds of the DataStorage image at once.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn three_consumers_started_together_all_pass_and_leave_nothing() {
    let _all = exclusive(&[
        "integration:datastorage",
        "integration:gateway",
        "integration:notification",
    ]);
    all_at_once(&["datastorage", "gateway", "notification"]);
}

/// A second run of a consumer whose kept stack holds its ports fails at once, naming the
/// holder and `--down`; `--down` then removes the stack.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_run_on_a_nearly_full_disk_stops_before_creating_anything() {
    // More than any disk has free: the check must refuse, naming the place and the way out.
    let out = Xtask::new(&["integration", "notification"])
        .env("XTASK_MIN_FREE_GB", "1000000")
        .run();
    out.assert_failure()
        .assert_contains("not enough disk space to start a run")
        .assert_contains("GB free on the filesystem of")
        .assert_contains("cargo xtask clean-images --older-than 1h");
    assert_eq!(out.run_id(), None, "a run started:\n{}", out.all());
    Xtask::new(&["integration", "notification"])
        .env("XTASK_MIN_FREE_GB", "lots")
        .run()
        .assert_failure()
        .assert_contains("XTASK_MIN_FREE_GB=\"lots\" is not a whole number of GB");
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_second_run_while_a_kept_stack_is_up_fails_fast_naming_it() {
    let _slot = slots(&["integration:notification"]);
    let guard = CleanRuns::new();
    let a = Xtask::new(&["integration", "notification", "--no-tests"])
        .timeout(Duration::from_secs(300))
        .run();
    let id_a = a
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", a.all()));
    guard.add(&id_a);
    a.assert_success().assert_contains("--down");
    let up = containers(&format!("{RUN}={id_a}"));
    for c in STACK {
        assert!(up.contains(c), "kept stack lacks {c}: {up:?}");
    }
    assert!(
        port_listening(15440),
        "the kept PostgreSQL does not hold 15440"
    );

    let b = Xtask::new(&["integration", "notification"])
        .timeout(Duration::from_secs(60))
        .spawn();
    let b_pid = b.pid();
    let b = b.wait();
    b.assert_failure();
    assert!(
        b.elapsed < Duration::from_secs(10),
        "the second run took {:?} to fail",
        b.elapsed
    );
    let msg = b.all();
    assert!(
        STACK.iter().any(|c| msg.contains(c)),
        "the message names no container of the kept stack:\n{msg}"
    );
    assert!(
        msg.contains("notification_postgres_test"),
        "port 15440's holder is not named:\n{msg}"
    );
    assert!(
        msg.contains(&id_a),
        "the message does not name run {id_a}:\n{msg}"
    );
    assert!(
        msg.contains("--down"),
        "the message does not say how to take the stack down:\n{msg}"
    );
    assert!(
        record_of_pid(b_pid).is_none(),
        "the refused run wrote a record"
    );
    assert_eq!(
        containers(&format!("{RUN}={id_a}")),
        up,
        "the refused run touched the kept stack"
    );

    Xtask::new(&["integration", "notification", "--down"])
        .run()
        .assert_success()
        .assert_contains(&id_a);
    assert_nothing_left(&id_a);
    assert!(!port_listening(15440), "15440 is still bound after --down");
}

/// A second run while another run of the consumer is in progress fails at once naming the
/// holder, and the first run is not disturbed.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_second_run_while_a_live_run_is_up_fails_fast_and_the_first_still_passes() {
    let _slot = slots(&["integration:notification"]);
    let guard = CleanRuns::new();
    let a = Xtask::new(&["integration", "notification"])
        .timeout(Duration::from_secs(300))
        .spawn();
    let rec = a.wait_until(
        "run A to record a container and bind 15440",
        Duration::from_secs(180),
        || {
            let r = a.record()?;
            (!r.named("container").is_empty() && port_listening(15440)).then_some(r)
        },
    );
    let id_a = rec.run_id.clone();
    guard.add(&id_a);
    // Run A's tests take under a second: frozen here, its stack is surely up while B checks
    // (unfrozen, a slow B once found A already tearing down and got the live-run refusal).
    let frozen = Frozen::new(a.pid());
    assert!(
        port_listening(15440),
        "run A let 15440 go before it was frozen"
    );

    let b = Xtask::new(&["integration", "notification"])
        .timeout(Duration::from_secs(60))
        .spawn();
    let b_pid = b.pid();
    let b = b.wait();
    b.assert_failure();
    assert!(
        b.elapsed < Duration::from_secs(10),
        "the second run took {:?} to fail",
        b.elapsed
    );
    let msg = b.all();
    assert!(
        msg.contains("notification_postgres_test"),
        "port 15440's holder is not named:\n{msg}"
    );
    assert!(
        msg.contains(&id_a),
        "the message does not name run {id_a}:\n{msg}"
    );
    assert!(
        record_of_pid(b_pid).is_none(),
        "the refused run wrote a record"
    );

    drop(frozen);
    let a = a.wait();
    a.assert_success();
    assert_eq!(a.run_id().as_deref(), Some(id_a.as_str()));
    assert_nothing_left(&id_a);
    assert_eq!(read_report(&id_a)["outcome"], "passed");
}

/// A process stopped with SIGSTOP until this is dropped (also when the test panics).
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        signal(pid, libc::SIGSTOP);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// One run with DataStorage unable to log in to PostgreSQL, shared by the tests below.
fn broken_readiness_run() -> &'static (Outcome, String) {
    static RUN: OnceLock<(Outcome, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let _slot = slots(&["integration:notification"]);
        let guard = CleanRuns::new();
        let out = Xtask::new(&[
            "integration",
            "notification",
            "--set",
            "datastorage.env.DATABASE_URL=postgres://slm_user:wrong_password@notification_postgres_test:5432/action_history",
            "--set",
            "datastorage.timeout=20s",
        ])
        .timeout(Duration::from_secs(300))
        .run();
        let id = out.run_id().unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
        guard.add(&id);
        let left = leftovers(&id);
        drop(guard);
        assert!(left.is_empty(), "run {id} left: {}", left.join(", "));
        (out, id)
    })
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn broken_datastorage_readiness_fails_with_its_logs_and_leaves_nothing() {
    let (out, id) = broken_readiness_run();
    out.assert_failure();
    let msg = out.all();
    assert!(
        msg.contains("notification_datastorage_test"),
        "the container is not named:\n{msg}"
    );
    assert!(
        msg.contains("not ready after 20s"),
        "the overridden timeout is not what failed:\n{msg}"
    );
    assert!(
        msg.contains("last log lines of notification_datastorage_test"),
        "no log excerpt:\n{msg}"
    );
    // DataStorage's own log lines (it logs these at start-up; the wrong password is only
    // visible to its /readyz).
    assert!(
        msg.contains("datastorage listening"),
        "DataStorage's log lines are not in the message:\n{msg}"
    );
    assert!(
        !msg.contains(&tests_started("notification")),
        "tests ran against a broken stack:\n{msg}"
    );
    assert_nothing_left(id);
    assert_eq!(read_report(id)["outcome"], "failed");
}

/// The reason DataStorage is not ready is in its `/readyz` answer (503 with
/// `{"checks":{"postgres":{"error":"... password authentication failed ..."}}}`); the error
/// must carry it, or the user sees "answered 503" and a log that says nothing is wrong.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn broken_datastorage_readiness_names_the_cause() {
    let (out, _) = broken_readiness_run();
    out.assert_failure();
    out.assert_contains("password authentication failed");
}

/// What a run prints when its tests start (asserted present in passing runs, so that asserting
/// its absence can fail).
fn tests_started(consumer: &str) -> String {
    format!("running the {consumer} integration tests")
}

/// What a run prints when its teardown failed (asserted present in the test that makes the
/// teardown fail, so that asserting its absence can fail).
const TEARDOWN_FAILED: &str = "cleanup of run";

/// A teardown that fails (here: the engine's `rmi` refuses) fails the run, whatever the tests
/// said, and says how to finish; `clean --run` then removes what is left.
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_failed_teardown_fails_the_run_and_says_how_to_retry() {
    let guard = CleanRuns::new();
    let shim = TempDir::new("rmi-fails");
    let engine = engine().name();
    let real = which(engine);
    let script = shim.path().join(engine);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# the engine, except that rmi fails (a test double)\n\
             if [ \"$1\" = rmi ] || [ \"$1\" = untag ]; then echo 'Error: simulated rmi failure' >&2; exit 1; fi\n\
             exec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(shim.path().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    // A test filter that matches nothing: the tests pass at once, the teardown is what fails.
    let out = Xtask::new(&["integration", "datastorage", "--", "no_test_is_called_this"])
        .env("PATH", path)
        .env("XTASK_ENGINE", engine)
        .run();
    let id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.all()));
    guard.add(&id);
    out.assert_failure();
    out.assert_contains(TEARDOWN_FAILED);
    out.assert_contains(&format!("cargo xtask clean --run {id}"));
    out.assert_contains("simulated rmi failure");
    Xtask::new(&["clean", "--run", &id]).run().assert_success();
    assert_nothing_left(&id);
}

fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} on PATH"))
}
