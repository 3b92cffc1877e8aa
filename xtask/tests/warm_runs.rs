//! Warm runs do only what changed: a change to one image's inputs rebuilds exactly that image,
//! and the run report says which input changed; every other image is a cache hit. A
//! `--rebuild` leaves one image per key: the ones it replaced go.

mod common;

use std::collections::BTreeSet;

use common::*;

/// A file added to `mocks/` (the mock LLM's build context) for the test, removed when dropped.
struct Touch(std::path::PathBuf);

impl Drop for Touch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Each image task of a run's report: (task, cache, why).
fn image_notes(run_id: &str) -> Vec<(String, String, String)> {
    let report = read_report(run_id);
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().is_some_and(|i| i.starts_with("image:")))
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("cache"), s("why"))
        })
        .collect()
}

#[test]
#[ignore = "needs podman, the stand-in images and the Debian mirror: run by `cargo xtask test`"]
fn a_changed_context_file_rebuilds_exactly_that_image_and_says_why() {
    let _slot = slots(&["integration:holmesgpt-api"]);
    let guard = CleanRuns::new();
    // Warm: whatever the cache held, after this run it holds every image of the stack.
    warm_integration_run("holmesgpt-api", &guard);
    let name = format!("xtask-test-{}.txt", hex8());
    let _touch = Touch(root().join("mocks").join(&name));
    std::fs::write(&_touch.0, "a new input of the mock LLM's image\n").unwrap();
    let id = warm_integration_run("holmesgpt-api", &guard);
    let notes = image_notes(&id);
    assert!(
        notes.len() >= 2 && notes.iter().any(|n| n.0 == "image:mock-llm"),
        "{notes:?}"
    );
    for (task, cache, why) in &notes {
        if task == "image:mock-llm" {
            assert_eq!(cache, "miss", "{notes:?}");
            assert!(why.contains(&format!("{name} added")), "{task}: {why}");
        } else {
            assert_eq!(cache, "hit", "{task} was not reused: {why} ({notes:?})");
        }
    }
}

/// The cache keys of a run's report: (task, key) of every task with a cache note.
fn cache_keys(run_id: &str) -> Vec<(String, String)> {
    read_report(run_id)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            Some((
                t["id"].as_str()?.to_string(),
                t["key"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
#[ignore = "needs podman, the stand-in images and the Debian mirror: run by `cargo xtask test`"]
fn a_rebuild_replaces_the_cached_images_of_its_keys_and_leaves_no_copy() {
    // Alone: another consumer's run could name the image being replaced (then it stays).
    let _all = exclusive(&["integration:datastorage"]);
    let guard = CleanRuns::new();
    let warm = warm_integration_run("datastorage", &guard);
    let keys = cache_keys(&warm);
    let with_key = |key: &str| images(&format!("{CACHE_KEY}={key}"));
    // The id of each key's image now (its name moves to the new one).
    let before: Vec<BTreeSet<String>> = keys
        .iter()
        .map(|(_, k)| with_key(k).iter().map(|i| image_id(i)).collect())
        .collect();
    assert!(
        keys.iter().any(|(t, _)| t == "image:datastorage")
            && keys
                .iter()
                .any(|(t, _)| t == "data:postgres" || t == "snapshot:postgres"),
        "{keys:?}"
    );
    let out = Xtask::new(&[
        "integration",
        "datastorage",
        "--rebuild",
        "--",
        "no_test_is_called_this",
    ])
    .timeout(std::time::Duration::from_secs(900))
    .run();
    let id = out.run_id().expect("a run id");
    guard.add(&id);
    out.assert_success();
    let rebuilt = cache_keys(&id);
    for ((task, key), old) in keys.iter().zip(&before) {
        if task == "migrations" {
            continue;
        }
        // Same inputs, same key: the new image took the key's name, and the one it replaced
        // is gone (a second image of one key is never looked up again).
        // A data image used on a warm run (`data:`) is made again on a rebuild (`snapshot:`).
        let same_task = |t: &str| {
            t == task
                || matches!(
                    (t.strip_prefix("snapshot:"), task.strip_prefix("data:")),
                    (Some(a), Some(b)) if a == b
                )
        };
        let (_, new_key) = rebuilt
            .iter()
            .find(|(t, _)| same_task(t))
            .unwrap_or_else(|| panic!("{task} missing after --rebuild: {rebuilt:?}"));
        assert_eq!(new_key, key, "{task}");
        let now = with_key(key);
        assert_eq!(
            now.len(),
            1,
            "{task}: images of key {key}: {now:?} (before: {old:?})"
        );
        let new_id = image_id(now.iter().next().unwrap());
        assert!(
            !old.contains(&new_id),
            "{task}: --rebuild made no new image"
        );
    }
}
