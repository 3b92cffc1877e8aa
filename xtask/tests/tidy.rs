//! Tidy tests: the conventions of this repository, checked on every `cargo test` rather than
//! remembered by reviewers.
#![allow(clippy::disallowed_methods)] // tests drive the built binaries and tools directly

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn our_rust_files() -> Vec<PathBuf> {
    let r = root();
    let mut files = rust_files(&r.join("xtask"));
    files.extend(rust_files(&r.join("services")));
    files
}

/// The two source folders of the xtask: its own and its pure layers' crate (`xtask/model`).
const XTASK_SRC: [&str; 2] = ["xtask/src", "xtask/model/src"];

fn xtask_src() -> Vec<(PathBuf, String)> {
    XTASK_SRC
        .iter()
        .flat_map(|d| rust_files(&root().join(d)))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// Lines of code without `//` comments (good enough for these checks).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let bad: Vec<String> = our_rust_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        bad.is_empty(),
        "these files do not start with a `//!` line saying what they are for:\n{}",
        bad.join("\n")
    );
}

/// Layer rule: only `exec/process.rs` starts processes. clippy enforces it
/// (`xtask/clippy.toml` disallows `Command::new`, `duct::cmd`, xshell's runners); this checks
/// that no other file opts out, and that the rule stays configured.
#[test]
fn only_the_process_module_starts_processes() {
    let clippy = std::fs::read_to_string(root().join("xtask/clippy.toml")).unwrap();
    for banned in [
        "std::process::Command::new",
        "duct::cmd",
        "xshell::Cmd::run",
    ] {
        assert!(
            clippy.contains(banned),
            "xtask/clippy.toml no longer bans {banned}"
        );
    }
    let opted_out: Vec<String> = xtask_src()
        .into_iter()
        .filter(|(_, text)| text.contains("clippy::disallowed_methods"))
        .map(|(p, _)| rel(&p))
        .collect();
    assert_eq!(
        opted_out,
        ["xtask/src/exec/process.rs", "xtask/src/exec/quick.rs"]
    );
}

/// The `[dependencies]` of a manifest, by name, in order.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(manifest)).unwrap();
    text.split("\n[dependencies]")
        .nth(1)
        .unwrap_or_else(|| panic!("{manifest} has no [dependencies]"))
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split(['=', ' ']).next())
        .map(String::from)
        .collect()
}

