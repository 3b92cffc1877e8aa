//! `cargo xtask test`: every test of the workspace, in the order CI runs them, with a summary.
//!
//! Steps run as child processes (cargo, and this xtask itself for the stacks), each to the end;
//! a failed step does not hide the others. The exit code is non-zero if any step failed.
//!
//! Two halves: podman first, then docker. The docker half starts a private dockerd
//! (`host::dockerd`), moves the run's third-party images (stand-ins) over from podman (`save`,
//! `load`), runs the stacks of every consumer, the E2E pipelines against the fakes and the
//! cleanup and integration scenarios with `XTASK_ENGINE=docker`, then removes what the runs left
//! (a failure: they must leave nothing) and stops the daemon, also after a failure or Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exec::builds::cargo;
use crate::exec::process::Cmd;
use crate::flags::{self, ProgressMode};
use crate::host::dockerd::{Dockerd, Layout};
use crate::host::tools::Engine;

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
            cmd: cargo()
                .current_dir(root)
                .args(["test", "--workspace", "--no-fail-fast"]),
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
            // One at a time: podman 4.3 under load loses a build's working container to a
            // concurrent test's podman call ("identifier is not a container").
            "--test-threads=1",
        ]),
    });
    out.extend(stacks(config, xtask, fake_bin, mode, "podman"));
    out.push(Step {
        name: "xtask scenarios (podman, fakes)".into(),
        cmd: cargo()
            .current_dir(root)
            .args([
                "test",
                "--package",
                "xtask",
                "--tests",
                "--no-fail-fast",
                "--",
                "--ignored",
                "--test-threads=1",
            ])
            .env("FAKE_KUBE_BIN", fake_bin.join("kind")),
    });
    out
}

/// The docker half's steps (pure but for paths), with `env` pointing at the private dockerd:
/// the stacks and E2E pipelines of every consumer, then the cleanup (clean-images with decoys,
/// kill -9 then `clean --orphans`, Ctrl-C) and integration scenarios.
pub fn docker_steps(
    config: &Config,
    xtask: &Path,
    fake_bin: &Path,
    mode: ProgressMode,
    env: &[(String, String)],
) -> Vec<Step> {
    let mut out = stacks(config, xtask, fake_bin, mode, "docker");
    out.push(Step {
        name: "xtask scenarios: cleanup, integration runs (docker)".into(),
        cmd: cargo().current_dir(&config.root).args([
            "test",
            "--package",
            "xtask",
            "--test",
            "cleanup",
            "--test",
            "integration_runs",
            "--no-fail-fast",
            "--",
            "--ignored",
            "--test-threads=1",
        ]),
    });
    out.into_iter()
        .map(|s| Step {
            name: s.name,
            cmd: s
                .cmd
                .envs(env.iter().cloned())
                .env("XTASK_ENGINE", "docker"),
        })
        .collect()
}

/// `integration` of every consumer that has the tier, and `e2e` against the fakes, with
/// `XTASK_ENGINE=engine`.
fn stacks(
    config: &Config,
    xtask: &Path,
    fake_bin: &Path,
    mode: ProgressMode,
    engine: &str,
) -> Vec<Step> {
    let root = &config.root;
    let progress = match mode {
        ProgressMode::Auto => "auto",
        ProgressMode::Bars => "bars",
        ProgressMode::Plain => "plain",
    };
    let mut out = Vec::new();
    for (consumer, _) in config
        .consumers
        .iter()
        .filter(|(_, c)| c.integration.is_some())
    {
        out.push(Step {
            name: format!("integration {consumer} ({engine})"),
            cmd: Cmd::new(xtask)
                .current_dir(root)
                .env("XTASK_ENGINE", engine)
                .args(["--progress", progress, "integration", consumer]),
        });
    }
    let fake_path = prepend_path(fake_bin);
    for (consumer, c) in &config.consumers {
        if c.e2e.as_ref().is_none_or(|t| t.ports.is_empty()) {
            continue;
        }
        out.push(Step {
            name: format!("e2e {consumer} (fake kind/kubectl, {engine})"),
            cmd: Cmd::new(xtask)
                .current_dir(root)
                .env("XTASK_ENGINE", engine)
                .env("PATH", &fake_path)
                .env(
                    "FAKE_KUBE_STATE",
                    std::env::temp_dir().join(format!("xtask-fake-kube-{engine}-{consumer}")),
                )
                .args(["--progress", progress, "e2e", consumer]),
        });
    }
    out
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut parts = vec![dir.to_path_buf()];
    parts.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(parts).unwrap_or_default()
}

/// What happened to one step: its name, whether it passed, how long it took.
type Outcome = (String, bool, Duration);

