//! Compiling Rust once for every image of a run, and assembling each image's build context
//! (its binary and the extra paths `infra.toml` lists), so that `podman build` only copies
//! files onto the runtime base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::process::Cmd;

/// `$CARGO` (set when run through `cargo xtask`) or `cargo`.
pub fn cargo() -> Cmd {
    Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// One `cargo build` of the binaries of `packages` (dev profile).
pub fn compile_cmd(root: &Path, packages: &[String]) -> Cmd {
    let mut c = cargo().current_dir(root).args([
        "build",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    for p in packages {
        c = c.args(["--package", p]);
    }
    c
}

/// Compiles the test target the run will execute, so that running it later starts at once.
pub fn compile_tests_cmd(root: &Path, package: &str, target: &str) -> Cmd {
    cargo()
        .current_dir(root)
        .args(["test", "--no-run", "--package", package, "--test", target])
}

/// Executables by binary name, from cargo's JSON messages.
pub fn parse_artifacts(stdout: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("reason").and_then(|r| r.as_str()) != Some("compiler-artifact") {
            continue;
        }
        let is_bin = v
            .pointer("/target/kind")
            .and_then(|k| k.as_array())
            .is_some_and(|k| k.iter().any(|x| x.as_str() == Some("bin")));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            v.pointer("/target/name").and_then(|n| n.as_str()),
            v.get("executable").and_then(|e| e.as_str()),
        ) {
            out.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    out
}

/// Fills a build context: the binary at its root, and each extra path under the same name.
pub fn assemble(
    ctx: &Path,
    root: &Path,
    exe: &Path,
    binary: &str,
    extra: &[PathBuf],
) -> Result<()> {
    if ctx.exists() {
        std::fs::remove_dir_all(ctx).with_context(|| format!("clearing {}", ctx.display()))?;
    }
    std::fs::create_dir_all(ctx).with_context(|| format!("creating {}", ctx.display()))?;
    let dest = ctx.join(binary);
    if std::fs::hard_link(exe, &dest).is_err() {
        std::fs::copy(exe, &dest)
            .with_context(|| format!("copying {} into the build context", exe.display()))?;
    }
    for extra in extra {
        copy_tree(&root.join(extra), &ctx.join(extra))?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_from_cargo_messages() {
        let out = r#"{"reason":"compiler-artifact","target":{"name":"serde","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"datastorage","kind":["bin"]},"executable":"/t/debug/datastorage"}
{"reason":"build-finished","success":true}
not json"#;
        let a = parse_artifacts(out);
        assert_eq!(a.len(), 1);
        assert_eq!(a["datastorage"], PathBuf::from("/t/debug/datastorage"));
    }

    #[test]
    fn compile_is_one_cargo_build_for_all_packages() {
        let c = compile_cmd(
            Path::new("/repo"),
            &["datastorage".into(), "notification".into()],
        );
        let argv = c.argv();
        assert_eq!(argv.iter().filter(|a| *a == "build").count(), 1);
        assert!(argv.windows(2).any(|w| w == ["--package", "datastorage"]));
        assert!(argv.windows(2).any(|w| w == ["--package", "notification"]));
    }

    #[test]
    fn contexts_hold_the_binary_and_extra_paths() {
        let tmp =
            std::env::temp_dir().join(format!("xtask-ctx-{}", crate::host::facts::random_id()));
        let root = tmp.join("repo");
        std::fs::create_dir_all(root.join("migrations")).unwrap();
        std::fs::write(root.join("migrations/0001_a.sql"), "select 1;").unwrap();
        std::fs::write(tmp.join("bin"), "ELF").unwrap();
        let extra = vec![PathBuf::from("migrations")];
        let ctx = tmp.join("ctx");
        assemble(&ctx, &root, &tmp.join("bin"), "ds", &extra).unwrap();
        assert_eq!(std::fs::read_to_string(ctx.join("ds")).unwrap(), "ELF");
        assert_eq!(
            std::fs::read_to_string(ctx.join("migrations/0001_a.sql")).unwrap(),
            "select 1;"
        );
        // Assembling again starts from an empty folder.
        std::fs::write(ctx.join("stale"), "x").unwrap();
        assemble(&ctx, &root, &tmp.join("bin"), "ds", &extra).unwrap();
        assert!(!ctx.join("stale").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
