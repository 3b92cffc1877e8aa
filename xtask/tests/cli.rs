//! The commands as a user runs them, where no container engine is needed: tags, check, ports,
//! doctor, render, the E2E dry run, and the preflight that stops a run when a tool is missing.
#![allow(clippy::disallowed_methods)] // tests drive the built binaries and tools directly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn xtask(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .current_dir(root())
        .env_remove("IMAGE_TAG")
        .env_remove("XTASK_CONFIG");
    c
}

fn run(c: &mut Command) -> (bool, String, String) {
    let o: Output = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "xtask-cli-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of what `infra.toml` refers to, outside any git checkout, with `edit` applied.
fn workspace_copy(tag: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let d = temp_dir(tag);
    let r = root();
    for svc in ["datastorage", "notification", "gateway", "holmesgpt-api"] {
        std::fs::create_dir_all(d.join("services").join(svc)).unwrap();
        std::fs::copy(
            r.join("services").join(svc).join("Dockerfile"),
            d.join("services").join(svc).join("Dockerfile"),
        )
        .unwrap();
    }
    // The mocks build themselves from their folder, and mount a file of it.
    std::fs::create_dir_all(d.join("mocks")).unwrap();
    for f in ["Dockerfile", "responses.json"] {
        std::fs::copy(r.join("mocks").join(f), d.join("mocks").join(f)).unwrap();
    }
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    for e in std::fs::read_dir(r.join("manifests")).unwrap().flatten() {
        std::fs::copy(e.path(), d.join("manifests").join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(d.join("migrations")).unwrap();
    let text = std::fs::read_to_string(r.join("infra.toml")).unwrap();
    std::fs::write(d.join("infra.toml"), edit(text)).unwrap();
    d
}

/// `{service}-{user}-{git7}-{unix}`: `^[a-z]+-[A-Za-z0-9_]+-[0-9a-f]{7}-[0-9]{10}$` by hand.
fn is_service_tag(t: &str, service: &str, git7_hex: bool) -> bool {
    let Some(rest) = t.strip_prefix(&format!("{service}-")) else {
        return false;
    };
    let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
    let [unix, git7, user] = parts.as_slice() else {
        return false;
    };
    let user_ok = !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let git_ok = if git7_hex {
        git7.len() == 7
            && git7
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    } else {
        *git7 == "unknown"
    };
    user_ok && git_ok && unix.len() == 10 && unix.chars().all(|c| c.is_ascii_digit())
}

#[test]
fn service_tags_have_the_format_and_image_tag_overrides() {
    let (ok, out, err) = run(&mut xtask(&["tag", "notification"]));
    assert!(ok, "{err}");
    assert!(is_service_tag(out.trim(), "notification", true), "{out}");
    let (ok, out, _) = run(xtask(&["tag", "notification"]).env("IMAGE_TAG", "x"));
    assert!(ok);
    assert_eq!(out, "x\n");
    let (ok, _, err) = run(xtask(&["tag", "notification"]).env("IMAGE_TAG", "latest"));
    assert!(!ok && err.contains("`latest` is refused"), "{err}");
    let (ok, _, err) = run(&mut xtask(&["tag", "notifcation"]));
    assert!(
        !ok && err.contains("`notifcation` is not a component"),
        "{err}"
    );
}

#[test]
fn infrastructure_tags_are_random_per_call() {
    let tag = || {
        let (ok, out, err) = run(&mut xtask(&[
            "tag",
            "datastorage",
            "--consumer",
            "notification",
        ]));
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let (a, b) = (tag(), tag());
    for t in [&a, &b] {
        let hex = t
            .strip_prefix("localhost/datastorage:notification-")
            .unwrap_or_else(|| panic!("{t}"));
        assert!(
            hex.len() == 8
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{t}"
        );
    }
    assert_ne!(a, b);
}

#[test]
fn outside_git_the_tag_still_forms() {
    let d = workspace_copy("nogit", |t| t);
    let cfg = d.join("infra.toml");
    let (ok, out, err) = run(
        xtask(&["--config", cfg.to_str().unwrap(), "tag", "gateway"])
            .env("GIT_CEILING_DIRECTORIES", d.parent().unwrap()),
    );
    assert!(ok, "{err}");
    assert!(
        is_service_tag(out.trim(), "gateway", false),
        "documented fallback `unknown`: {out}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn check_passes_and_names_both_owners_of_a_shared_port() {
    let (ok, out, err) = run(&mut xtask(&["check"]));
    assert!(ok, "{err}");
    assert!(out.contains(": ok ("), "{out}");
    // notification's PostgreSQL port changed to gateway's.
    let d = workspace_copy("dup", |t| {
        t.replacen("postgres = 15440", "postgres = 15437", 1)
    });
    let cfg = d.join("infra.toml");
    let (ok, _, err) = run(&mut xtask(&["--config", cfg.to_str().unwrap(), "check"]));
    assert!(!ok);
    assert!(err.contains("host port 15437"), "{err}");
    assert!(
        err.contains("consumers.notification.integration.ports.postgres"),
        "{err}"
    );
    assert!(
        err.contains("consumers.gateway.integration.ports.postgres"),
        "{err}"
    );
    assert!(err.contains("infra.toml:"), "{err}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn syntax_errors_have_a_line_number() {
    let d = workspace_copy("syntax", |t| {
        t.replacen("\n[postgres]\n", "\n[postgres\n", 1)
    });
    let text = std::fs::read_to_string(d.join("infra.toml")).unwrap();
    let line = text.lines().position(|l| l == "[postgres").unwrap() + 1;
    let cfg = d.join("infra.toml");
    let (ok, _, err) = run(&mut xtask(&["--config", cfg.to_str().unwrap(), "check"]));
    assert!(!ok);
    assert!(
        err.contains(&format!("infra.toml:{line}:")),
        "line {line}: {err}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn ports_lists_every_host_port() {
    let (ok, out, _) = run(&mut xtask(&["ports"]));
    assert!(ok);
    for p in [
        "15433", "16379", "15437", "16380", "18091", "19091", "15440", "16385", "18096", "19096",
        "28120", "28121",
    ] {
        assert!(out.contains(p), "{p} missing:\n{out}");
    }
    assert!(out.lines().next().unwrap().starts_with("CONSUMER"));
}

/// A folder with links to the given programs (those that exist), to build a PATH without kind.
fn path_with(programs: &[&str]) -> PathBuf {
    let d = temp_dir("path");
    let system = std::env::var_os("PATH").unwrap();
    for p in programs {
        if let Some(found) = std::env::split_paths(&system)
            .map(|dir| dir.join(p))
            .find(|f| f.is_file())
        {
            std::os::unix::fs::symlink(found, d.join(p)).unwrap();
        }
    }
    d
}

#[test]
fn doctor_reports_missing_tools_with_advice() {
    let bin = path_with(&["kubectl", "git", "podman"]);
    let (ok, out, _) = run(xtask(&["doctor"]).env("PATH", &bin));
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("kind") && l.contains("MISSING")),
        "{out}"
    );
    assert!(out.contains("install:   curl -Lo ./kind"), "{out}");
    assert!(out.contains("needed by: e2e"), "{out}");
    if bin.join("kubectl").exists() {
        assert!(
            out.lines()
                .any(|l| l.starts_with("kubectl") && l.contains("found")),
            "{out}"
        );
    }
    std::fs::remove_dir_all(bin).unwrap();
}

#[test]
fn e2e_without_kind_stops_before_any_work() {
    let runs = root().join("target/xtask/runs");
    let before = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    let bin = path_with(&["kubectl", "git", "podman", "cargo"]);
    let (ok, _, err) = run(xtask(&["e2e", "notification"]).env("PATH", &bin));
    assert!(!ok);
    assert!(err.contains("`kind` not found in PATH"), "{err}");
    assert!(
        err.contains("install it:") && err.contains("nothing was done"),
        "{err}"
    );
    let after = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    assert!(after <= before, "no run record may be created");
    std::fs::remove_dir_all(bin).unwrap();
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let (ok, out, err) = run(&mut xtask(&["e2e", "notification", "--dry-run"]));
    assert!(ok, "{err}");
    for needle in [
        "phase 0",
        "phase 1",
        "phase 2",
        "phase 3",
        "phase 4",
        "phase 5",
        "phase 6",
        "kind create cluster",
        "load image-archive",
        "apply -f -",
        "build --pull=never",
        "--test e2e",
    ] {
        assert!(
            out.contains(needle),
            "`{needle}` missing from the plan:\n{out}"
        );
    }
    assert!(out.contains("localhost/datastorage:notification-"), "{out}");
}

#[test]
fn render_writes_kind_config_and_manifests() {
    let d = temp_dir("render");
    let (ok, out, err) = run(&mut xtask(&[
        "render",
        "gateway",
        "--out",
        d.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let kind = std::fs::read_to_string(d.join("kind-config.yaml")).unwrap();
    assert!(
        kind.contains("kind: Cluster") && kind.contains("hostPort: 28110"),
        "{kind}"
    );
    let m = std::fs::read_to_string(d.join("manifests.yaml")).unwrap();
    for needle in [
        "kind: Namespace",
        "kind: Deployment",
        "kind: Job",
        "kind: Service",
        "kind: Secret",
        "imagePullPolicy: Never",
        "NOTIFICATION_URL: \"http://notification:8080\"",
    ] {
        assert!(m.contains(needle), "`{needle}` missing");
    }
    assert!(out.contains("manifests.yaml"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn overrides_are_checked() {
    let (ok, _, err) = run(&mut xtask(&[
        "render",
        "notification",
        "--out",
        "/nonexistent/x",
        "--set",
        "datastorge.timeout=5s",
    ]));
    assert!(
        !ok && err.contains("unknown component `datastorge` (did you mean `datastorage`?)"),
        "{err}"
    );
}

#[test]
fn no_install_takes_the_values_the_tool_tells_users_to_set() {
    for v in ["1", "true", "yes", "0", "false"] {
        let (ok, out, err) = run(xtask(&["tag", "notification"]).env("XTASK_NO_INSTALL", v));
        assert!(ok, "XTASK_NO_INSTALL={v}: {err}");
        assert!(out.starts_with("notification-"), "{out}");
    }
    let (ok, _, err) = run(xtask(&["tag", "notification"]).env("XTASK_NO_INSTALL", "maybe"));
    assert!(
        !ok && err.contains("XTASK_NO_INSTALL") || err.contains("no-install"),
        "{err}"
    );
}

#[test]
fn an_age_out_of_range_is_refused_before_any_engine_is_asked() {
    // PATH without any engine: the flag is checked first, so the error is about the flag.
    let bin = path_with(&["git", "cargo"]);
    for (age, says) in [("300000000000000d", "too large"), ("3x", "unknown unit")] {
        let (ok, _, err) = run(xtask(&["clean-images", "--older-than", age]).env("PATH", &bin));
        assert!(!ok, "{age}");
        assert!(
            err.contains("--older-than") && err.contains(says),
            "{age}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(bin).unwrap();
}
