//! `cargo xtask bench`: measured speed, for the figures quoted in the README.
//!
//! Every figure comes from a real run: stack start-up is read from the runs' own reports (total
//! against critical path), planning is timed in-process, cold builds in a scratch target folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::builds::cargo;
use crate::exec::process::Cmd;
use crate::flags;
use crate::host::tools::{self, Need};

mod seeds;

/// Median of some durations (the upper one of the two middle values).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The report path a run printed (`run report: PATH`).
pub fn report_path(output: &str) -> Option<PathBuf> {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("run report: ").map(PathBuf::from))
}

struct Figures {
    total_s: f64,
    critical_s: f64,
    ratio: f64,
    serial_s: f64,
}

fn read_report(path: &Path) -> Result<Figures> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(Figures {
        // E2E: when the tests started (a held job may go on beside them).
        total_s: v["deployed_ms"]
            .as_f64()
            .or(v["total_ms"].as_f64())
            .unwrap_or(0.0)
            / 1000.0,
        critical_s: v["critical_path_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        ratio: v["total_over_critical_path"].as_f64().unwrap_or(0.0),
        serial_s: v["serial_ms"].as_f64().unwrap_or(0.0) / 1000.0,
    })
}

pub fn run(config: &Config, args: &flags::Bench) -> Result<()> {
    if args.runs > 0 || args.e2e {
        crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?;
    }
    let xtask = std::env::current_exe()?;
    println!(
        "# cargo xtask bench {} --runs {}",
        args.consumers.join(" "),
        args.runs
    );
    plan_speed(config, &args.consumers)?;
    for c in args.consumers.iter().filter(|_| args.runs > 0) {
        config.consumer(c)?;
        stack_cycles(config, c, args.runs)?;
        if args.e2e {
            e2e_runs(config, &xtask, c, args.runs)?;
        }
    }
    if args.cold_build {
        cold_builds(&config.root)?;
    }
    Ok(())
}

fn plan_speed(config: &Config, consumers: &[String]) -> Result<()> {
    let facts = crate::host::facts::gather(&config.root)?;
    let runs_dir = crate::exec::record::runs_dir(&config.root);
    let n = 200u32;
    for c in consumers {
        let t = Instant::now();
        let run = crate::plan::Run {
            config,
            consumer: c,
            facts: &facts,
            runs_dir: &runs_dir,
            pid: 1,
            env: &|_| None,
            snapshots: &crate::plan::NO_SNAPSHOTS,
        };
        for _ in 0..n {
            crate::plan::integration::plan(&run, &[])?;
        }
        let per = t.elapsed() / n;
        println!(
            "plan integration {c:<14} {:>8.1} µs per plan ({n} plans)",
            per.as_secs_f64() * 1e6
        );
    }
    let t = Instant::now();
    for _ in 0..n {
        Config::load(&config.file)?;
    }
    println!(
        "load+validate infra.toml    {:>8.1} µs",
        (t.elapsed() / n).as_secs_f64() * 1e6
    );
    Ok(())
}

/// Each round: the seeds' sequential way, a warm `cargo xtask integration <c> --no-tests`
/// and a cold one (`--rebuild`: every image built, the data image made again by initdb and
/// the migrations), each then `--down` (not timed), on the same images; medians and ratios.
fn stack_cycles(config: &Config, consumer: &str, runs: usize) -> Result<()> {
    // One run first, so that the images and the data image are cached (what "warm" means).
    cycle(config, consumer, false)?;
    let engine = crate::host::tools::Engine::detect()?;
    let (mut warm, mut cold, mut seeds, mut figs) = (vec![], vec![], vec![], vec![]);
    for i in 1..=runs {
        // Each round: the cold run before replaced the cached image (one per key).
        let ds = cached_image(&engine, "datastorage")?;
        let s = seeds::run(config, &engine, consumer, &ds)?.as_secs_f64();
        let (w, f) = cycle(config, consumer, false)?;
        let (c, _) = cycle(config, consumer, true)?;
        println!(
            "integration {consumer:<14} run {i}: seeds' way {s:>5.1}s  cargo xtask --no-tests {w:>5.1}s  (stack {:.1}s, critical path {:.1}s, ratio {:.2})  cold (--rebuild) {c:>5.1}s",
            f.total_s, f.critical_s, f.ratio
        );
        seeds.push(s);
        warm.push(w);
        cold.push(c);
        figs.push(f);
    }
    let (s, w, c) = (median(seeds), median(warm), median(cold));
    println!(
        "integration {consumer:<14} median of {runs}: seeds' way {s:.1}s, cargo xtask {w:.1}s: {:.2}x as fast; stack {:.1}s, critical path {:.1}s; cold (--rebuild) {c:.1}s: {:.2}x",
        s / w.max(0.001),
        median(figs.iter().map(|f| f.total_s).collect()),
        median(figs.iter().map(|f| f.critical_s).collect()),
        s / c.max(0.001),
    );
    Ok(())
}

