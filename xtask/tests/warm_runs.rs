//! Warm runs do only what changed: a change to one image's inputs rebuilds exactly that image,
//! and the run report says which input changed; every other image is a cache hit.

mod common;

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
