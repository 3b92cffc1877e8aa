//! `cargo xtask test`: every test of the workspace, in the order CI runs them, with a summary.
//!
//! Steps run as child processes (cargo, and this xtask itself for the stacks), each to the end;
//! a failed step does not hide the others. The exit code is non-zero if any step failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exec::builds::cargo;
use crate::exec::process::Cmd;
use crate::flags::{self, ProgressMode};

/// One step: a name and the command.
pub struct Step {
    pub name: String,
    pub cmd: Cmd,
}

/// The plan (pure but for paths): what `test` runs, in order.
pub fn steps(
    config: &Config,
    xtask: &Path,
    fake_bin: &Path,
    quick: bool,
    mode: ProgressMode,
) -> Vec<Step> {
    let root = &config.root;
    let progress = match mode {
        ProgressMode::Auto => "auto",
        ProgressMode::Bars => "bars",
        ProgressMode::Plain => "plain",
    };
    let mut out = vec![
        Step {
            name: "formatting".into(),
            cmd: cargo().current_dir(root).args(["fmt", "--all", "--check"]),
        },
        Step {
            name: "clippy (warnings are errors)".into(),
            cmd: cargo().current_dir(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        },
        Step {
            name: "unit and tidy tests (workspace)".into(),
            cmd: cargo().current_dir(root).args(["test", "--workspace"]),
        },
    ];
    if quick {
        return out;
    }
    out.push(Step {
        name: "fake kind/kubectl against podman".into(),
        cmd: cargo().current_dir(root).args([
            "test",
            "--package",
            "fake-kube",
            "--",
            "--include-ignored",
        ]),
    });
    for (consumer, _) in config
        .consumers
        .iter()
        .filter(|(_, c)| c.integration.is_some())
    {
        out.push(Step {
            name: format!("integration {consumer}"),
            cmd: Cmd::new(xtask).current_dir(root).args([
                "--progress",
                progress,
                "integration",
                consumer,
            ]),
        });
    }
    let fake_path = prepend_path(fake_bin);
    for (consumer, c) in &config.consumers {
        if c.e2e.as_ref().is_none_or(|t| t.ports.is_empty()) {
            continue;
        }
        out.push(Step {
            name: format!("e2e {consumer} (fake kind/kubectl)"),
            cmd: Cmd::new(xtask)
                .current_dir(root)
                .env("PATH", &fake_path)
                .env(
                    "FAKE_KUBE_STATE",
                    std::env::temp_dir().join(format!("xtask-fake-kube-{consumer}")),
                )
                .args(["--progress", progress, "e2e", consumer]),
        });
    }
    out.push(Step {
        name: "xtask scenarios (podman, fakes)".into(),
        cmd: cargo()
            .current_dir(root)
            .args([
                "test",
                "--package",
                "xtask",
                "--tests",
                "--",
                "--ignored",
                "--test-threads=1",
            ])
            .env("FAKE_KUBE_BIN", fake_bin.join("kind")),
    });
    out
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut parts = vec![dir.to_path_buf()];
    parts.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(parts).unwrap_or_default()
}

pub fn run(config: &Config, args: &flags::Test, mode: ProgressMode) -> Result<ExitCode> {
    if !args.quick {
        crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Test)?;
    }
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let fake_bin = if args.quick {
        PathBuf::new()
    } else {
        build_fakes(&config.root)?
    };
    let mut results = Vec::new();
    for step in steps(config, &xtask, &fake_bin, args.quick, mode) {
        eprintln!("\n==> {}\n    {}", step.name, step.cmd);
        let t = Instant::now();
        let ok = match step.cmd.run_inherit() {
            Ok(s) => s.success(),
            Err(e) => {
                eprintln!("{e:#}");
                false
            }
        };
        results.push((step.name, ok, t.elapsed()));
        if crate::exec::signals::interrupted() {
            break;
        }
    }
    eprintln!("\nsummary:");
    for (name, ok, took) in &results {
        eprintln!(
            "  {:<6} {:>7.1}s  {name}",
            if *ok { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
    }
    let failed = results.iter().filter(|r| !r.1).count();
    if failed > 0 {
        eprintln!("{failed} of {} steps failed", results.len());
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("all {} steps passed", results.len());
    Ok(ExitCode::SUCCESS)
}

/// Builds the fake kind/kubectl and returns a folder with `kind` and `kubectl` links to it.
fn build_fakes(root: &Path) -> Result<PathBuf> {
    let out = cargo()
        .current_dir(root)
        .args([
            "build",
            "--package",
            "fake-kube",
            "--message-format=json-render-diagnostics",
        ])
        .run()
        .context("building the fake kind/kubectl")?;
    let bin = crate::exec::builds::parse_artifacts(&out.stdout)
        .remove("fake-kube")
        .context("cargo reported no fake-kube binary")?;
    let dir = crate::exec::record::target_dir(root)
        .join("fake-kube")
        .join("bin");
    std::fs::create_dir_all(&dir)?;
    for name in ["kind", "kubectl"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&bin, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(dir)
}
