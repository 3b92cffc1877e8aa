//! Progress output: one line per component or task, as indicatif bars on a terminal and as
//! plain timestamped lines otherwise (CI, pipes). Everything a run prints while work is going on
//! goes through here, so bars and messages never garble each other.
#![allow(clippy::print_stderr)] // the one place that writes progress to the terminal

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::flags::ProgressMode;

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    bars: Option<MultiProgress>,
    start: Instant,
    width: usize,
    /// Serialises plain output lines.
    out: Mutex<()>,
}

impl Progress {
    /// Bars on a terminal unless `CI` is set, or as the flag says. `width` aligns names.
    pub fn new(mode: ProgressMode, width: usize) -> Progress {
        let bars = match mode {
            ProgressMode::Bars => true,
            ProgressMode::Plain => false,
            ProgressMode::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
            }
        };
        Progress {
            inner: Arc::new(Inner {
                bars: bars.then(MultiProgress::new),
                start: Instant::now(),
                width: width.max(8),
                out: Mutex::new(()),
            }),
        }
    }

    /// A progress object that prints plain lines (tests).
    pub fn plain() -> Progress {
        Progress::new(ProgressMode::Plain, 12)
    }

    /// A new line for `name`, shown as queued until its first state.
    pub fn line(&self, name: &str) -> Line {
        let bar = self.inner.bars.as_ref().map(|mp| {
            let b = mp.add(ProgressBar::new_spinner());
            b.set_style(running_style());
            b.set_prefix(format!("{name:<w$}", w = self.inner.width));
            b.set_message("queued");
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Line {
            progress: self.clone(),
            name: name.to_string(),
            bar,
            since: Mutex::new(Instant::now()),
        }
    }

    /// A message line: above the bars, or a plain timestamped line.
    /// Writes `text` as it is (no timestamp), e.g. a report table, above any bars.
    pub fn block(&self, text: &str) {
        match &self.inner.bars {
            Some(mp) => {
                let _ = mp.println(text.trim_end_matches('\n'));
            }
            None => {
                let _g = self.inner.out.lock();
                eprint!("{text}");
            }
        }
    }

    pub fn println(&self, msg: &str) {
        match &self.inner.bars {
            Some(mp) => {
                let _ = mp.println(msg);
            }
            None => {
                let _g = self.inner.out.lock();
                eprintln!("{} {msg}", self.stamp());
            }
        }
    }

    /// Runs `f` with the bars hidden (for output that must reach the terminal directly, the
    /// tests'). Other threads' lines keep changing meanwhile, undrawn (indicatif's `suspend`
    /// would block them until `f` returns); the bars come back after.
    pub fn hand_over<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner.bars {
            Some(mp) => {
                let _ = mp.clear();
                mp.set_draw_target(ProgressDrawTarget::hidden());
                let r = f();
                mp.set_draw_target(ProgressDrawTarget::stderr());
                r
            }
            None => f(),
        }
    }

    fn stamp(&self) -> String {
        format!(
            "{} +{:>6.1}s",
            clock(),
            self.inner.start.elapsed().as_secs_f64()
        )
    }
}

/// One component's line.
pub struct Line {
    progress: Progress,
    name: String,
    bar: Option<ProgressBar>,
    since: Mutex<Instant>,
}

impl Line {
    /// A new state (`building`, `starting`, `waiting`, ...) with detail; printed in plain mode.
    pub fn state(&self, state: &str, detail: &str) {
        if let Ok(mut s) = self.since.lock() {
            *s = Instant::now();
        }
        let msg = if detail.is_empty() {
            state.to_string()
        } else {
            format!("{state}: {detail}")
        };
        match &self.bar {
            Some(b) => {
                b.reset_elapsed();
                b.set_message(msg);
            }
            None => self.plain(&msg),
        }
    }

    /// Replaces the detail shown on the bar (e.g. the last line of a build); not printed in
    /// plain mode, where it would flood the log.
    pub fn detail(&self, detail: &str) {
        if let Some(b) = &self.bar {
            let d: String = detail.chars().take(100).collect();
            b.set_message(d);
        }
    }

    /// A `'static` closure that updates the detail, for process output callbacks.
    pub fn detail_sink(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |d: &str| {
            if let Some(b) = &bar {
                b.set_message(d.chars().take(100).collect::<String>());
            }
        }
    }

    /// Finishes the line with a final message (`ready`, `failed: ...`).
    pub fn finish(&self, ok: bool, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_style(done_style(ok));
                b.finish_with_message(msg.to_string());
            }
            None => self.plain(msg),
        }
    }

    fn plain(&self, msg: &str) {
        let _g = self.progress.inner.out.lock();
        eprintln!(
            "{} {:<w$} {msg}",
            self.progress.stamp(),
            self.name,
            w = self.progress.inner.width
        );
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn done_style(ok: bool) -> ProgressStyle {
    let t = if ok {
        "✓ {prefix} {elapsed:>4} {wide_msg}"
    } else {
        "✗ {prefix} {elapsed:>4} {wide_msg}"
    };
    ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `HH:MM:SS.mmm` (UTC).
pub fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_has_the_shape() {
        let c = clock();
        assert_eq!(c.len(), 12);
        assert_eq!(&c[2..3], ":");
        assert_eq!(&c[8..9], ".");
    }

    #[test]
    fn plain_mode_has_no_bars() {
        let p = Progress::new(ProgressMode::Plain, 10);
        assert!(p.inner.bars.is_none());
        let l = p.line("postgres");
        l.state("starting", "");
        l.finish(true, "ready");
        assert_eq!(l.name, "postgres");
    }
}