pub fn run(config: &Config, args: &flags::Test, mode: ProgressMode) -> Result<ExitCode> {
    if !args.quick {
        // The podman half; the docker half names its engine in each step. (Before any thread.)
        std::env::set_var("XTASK_ENGINE", "podman");
        crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Test)?;
        crate::exec::signals::install(
            "the test steps".into(),
            "a private dockerd still running is stopped by the next `cargo xtask test`",
        )?;
    }
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let fake_bin = if args.quick {
        PathBuf::new()
    } else {
        build_fakes(&config.root)?
    };
    let mut results = Vec::new();
    run_steps(
        steps(config, &xtask, &fake_bin, args.quick, mode),
        &mut results,
    );
    if !args.quick && !crate::exec::signals::interrupted() {
        docker_half(config, &xtask, &fake_bin, mode, &mut results);
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

/// How long a step gets to clean up after Ctrl-C before it is killed (a stack's or cluster's
/// teardown takes seconds; killing it midway leaves what `clean --orphans` must find).
const STEP_CLEANUP: Duration = Duration::from_secs(120);

fn run_steps(steps: Vec<Step>, results: &mut Vec<Outcome>) {
    for step in steps {
        if crate::exec::signals::interrupted() {
            break;
        }
        eprintln!("\n==> {}\n    {}", step.name, step.cmd);
        let t = Instant::now();
        // Each step is a run that cleans up after itself on Ctrl-C: let it finish that.
        let cmd = step.cmd.cleans_up(STEP_CLEANUP);
        let ok = match cmd.run_inherit() {
            Ok(s) => s.success(),
            Err(e) => {
                eprintln!("{e:#}");
                false
            }
        };
        results.push((step.name, ok, t.elapsed()));
    }
}

/// Records an in-process step (its error printed).
fn record<T>(results: &mut Vec<Outcome>, name: &str, t: Instant, r: Result<T>) -> Option<T> {
    if let Err(e) = &r {
        eprintln!("{name}: {e:#}");
    }
    results.push((name.to_string(), r.is_ok(), t.elapsed()));
    r.ok()
}

/// The docker half: a private dockerd, the run's images moved over, the docker steps, then the
/// daemon stopped and its folders removed (also when a step failed; on Ctrl-C the steps stop
/// and the daemon is stopped all the same).
fn docker_half(
    config: &Config,
    xtask: &Path,
    fake_bin: &Path,
    mode: ProgressMode,
    results: &mut Vec<Outcome>,
) {
    let say = |s: &str| eprintln!("{s}");
    let base = crate::exec::record::target_dir(&config.root)
        .join("xtask")
        .join("dockerd");
    let layout = Layout::new(&base, &std::env::temp_dir());
    eprintln!("\n==> docker: a private dockerd at {}", layout.host());
    let t = Instant::now();
    let started = Dockerd::start(layout, &say);
    let Some(dockerd) = record(results, "docker: private dockerd started", t, started) else {
        return;
    };
    eprintln!("    log: {}", dockerd.layout().log().display());
    let t = Instant::now();
    let moved = move_images(config, &dockerd);
    record(
        results,
        "docker: the run's images loaded from podman",
        t,
        moved,
    );
    run_steps(
        docker_steps(config, xtask, fake_bin, mode, &dockerd.env()),
        results,
    );
    eprintln!("\n==> docker: removing what the runs left, stopping the private dockerd");
    let t = Instant::now();
    let stopped = dockerd.stop().and_then(|left| {
        if left.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("the docker runs left resources behind (now removed): {left}")
        }
    });
    record(
        results,
        "docker: runs left nothing; dockerd stopped, its folders removed",
        t,
        stopped,
    );
}

/// `podman save` each third-party image the runs use (stand-ins, as `setup` chose them) and
/// `docker load` it into the private daemon.
fn move_images(config: &Config, dockerd: &Dockerd) -> Result<()> {
    let podman = Engine::detect_in(Some("podman"), None)?;
    let docker = dockerd.engine()?;
    let archive = dockerd.layout().base.join("transfer.tar");
    let env = |k: &str| std::env::var(k).ok();
    let mut references: Vec<String> = config.images.values().map(|i| i.resolve(&env)).collect();
    references.sort();
    references.dedup();
    for r in references.iter().filter(|r| podman.image_exists(r)) {
        let t = Instant::now();
        podman.save_cmd(r, &archive).run()?;
        let loaded = docker.load_cmd(&archive, &dockerd.env()).run();
        let _ = std::fs::remove_file(&archive);
        loaded?;
        eprintln!("    {r}: {:.1}s", t.elapsed().as_secs_f64());
    }
    Ok(())
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
