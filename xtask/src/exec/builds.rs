//! Our service images: Rust is compiled once on the host for every image of a run (one
//! `cargo build`), then each image's build context is a small folder holding just its binary and
//! the extra paths `infra.toml` lists, so `podman build` only copies files onto the runtime base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::config::{Config, RustSpec};
use crate::exec::process::Cmd;
use crate::exec::progress::Line;
use crate::exec::record::{Event, Record};
use crate::host::engine::BuildSpec;
use crate::host::tools::Engine;
use crate::plan::facts::{rfc3339, Facts};

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

/// Runs the compile, showing cargo's progress on `line`; returns the executables.
pub fn compile(root: &Path, packages: &[String], line: &Line) -> Result<BTreeMap<String, PathBuf>> {
    line.state("compiling", &packages.join(", "));
    let show = line.detail_sink();
    let out = compile_cmd(root, packages)
        .run_streaming(move |l| {
            if !l.starts_with('{') && !l.trim().is_empty() {
                show(l.trim());
            }
        })
        .context("compiling the service binaries (fix the build, then run again)")?;
    let artifacts = parse_artifacts(&out.stdout);
    if artifacts.is_empty() {
        bail!("cargo reported no binaries for {}", packages.join(", "));
    }
    Ok(artifacts)
}

/// `target/xtask/runs/<run>/context/<service>`.
pub fn context_dir(run_dir: &Path, service: &str) -> PathBuf {
    run_dir.join("context").join(service)
}

/// Fills a build context: the binary at its root, and each extra path under the same name.
pub fn assemble(ctx: &Path, root: &Path, spec: &RustSpec, binary: &Path) -> Result<()> {
    if ctx.exists() {
        std::fs::remove_dir_all(ctx).with_context(|| format!("clearing {}", ctx.display()))?;
    }
    std::fs::create_dir_all(ctx).with_context(|| format!("creating {}", ctx.display()))?;
    let dest = ctx.join(&spec.binary);
    if std::fs::hard_link(binary, &dest).is_err() {
        std::fs::copy(binary, &dest)
            .with_context(|| format!("copying {} into the build context", binary.display()))?;
    }
    for extra in &spec.context {
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

/// The `podman build` of one service image: its Dockerfile, the assembled context, our labels,
/// the runtime base and the OCI labels' values as build arguments.
pub fn build_spec(
    config: &Config,
    spec: &RustSpec,
    reference: &str,
    ctx: &Path,
    labels: BTreeMap<String, String>,
    facts: &Facts,
    runtime_base: &str,
) -> BuildSpec {
    let mut build_args = BTreeMap::new();
    build_args.insert("BASE_IMAGE".to_string(), runtime_base.to_string());
    build_args.insert("REVISION".to_string(), facts.revision.clone());
    build_args.insert("CREATED".to_string(), rfc3339(facts.unix));
    BuildSpec {
        reference: reference.to_string(),
        dockerfile: config.root.join(&spec.dockerfile),
        context: ctx.to_path_buf(),
        labels,
        build_args,
    }
}

/// The build tasks of a run (integration or E2E): the one compile, the test compile, and
/// image builds, sharing what the compile produced.
pub struct Builds<'a> {
    pub root: &'a Path,
    pub engine: &'a Engine,
    pub record: &'a Record,
    /// Binaries from the compile task, by name.
    artifacts: Mutex<BTreeMap<String, PathBuf>>,
}

impl<'a> Builds<'a> {
    pub fn new(root: &'a Path, engine: &'a Engine, record: &'a Record) -> Builds<'a> {
        Builds {
            root,
            engine,
            record,
            artifacts: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn compile(&self, packages: &[String], line: &Line) -> Result<String> {
        let a = compile(self.root, packages, line)?;
        let n = a.len();
        *self
            .artifacts
            .lock()
            .map_err(|_| anyhow::anyhow!("the build state lock was poisoned"))? = a;
        Ok(format!("{n} binaries"))
    }

    pub fn compile_tests(&self, package: &str, target: &str, line: &Line) -> Result<String> {
        line.state("compiling", &format!("{package} --test {target}"));
        let show = line.detail_sink();
        compile_tests_cmd(self.root, package, target)
            .run_streaming(move |l| show(l.trim()))
            .with_context(|| format!("compiling the {target} tests of {package}"))?;
        Ok(String::new())
    }

    /// A service image: its binary from the compile, assembled into its context, built.
    pub fn service_image(
        &self,
        service: &str,
        spec: &RustSpec,
        build: &BuildSpec,
        line: &Line,
    ) -> Result<String> {
        let binary = self
            .artifacts
            .lock()
            .map_err(|_| anyhow::anyhow!("the build state lock was poisoned"))?
            .get(&spec.binary)
            .cloned()
            .with_context(|| {
                format!(
                    "cargo built no binary `{}` for {service} (check [services.{service}].binary)",
                    spec.binary
                )
            })?;
        assemble(&build.context, self.root, spec, &binary)?;
        self.build(build, line).with_context(|| {
            format!("building the {service} image (is its base there? `cargo xtask standins` builds local ones)")
        })
    }

    /// Runs one `podman build`, recording the image first.
    pub fn build(&self, build: &BuildSpec, line: &Line) -> Result<String> {
        self.record.add(&Event::Image {
            reference: build.reference.clone(),
        })?;
        line.state("building", &build.reference);
        let show = line.detail_sink();
        self.engine
            .build_cmd(build)
            .run_streaming(move |l| show(l.trim()))
            .with_context(|| format!("building {}", build.reference))?;
        Ok(build.reference.clone())
    }
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
            std::env::temp_dir().join(format!("xtask-ctx-{}", crate::plan::facts::random_id()));
        let root = tmp.join("repo");
        std::fs::create_dir_all(root.join("migrations")).unwrap();
        std::fs::write(root.join("migrations/0001_a.sql"), "select 1;").unwrap();
        std::fs::write(tmp.join("bin"), "ELF").unwrap();
        let spec = RustSpec {
            dockerfile: "Dockerfile".into(),
            package: "ds".into(),
            binary: "ds".into(),
            context: vec!["migrations".into()],
        };
        let ctx = tmp.join("ctx");
        assemble(&ctx, &root, &spec, &tmp.join("bin")).unwrap();
        assert_eq!(std::fs::read_to_string(ctx.join("ds")).unwrap(), "ELF");
        assert_eq!(
            std::fs::read_to_string(ctx.join("migrations/0001_a.sql")).unwrap(),
            "select 1;"
        );
        // Assembling again starts from an empty folder.
        std::fs::write(ctx.join("stale"), "x").unwrap();
        assemble(&ctx, &root, &spec, &tmp.join("bin")).unwrap();
        assert!(!ctx.join("stale").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