/// Layer rule: planning is pure, so a dry run and a run cannot disagree. `config/`, `plan/` and
/// `graph.rs` are a crate of their own, `xtask/model`: it cannot name `exec`, `host` or `cmd`
/// (they are not in it), none of its dependencies starts processes or touches the terminal,
/// and it uses no `std::process` outside its tests.
#[test]
fn the_pure_layers_are_a_crate_without_effects() {
    for layer in ["config", "plan", "graph.rs"] {
        assert!(
            !root().join("xtask/src").join(layer).exists(),
            "xtask/src/{layer} belongs in xtask/model/src (the pure layers' crate)"
        );
    }
    let deps = dependencies("xtask/model/Cargo.toml");
    assert_eq!(
        deps,
        [
            "anyhow",
            "serde",
            "serde_json",
            "strsim",
            "toml",
            "yaml-rust2"
        ],
        "xtask/model's dependencies: adding one is a decision (pure, and on the cold build's \
         critical path)"
    );
    for effect in [
        "duct",
        "xshell",
        "which",
        "indicatif",
        "signal-hook",
        "libc",
    ] {
        assert!(
            !deps.iter().any(|d| d == effect),
            "xtask/model must not depend on {effect}"
        );
    }
    let mut bad = Vec::new();
    let src = root().join("xtask/model/src");
    for p in rust_files(&src) {
        // Unit tests sit at the end of a file, in `tests.rs` or in a `tests/` folder.
        let inner = p.strip_prefix(&src).unwrap();
        if inner.ends_with("tests.rs") || inner.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, l) in code_lines(code) {
            if l.contains("std::process") || l.contains("std::os::unix::process") {
                bad.push(format!("{}:{n}: {}", rel(&p), l.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the pure layers start no processes:\n{}",
        bad.join("\n")
    );
}

/// Cold build: cargo pipelines libraries (they start once their dependencies' metadata exists),
/// not binaries (they wait for full builds), so the xtask's code is a library and its binary
/// one call (ARCHITECTURE.md, "Cold build").
#[test]
fn the_layers_below_the_commands_never_call_a_command() {
    // Commands use execution and host tools; a helper a lower layer needs lives there.
    let mut up = Vec::new();
    for (p, text) in xtask_src() {
        let r = rel(&p);
        if !["xtask/src/host/", "xtask/src/exec/", "xtask/src/standins/"]
            .iter()
            .any(|d| r.starts_with(d))
        {
            continue;
        }
        for (n, l) in code_lines(&text) {
            if l.contains("crate::cmd::") {
                up.push(format!("{r}:{n}: {}", l.trim()));
            }
        }
    }
    assert!(
        up.is_empty(),
        "a lower layer calls into cmd:\n{}",
        up.join("\n")
    );
}

#[test]
fn the_binary_only_calls_the_library() {
    let main = std::fs::read_to_string(root().join("xtask/src/main.rs")).unwrap();
    let code: Vec<&str> = code_lines(&main)
        .map(|(_, l)| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("//!"))
        .collect();
    assert_eq!(
        code,
        [
            "fn main() -> std::process::ExitCode {",
            "xtask::main()",
            "}"
        ],
        "xtask/src/main.rs only calls xtask::main (the code belongs in the library)"
    );
}

/// Layer rule: only `host/` removes engine resources (through `Ours<T>`, see
/// `removal_only_through_label_filtered_selections`), and no file of `xtask/src` is longer
/// than 600 lines.
#[test]
fn files_stay_short() {
    let long: Vec<String> = xtask_src()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 600)
        .map(|(p, text)| format!("{} ({} lines)", rel(&p), text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "split these files (at most 600 lines):\n{}",
        long.join("\n")
    );
}

#[test]
fn no_shell_strings_anywhere() {
    let mut bad = Vec::new();
    for p in our_rust_files() {
        if p.ends_with("tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (n, l) in code_lines(&text) {
            let squeezed: String = l.split_whitespace().collect();
            for shell in [
                "\"sh\",\"-c\"",
                "\"bash\",\"-c\"",
                "Cmd::new(\"sh\")",
                "Cmd::new(\"bash\")",
                "Command::new(\"sh\")",
                "Command::new(\"bash\")",
            ] {
                if squeezed.contains(shell) {
                    bad.push(format!("{}:{n}: {}", rel(&p), l.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "processes are argv vectors, never shell strings:\n{}",
        bad.join("\n")
    );
}

/// Architecture invariant: a run never deletes what it did not label. Removal commands exist
/// only in engine.rs, whose removal functions accept only resources selected by our labels.
#[test]
fn removal_only_through_label_filtered_selections() {
    let mut bad = Vec::new();
    for (p, text) in xtask_src() {
        for (n, l) in code_lines(&text) {
            if l.contains("prune") {
                bad.push(format!(
                    "{}:{n}: an unfiltered prune: {}",
                    rel(&p),
                    l.trim()
                ));
            }
            let removal = ["\"rm\"", "\"rmi\"", "\"rm\",", "\"--force\""]
                .iter()
                .any(|w| l.contains(w));
            if removal && !rel(&p).starts_with("xtask/src/host/engine") {
                bad.push(format!(
                    "{}:{n}: removal outside engine.rs: {}",
                    rel(&p),
                    l.trim()
                ));
            }
        }
    }
    let engine = std::fs::read_to_string(root().join("xtask/src/host/engine.rs")).unwrap();
    for f in [
        "pub fn remove_containers(&self, items: &[Ours<",
        "pub fn remove_networks(&self, items: &[Ours<",
        "pub fn remove_images(&self, items: &[Ours<",
    ] {
        assert!(
            engine.contains(f),
            "engine.rs must keep `{f}...` (removal accepts only label-selected resources)"
        );
    }
    // `Ours` can only be made inside engine.rs: its field is private and no constructor is public.
    assert!(engine.contains("pub struct Ours<T>(T);"));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Architecture invariant: engine commands that change state are never interrupted.
#[test]
fn engine_changes_are_uninterruptible() {
    for (file, f) in [
        ("host/engine.rs", "run_cmd"),
        ("host/engine.rs", "network_create_cmd"),
        ("host/engine.rs", "build_cmd"),
        ("host/engine.rs", "save_cmd"),
        ("host/engine.rs", "remove_containers"),
        ("host/engine.rs", "remove_networks"),
        ("host/engine.rs", "remove_images"),
        ("standins/import.rs", "import_cmd"),
    ] {
        let text = std::fs::read_to_string(root().join("xtask/src").join(file)).unwrap();
        let start = text
            .find(&format!("pub fn {f}("))
            .unwrap_or_else(|| panic!("{file} has no `{f}`"));
        let rest = &text[start + 4..];
        let end = ["\n    pub fn ", "\n    fn ", "\npub fn ", "\nfn ", "\n}\n"]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
            .unwrap_or(rest.len());
        assert!(
            rest[..end].contains(".uninterruptible()") && !rest[..end].contains(".timeout("),
            "{file} `{f}` must use Cmd::uninterruptible()"
        );
    }
}

#[test]
fn errors_are_lowercase_without_a_trailing_period() {
    let mut bad = Vec::new();
    for (p, text) in xtask_src() {
        for (n, l) in code_lines(&text) {
            for opener in [
                "bail!(\"",
                "context(\"",
                "anyhow!(\"",
                "with_context(|| format!(\"",
            ] {
                let Some(i) = l.find(opener) else { continue };
                let msg = &l[i + opener.len()..];
                let mut chars = msg.chars();
                let (a, b) = (chars.next().unwrap_or(' '), chars.next().unwrap_or(' '));
                if a.is_ascii_uppercase() && b.is_ascii_lowercase() {
                    bad.push(format!(
                        "{}:{n}: starts with a capital: {}",
                        rel(&p),
                        l.trim()
                    ));
                }
                if let Some(end) = msg.find("\"") {
                    if msg[..end].ends_with('.') {
                        bad.push(format!("{}:{n}: ends with a period: {}", rel(&p), l.trim()));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "error messages: lowercase, no trailing period:\n{}",
        bad.join("\n")
    );
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn subcommands() -> Vec<String> {
    let help = String::from_utf8(xtask(&["--help"]).stdout).unwrap();
    let mut in_cmds = false;
    let mut out = Vec::new();
    for l in help.lines() {
        if l.starts_with("Commands:") {
            in_cmds = true;
            continue;
        }
        if in_cmds {
            if l.trim().is_empty() {
                break;
            }
            let name = l.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                out.push(name.to_string());
            }
        }
    }
    assert!(
        out.len() >= 10,
        "could not read the subcommands from --help:\n{help}"
    );
    out
}

#[test]
fn the_repository_infra_toml_passes_check() {
    let out = xtask(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readme_mentions_every_subcommand_and_architecture_every_module() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let missing: Vec<String> = subcommands()
        .into_iter()
        .filter(|c| !readme.contains(&format!("cargo xtask {c}")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not mention: {}",
        missing.join(", ")
    );

    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let modules: Vec<String> = XTASK_SRC
        .iter()
        .flat_map(|d| {
            let src = root().join(d);
            rust_files(&src)
                .into_iter()
                .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
                .map(move |p| p.strip_prefix(&src).unwrap().display().to_string())
        })
        .filter(|n| !arch.contains(&format!("`{n}`")))
        .collect();
    assert!(
        modules.is_empty(),
        "ARCHITECTURE.md's code map lacks: {}",
        modules.join(", ")
    );
    assert!(arch.contains("**Architecture Invariant:**"));
}

#[test]
fn every_help_fits_one_screen() {
    for c in subcommands() {
        let out = xtask(&[&c, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines = text.lines().count();
        assert!(
            out.status.success() && lines <= 60,
            "`cargo xtask {c} --help` has {lines} lines:\n{text}"
        );
    }
}

/// The README's first code block holds the two commands a newcomer needs; CI runs the second.
#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block: Vec<&str> = readme
        .split("```")
        .nth(1)
        .expect("a code block in README.md")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        block.len(),
        2,
        "the README's first code block has the main job and the test command: {block:?}"
    );
    let test_cmd = block[1].trim();
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run must run `{test_cmd}` exactly as the README gives it"
    );
}

#[test]
fn xtask_dependencies_stay_few() {
    // Adding one is a decision: every contributor compiles the xtask. Update this list (and the
    // cold-build figure in the README) when you make it; the pure layers' crate has its own
    // list (`the_pure_layers_are_a_crate_without_effects`).
    assert_eq!(
        dependencies("xtask/Cargo.toml"),
        [
            "anyhow",
            "clap",
            "duct",
            "indicatif",
            "libc",
            "serde",
            "serde_json",
            "signal-hook",
            "uuid",
            "which",
            "xshell",
            "xtask-model"
        ]
    );
}

/// A program a test starts by its absolute path (`"/usr/bin/docker-registry"`) must be a
/// package `cargo xtask test` installs or checks (`host/packages.rs`): a new machine has only
/// what the project brings.
#[test]
fn programs_the_tests_start_by_path_are_installed_packages() {
    let packages = std::fs::read_to_string(root().join("xtask/src/host/packages.rs")).unwrap();
    let mut missing = Vec::new();
    for dir in ["xtask/tests", "xtask/fake-kube/tests"] {
        for f in rust_files(&root().join(dir)) {
            if f.ends_with("tidy.rs") {
                continue; // this test's own pattern
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("\"/usr/bin/") {
                let path: String = text[i + 1..].chars().take_while(|c| *c != '"').collect();
                if !packages.contains(&format!("probe: \"{path}\"")) {
                    missing.push(format!("{} ({})", path, f.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in host/packages.rs: {missing:?}");
}

#[test]
fn lockfile_is_committed() {
    let out = Command::new("git")
        .args(["ls-files", "--error-unmatch", "Cargo.lock"])
        .current_dir(root())
        .output();
    if let Ok(o) = out {
        // Outside a git checkout (a source tarball) there is nothing to check.
        if String::from_utf8_lossy(&o.stderr).contains("not a git repository") {
            return;
        }
        assert!(o.status.success(), "Cargo.lock must be committed");
    }
}