/// One timed `cargo xtask integration <c> --no-tests [--rebuild]` as a user types it (cargo
/// included), then `--down`.
fn cycle(config: &Config, consumer: &str, rebuild: bool) -> Result<(f64, Figures)> {
    let t = Instant::now();
    let out = cargo()
        .current_dir(&config.root)
        .args([
            "xtask",
            "--progress",
            "plain",
            "integration",
            consumer,
            "--no-tests",
        ])
        .args(rebuild.then_some("--rebuild"))
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    let down = cargo()
        .current_dir(&config.root)
        .args(["xtask", "integration", consumer, "--down"])
        .output();
    if !out.success() {
        bail!(
            "integration {consumer} --no-tests failed:\n{}",
            out.tail(30)
        );
    }
    if !down.map(|d| d.success()).unwrap_or(false) {
        bail!("integration {consumer} --down failed; run it by hand");
    }
    let report = report_path(&out.stderr).context("the run printed no report path")?;
    Ok((wall, read_report(&report)?))
}

/// The newest cached image of `component` (a warm run leaves one).
fn cached_image(engine: &crate::host::tools::Engine, component: &str) -> Result<String> {
    let filter = crate::plan::labels::Filter::cache().and(crate::plan::labels::SERVICE, component);
    engine
        .images(&filter)?
        .iter()
        .max_by_key(|i| i.created)
        .map(|i| i.id.clone())
        .with_context(|| format!("no cached {component} image after a warm run"))
}

fn e2e_runs(config: &Config, xtask: &Path, consumer: &str, runs: usize) -> Result<()> {
    tools::require(&[
        Need::Tool(tools::Tool::Kind),
        Need::Tool(tools::Tool::Kubectl),
    ])?;
    let mut figs = Vec::new();
    for i in 1..=runs {
        let t = Instant::now();
        let out = Cmd::new(xtask)
            .current_dir(&config.root)
            .args(["--progress", "plain", "e2e", consumer])
            .output()?;
        if !out.success() {
            bail!("e2e {consumer} failed:\n{}", out.tail(30));
        }
        let f = read_report(&report_path(&out.stderr).context("no report path")?)?;
        println!(
            "e2e {consumer:<14} run {i}: deployed {:>5.1}s  critical path {:>5.1}s  ratio {:.2}  (one at a time: {:.1}s)  wall {:.1}s",
            f.total_s,
            f.critical_s,
            f.ratio,
            f.serial_s,
            t.elapsed().as_secs_f64()
        );
        figs.push(f);
    }
    println!(
        "e2e {consumer:<14} median: deployed {:.1}s, critical path {:.1}s, ratio {:.2}, one at a time {:.1}s",
        median(figs.iter().map(|f| f.total_s).collect()),
        median(figs.iter().map(|f| f.critical_s).collect()),
        median(figs.iter().map(|f| f.ratio).collect()),
        median(figs.iter().map(|f| f.serial_s).collect())
    );
    Ok(())
}

fn cold_builds(root: &Path) -> Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("xtask-cold-{}", crate::host::facts::random_id()));
    for (what, args) in [
        ("cargo build -p xtask", vec!["build", "--package", "xtask"]),
        ("cargo build --workspace", vec!["build", "--workspace"]),
    ] {
        let _ = std::fs::remove_dir_all(&scratch);
        let t = Instant::now();
        cargo()
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &scratch)
            .args(&args)
            .timeout(Duration::from_secs(3600))
            .run()
            .with_context(|| format!("cold {what}"))?;
        println!(
            "cold {what:<24} {:>6.1}s ({} cores)",
            t.elapsed().as_secs_f64(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_report_paths() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
        let out = "x\nrun report: /t/xtask/runs/ab/report.json\n";
        assert_eq!(
            report_path(out),
            Some(PathBuf::from("/t/xtask/runs/ab/report.json"))
        );
        assert_eq!(report_path("nothing"), None);
    }
}
