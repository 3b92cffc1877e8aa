//! Cleanup: `clean-images` and `clean --orphans` remove what this user's runs left, and only
//! that (decoys with foreign or no labels survive); a run killed with SIGKILL is cleaned up
//! afterwards; a run interrupted with Ctrl-C cleans up itself.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const THREE_DAYS: u64 = 3 * 86_400;

/// Labels of a run resource: owner, run, created (3 days ago), pid, and the rest.
fn run_labels(owner: &str, run: &str, pid: u32) -> Vec<(&'static str, String)> {
    vec![
        (OWNER, owner.to_string()),
        (RUN, run.to_string()),
        (CREATED, (unix_now() - THREE_DAYS).to_string()),
        (PID, pid.to_string()),
        (SERVICE, "datastorage".to_string()),
        (CONSUMER, "notification".to_string()),
        (TIER, "integration".to_string()),
    ]
}

fn refs<'a>(l: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    l.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Names after "would remove " / "removed " / "skipped " at the start of output lines.
fn listed(out: &Outcome, verb: &str) -> BTreeSet<String> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(verb))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| name.contains(':') || name.len() == 12)
        .map(str::to_string)
        .collect()
}

/// This user's run images that no container uses, according to the engine itself (labels
/// checked here: podman ORs several `--filter label=` terms of `images`).
fn my_unused_run_images(owner: &str) -> BTreeSet<String> {
    let short = |id: &str| {
        id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    let e = engine();
    let used: BTreeSet<String> = e.images_in_use().iter().map(|i| short(i)).collect();
    let label = format!("label={RUN}");
    let ids = e.ok(&[
        e.images_verb(),
        &["--filter", &label, "--format", "{{.ID}}"][..],
    ]
    .concat());
    let mut out = BTreeSet::new();
    for id in ids
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<BTreeSet<_>>()
    {
        let v: serde_json::Value = serde_json::from_str(&e.ok(&["image", "inspect", id])).unwrap();
        let img = &v[0];
        let labels = &img["Config"]["Labels"];
        // An empty run label is none (as the xtask reads it): cached images carry one, and
        // `clean-images` ages them by last use instead.
        if labels[OWNER] != owner
            || labels[RUN].as_str().is_none_or(str::is_empty)
            || labels[CREATED].as_str().is_none()
            || used.contains(&short(id))
            // Images of a run in progress stay (it may not have started their container yet).
            || labels[PID].as_str().and_then(|p| p.parse().ok()).is_some_and(pid_alive)
        {
            continue;
        }
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter(|t| !t.contains("<none>"))
            .collect();
        if tags.is_empty() {
            out.insert(short(id));
        }
        out.extend(tags.into_iter().map(str::to_string));
    }
    out
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn clean_images_and_orphans_remove_only_our_images() {
    // clean-images --older-than 0s removes every unused image of this user: nothing else of
    // this test process may run meanwhile.
    let _all = exclusive(&[]);
    let owner = me();
    let dead = dead_pid();
    let mut d = Decoys::new();
    let plain = d.image("plain", &[]);
    let foreign = d.image("foreign", &refs(&run_labels("someone_else", &hex8(), dead)));
    let ours_run = hex8();
    let ours = d.image("ours", &refs(&run_labels(&owner, &ours_run, dead)));
    // Ours, but used by a container (and of a live run, so `clean --orphans` leaves it too).
    let in_use = d.image(
        "in-use",
        &refs(&run_labels(&owner, &hex8(), std::process::id())),
    );
    let user = d.container(&in_use, &[]);
    assert!(image_labels(&foreign).contains_key(RUN) && !image_labels(&plain).contains_key(RUN));

    // Dry run: lists exactly our unused images, names the used one, removes nothing.
    let expected = my_unused_run_images(&owner);
    assert!(
        expected.contains(&ours) && !expected.contains(&in_use),
        "{expected:?}"
    );
    let dry = Xtask::new(&["clean-images", "--older-than", "0s", "--dry-run"]).run();
    dry.assert_success();
    assert_eq!(
        listed(&dry, "would remove "),
        expected,
        "clean-images --dry-run listed other images:\n{}",
        dry.stdout
    );
    assert!(
        listed(&dry, "skipped ").contains(&in_use),
        "the image in use ({in_use}, by {user}) is not named:\n{}",
        dry.stdout
    );
    dry.assert_contains("used by a container");
    d.assert_all_present("clean-images --dry-run");
    let still: Vec<&String> = expected.iter().filter(|i| !image_exists(i)).collect();
    assert!(still.is_empty(), "clean-images --dry-run removed {still:?}");

    // For real.
    let real = Xtask::new(&["clean-images", "--older-than", "0s"]).run();
    real.assert_success();
    assert!(!image_exists(&ours), "clean-images left our image {ours}");
    assert!(
        listed(&real, "removed ").contains(&ours),
        "{ours} is not reported removed:\n{}",
        real.stdout
    );
    assert!(
        listed(&real, "skipped ").contains(&in_use),
        "the image in use is not named:\n{}",
        real.stdout
    );
    d.assert_present_but(&[&ours], "clean-images");

    // clean --orphans: another image of ours, of a run whose process is gone, goes; the rest stays.
    let ours2_run = hex8();
    let ours2 = d.image("ours2", &refs(&run_labels(&owner, &ours2_run, dead)));
    let orphans = Xtask::new(&["clean", "--orphans"]).run();
    orphans
        .assert_success()
        .assert_contains(&format!("run {ours2_run}"));
    assert!(!image_exists(&ours2), "clean --orphans left {ours2}");
    d.assert_present_but(&[&ours, &ours2], "clean --orphans");
}

/// Starts `integration <consumer>` and waits until its record lists a container that podman
/// shows with the run label. Returns the running xtask and the run id.
fn start_until_a_container_exists(consumer: &str, guard: &CleanRuns) -> (Running, String) {
    let run = Xtask::new(&["integration", consumer])
        .timeout(Duration::from_secs(300))
        .spawn();
    let id = run.wait_until(
        "a recorded container to exist",
        Duration::from_secs(120),
        || {
            let rec = run.record()?;
            guard.add(&rec.run_id);
            let made = containers(&format!("{RUN}={}", rec.run_id));
            rec.named("container")
                .iter()
                .any(|c| made.contains(c))
                .then_some(rec.run_id)
        },
    );
    (run, id)
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn a_run_killed_during_startup_is_removed_by_clean_orphans_and_nothing_else_is() {
    // Exclusive: the interrupted builds are told apart from others by timing.
    let _all = exclusive(&["integration:gateway", "integration:datastorage"]);
    // Guards drop in reverse order: build containers, then `clean --run`, then network state.
    let _net = NetworkStateGuard::new(&["gateway", "datastorage"]);
    let guard = CleanRuns::new();
    let builds = BuildLeftovers::new();
    let dead = dead_pid();

    // Left alone: a stack kept on purpose, and resources of another owner or of nobody.
    let kept = Xtask::new(&["integration", "datastorage", "--no-tests"])
        .timeout(Duration::from_secs(300))
        .run();
    let kept_id = kept
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", kept.all()));
    guard.add(&kept_id);
    kept.assert_success();
    let kept_resources = leftovers(&kept_id);
    assert!(
        kept_resources.iter().any(|r| r.starts_with("container")),
        "{kept_resources:?}"
    );
    let mut d = Decoys::new();
    let foreign = run_labels("someone_else", &hex8(), dead);
    let img = d.image("foreign", &refs(&foreign));
    d.container(&img, &refs(&foreign));
    d.network(&refs(&foreign));
    d.container(&img, &[]);
    d.network(&[]);

    let (run, id) = start_until_a_container_exists("gateway", &guard);
    run.signal(libc::SIGKILL);
    let out = run.wait();
    assert_eq!(out.code, None, "xtask was not killed by the signal");
    // What the killed process had started (a `podman run`, a build) finishes on its own.
    wait_for(
        "the killed run's podman commands to end",
        Duration::from_secs(120),
        || {
            processes_mentioning(&format!("{RUN}={id}"))
                .is_empty()
                .then_some(())
        },
    );
    let left = leftovers(&id);
    assert!(
        left.iter().any(|l| l.starts_with("container")),
        "the killed run left no container: {left:?}"
    );
    let rec = read_record(&id).unwrap();
    assert_ne!(
        rec.last_event().map(|e| e["event"].clone()),
        Some("finished".into())
    );

    let clean = Xtask::new(&["clean", "--orphans"]).run();
    clean.assert_success().assert_contains(&format!("run {id}"));
    assert_nothing_left(&id);
    let stale = stale_network_state("gateway");
    assert!(
        stale.is_empty(),
        "network state of the killed stack outlived it:\n{}",
        stale.join("\n")
    );
    for c in left.iter().filter_map(|l| l.strip_prefix("container ")) {
        assert!(!container_exists(c), "{c} survived");
    }
    assert_eq!(
        read_record(&id)
            .and_then(|r| r.last_event().cloned())
            .map(|e| e["event"].clone()),
        Some("finished".into())
    );
    d.assert_all_present("clean --orphans");
    assert_eq!(
        leftovers(&kept_id),
        kept_resources,
        "clean --orphans touched the kept stack (no --include-kept)"
    );
    clean.assert_contains(&format!("run {kept_id}"));

    Xtask::new(&["integration", "datastorage", "--down"])
        .run()
        .assert_success();
    assert_nothing_left(&kept_id);
    let leaked = builds.leaked();
    assert!(
        leaked.is_empty(),
        "build containers of the killed run are left: {leaked:?}"
    );
}

/// SIGINT to `integration notification` with `flags` (what Ctrl-C in its terminal sends: its
/// children have their own process groups) once `ready` says so; then nothing of the run may
/// be left, not even its names of cached images.
fn interrupt_when(flags: &[&str], ready: impl Fn(&RunRecord) -> bool, what: &str) {
    // Exclusive: the interrupted builds are told apart from others by timing.
    let _all = exclusive(&["integration:notification"]);
    // Guards drop in reverse order: build containers, then `clean --run`, then network state.
    let _net = NetworkStateGuard::new(&["notification"]);
    let guard = CleanRuns::new();
    let builds = BuildLeftovers::new();
    let run = Xtask::new(&[&["integration", "notification"], flags].concat())
        .timeout(Duration::from_secs(300))
        .spawn();
    let id = run.wait_until(what, Duration::from_secs(120), || {
        let rec = run.record()?;
        guard.add(&rec.run_id);
        ready(&rec).then_some(rec.run_id)
    });
    run.signal(libc::SIGINT);
    let out = run.wait();
    assert!(
        out.code.is_some_and(|c| c != 0),
        "exit {:?} after Ctrl-C:\n{}",
        out.code,
        out.all()
    );
    assert!(out.elapsed < Duration::from_secs(120));
    let msg = out.all();
    assert!(
        msg.contains("interrupted"),
        "no word of the interruption:\n{msg}"
    );
    assert!(
        msg.contains("cleaned up"),
        "does not say it cleaned up:\n{msg}"
    );
    assert_nothing_left(&id);
    let rec = read_record(&id).unwrap();
    // Built images are cached without the run's label: only the run's names show its leftovers.
    let named: Vec<String> = rec
        .named("image")
        .into_iter()
        .filter(|r| image_exists(r))
        .collect();
    assert!(named.is_empty(), "Ctrl-C left the run's images: {named:?}");
    assert_eq!(
        rec.last_event().map(|e| e["event"].clone()),
        Some("finished".into()),
        "record: {:?}",
        rec.kinds()
    );
    assert_eq!(read_report(&id)["outcome"], "interrupted");
    // Nothing unlabelled either: no port forward or DNS record of the stack outlives it (a
    // stale DNAT rule for 15440 breaks every later notification run on this host)...
    let stale = stale_network_state("notification");
    assert!(
        stale.is_empty(),
        "Ctrl-C left network state of the stack:\n{}",
        stale.join("\n")
    );
    // ...and no build container: an interrupted `podman build` leaves buildah working
    // containers (`podman ps --external`) that pin images and that no prune removes.
    let leaked = builds.leaked();
    assert!(
        leaked.is_empty(),
        "Ctrl-C left build containers: {leaked:?}"
    );
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn ctrl_c_during_startup_leaves_nothing() {
    interrupt_when(
        &[],
        |rec| {
            let made = containers(&format!("{RUN}={}", rec.run_id));
            rec.named("container").iter().any(|c| made.contains(c))
        },
        "a recorded container to exist",
    );
}

/// The same, with the moment chosen so that an image build is in progress: `--rebuild`, as
/// the cache would otherwise serve the image, and the build is told by the run's reference
/// (cached images carry no run label).
#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn ctrl_c_during_an_image_build_leaves_nothing() {
    interrupt_when(
        &["--rebuild"],
        |rec| {
            rec.named("image").iter().any(|reference| {
                processes_mentioning(reference).iter().any(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|b| b.split(|c| *c == 0).nth(1) == Some(b"build".as_slice()))
                })
            })
        },
        "the run's image build to be running",
    );
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn clean_images_removes_a_cached_image_its_key_replaced_whatever_its_age() {
    // clean-images removes every replaced image of this user, and the other clean-images test
    // removes every unused one: nothing else of this test process may run meanwhile.
    let _all = exclusive(&[]);
    let mut d = Decoys::new();
    let key = format!("test{}", hex8());
    let now = unix_now().to_string();
    let labels = [
        (CACHE, "1"),
        (CACHE_KEY, key.as_str()),
        (OWNER, &me()),
        (CREATED, &now),
        (SERVICE, "xtask-test-decoy"),
    ];
    let name = format!("localhost/xtask-cache/xtask-test-decoy:{key}");
    let e = engine();
    // The key's first image, named as the cache names it (its decoy name taken off) ...
    let old = d.image("replaced", &labels);
    let old_id = image_id(&old);
    let old_id = old_id.trim_start_matches("sha256:");
    e.ok(&["tag", &old, &name]);
    e.ok(&["rmi", &old]);
    // ... until a newer image of the key takes the name (a --rebuild, two runs at once).
    let new = d.image("current", &labels);
    e.ok(&["tag", &new, &name]);
    let short = &old_id[..12];
    assert!(image_exists(old_id), "the replaced image is gone too early");

    let dry = Xtask::new(&["clean-images", "--dry-run"]).run();
    dry.assert_success();
    dry.assert_contains(&format!(
        "would remove cached {short} (a newer image of its key"
    ));
    assert!(image_exists(old_id), "--dry-run removed {short}");

    let real = Xtask::new(&["clean-images"]).run();
    real.assert_success();
    real.assert_contains(&format!("removed cached {short} (a newer image of its key"));
    assert!(
        !image_exists(old_id),
        "clean-images left the replaced image {short}"
    );
    // The key's image now is new (used moments ago): it stays, and so does every decoy.
    assert!(image_exists(&name) && image_exists(&new), "{}", real.stdout);
    e.ok(&["rmi", &name]);
    d.assert_present_but(&[&old], "clean-images");
}
