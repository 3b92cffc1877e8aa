//! The one place that starts processes: argv vectors only, never a shell string, built on duct.
//!
//! Every child runs in its own process group (duct's `before_spawn`), so a terminal's Ctrl-C
//! reaches only us and we stop children ourselves. A [`Cmd`] is interruptible: it is registered
//! while it runs, so [`terminate_all`] can stop it (and its children) before cleanup, and it may
//! have a time limit ([`Cmd::timeout`] makes a [`Timed`] command). Commands that change the
//! container engine's state are [`Cmd::uninterruptible`]: never signalled (stopping `podman
//! build` or `podman run` half-way can leave the engine's storage or network rules broken for
//! every user of the host) and writing to files, not pipes, so they finish even if this process
//! is killed. An uninterruptible command cannot have a time limit: the types do not allow it.
//! Output is captured (and kept for error messages) or streamed line by line to a callback, so
//! workers never write to the terminal themselves; only [`Cmd::run_inherit`] (the test phase)
//! hands the terminal over.
#![allow(clippy::disallowed_methods)] // this module (with `quick`) is where processes start

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// An interruptible command without a time limit (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;
/// An interruptible command with a time limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timed;
/// A command that is never signalled and writes to files (engine state changes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Uninterruptible;

/// What kind of command a [`Cmd`] is; see the module documentation.
pub trait Mode: Default + Copy {
    const INTERRUPTIBLE: bool;
}
impl Mode for Plain {
    const INTERRUPTIBLE: bool = true;
}
impl Mode for Timed {
    const INTERRUPTIBLE: bool = true;
}
impl Mode for Uninterruptible {
    const INTERRUPTIBLE: bool = false;
}

/// The modes that may still choose a time limit or become uninterruptible: only [`Plain`].
/// Gating both methods on it is what makes `uninterruptible().timeout(..)` (and the reverse)
/// impossible to write; a test checks no other mode implements it.
pub trait Undecided: Mode {}
impl Undecided for Plain {}

/// A command to run: program, arguments, environment, folder, stdin, and its [`Mode`].
#[derive(Clone, Default)]
pub struct Cmd<M: Mode = Plain> {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    /// How long [`terminate_all`] lets it clean up after SIGTERM (default: its own grace).
    grace: Option<Duration>,
    mode: PhantomData<M>,
}

/// What a finished command left: exit status and its output (lossy UTF-8).
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The last `n` non-empty output lines (stdout, then stderr), for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Cmd<Plain> {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            ..Cmd::default()
        }
    }
}

impl<M: Undecided> Cmd<M> {
    /// Stops the command (its whole process group) if it runs longer than `t`.
    pub fn timeout(self, t: Duration) -> Cmd<Timed> {
        Cmd {
            timeout: Some(t),
            ..self.into_mode()
        }
    }

    /// For commands that change the engine's state: never signalled by [`terminate_all`], and
    /// writing to files instead of pipes so that they finish even if this process dies.
    pub fn uninterruptible(self) -> Cmd<Uninterruptible> {
        self.into_mode()
    }
}

impl<M: Mode> Cmd<M> {
    fn into_mode<N: Mode>(self) -> Cmd<N> {
        Cmd {
            program: self.program,
            args: self.args,
            env: self.env,
            cwd: self.cwd,
            stdin: self.stdin,
            timeout: self.timeout,
            grace: self.grace,
            mode: PhantomData,
        }
    }

    /// A child that cleans up after itself on SIGTERM (a nested xtask run): on Ctrl-C it gets
    /// up to `within` for that before SIGKILL, instead of a few seconds.
    pub fn cleans_up(mut self, within: Duration) -> Self {
        self.grace = Some(within);
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn envs<I, K, V>(self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter().fold(self, |c, (k, v)| c.env(k, v))
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// The argument vector, program first.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The environment this command sets (not the inherited one).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|(k, v)| {
                let v = v.as_ref()?;
                Some((
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    /// Runs and captures; a non-zero exit is not an error here (see [`Cmd::run`]).
    pub fn output(&self) -> Result<Output> {
        self.exec(None)
    }

    /// Runs, capturing output; fails with the command and the tail of its output if it fails.
    pub fn run(&self) -> Result<Output> {
        let out = self.output()?;
        self.check(out)
    }

    /// Runs and returns stdout, trimmed; fails like [`Cmd::run`].
    pub fn read(&self) -> Result<String> {
        Ok(self.run()?.stdout.trim().to_string())
    }

    /// Runs, handing every output line to `on_line` as it comes (stderr merged into stdout,
    /// in the order written); the output is also kept. Fails like [`Cmd::run`].
    pub fn run_streaming(&self, on_line: impl FnMut(&str) + Send + 'static) -> Result<Output> {
        let out = self.exec(Some(Box::new(on_line)))?;
        self.check(out)
    }

    /// Runs with the terminal's stdout and stderr (the test phase). Returns the exit status.
    pub fn run_inherit(&self) -> Result<ExitStatus> {
        let handle = self.start(self.expression())?;
        let _guard = M::INTERRUPTIBLE.then(|| Registered::new(pid_of(&handle), self.grace));
        Ok(self.wait(&handle)?.status)
    }

    fn check(&self, out: Output) -> Result<Output> {
        if out.success() {
            return Ok(out);
        }
        let tail = out.tail(20);
        bail!(
            "`{self}` failed ({}){}{}",
            describe_status(out.status),
            if tail.is_empty() { "" } else { ":\n" },
            indent(&tail)
        )
    }

    /// The duct expression: argv, environment, folder, stdin, own process group, no exit check.
    fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args);
        for (k, v) in &self.env {
            e = match v {
                Some(v) => e.env(k, v),
                None => e.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            e = e.dir(d);
        }
        e = match &self.stdin {
            Some(bytes) => e.stdin_bytes(bytes.clone()),
            None => e.stdin_null(),
        };
        e.unchecked().before_spawn(|c| {
            c.process_group(0);
            Ok(())
        })
    }

    fn start(&self, e: duct::Expression) -> Result<duct::Handle> {
        e.start().map_err(|e| self.start_error(e))
    }

    fn start_error(&self, e: std::io::Error) -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{}` not found in PATH; run `cargo xtask doctor` for how to install it",
                self.program.to_string_lossy()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot start `{self}`"))
        }
    }

    fn exec(&self, on_line: Option<LineSink>) -> Result<Output> {
        if !M::INTERRUPTIBLE {
            return self.exec_to_files(on_line);
        }
        let Some(on_line) = on_line else {
            let e = self.expression().stdout_capture().stderr_capture();
            let handle = self.start(e)?;
            let _guard = Registered::new(pid_of(&handle), self.grace);
            let out = self.wait(&handle)?;
            return Ok(Output {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        };
        self.exec_streaming(on_line)
    }

    /// stderr merged into stdout, read line by line while the child runs (duct's `reader`);
    /// a watchdog enforces the time limit.
    fn exec_streaming(&self, mut on_line: LineSink) -> Result<Output> {
        let reader = self.expression().stderr_to_stdout().reader();
        let reader = reader.map_err(|e| self.start_error(e))?;
        let pid = reader.pids().first().copied().unwrap_or(0);
        let _guard = Registered::new(pid, self.grace);
        let watchdog = Watchdog::start(pid, self.timeout);
        let mut all = String::new();
        let mut r = BufReader::new(&reader);
        let mut buf = Vec::new();
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            // Progress output like "\r50%" becomes separate updates.
            for part in line.trim_end_matches(['\n', '\r']).split('\r') {
                on_line(part);
            }
            all.push_str(&line);
            buf.clear();
        }
        if watchdog.fired() {
            bail!(
                "`{self}` did not finish within {}s and was stopped",
                self.timeout.unwrap_or_default().as_secs_f32()
            );
        }
        let status = match reader.try_wait() {
            Ok(Some(out)) => out.status,
            _ => reader_status(&reader, &self.to_string())?,
        };
        Ok(Output {
            status,
            stdout: all,
            stderr: String::new(),
        })
    }

    /// Output to files (followed for `on_line`), not registered, never signalled.
    fn exec_to_files(&self, on_line: Option<LineSink>) -> Result<Output> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("xtask-{}-{n}", std::process::id()));
        let paths = [base.with_extension("out"), base.with_extension("err")];
        let _cleanup = RemoveOnDrop(paths.to_vec());
        let e = self
            .expression()
            .stdout_path(&paths[0])
            .stderr_path(&paths[1]);
        let handle = self.start(e)?;
        let done = Arc::new(AtomicBool::new(false));
        let follower = on_line.map(|f| {
            let (done, paths) = (done.clone(), paths.clone());
            thread::spawn(move || follow_files(&paths, &done, f))
        });
        let status = self.wait(&handle).map(|o| o.status);
        done.store(true, Ordering::SeqCst);
        if let Some(t) = follower {
            let _ = t.join();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Ok(Output {
            status: status?,
            stdout: read(&paths[0]),
            stderr: read(&paths[1]),
        })
    }

    /// Waits, enforcing the time limit by killing the process group.
    fn wait<'h>(&self, handle: &'h duct::Handle) -> Result<&'h std::process::Output> {
        let Some(limit) = self.timeout else {
            return handle
                .wait()
                .with_context(|| format!("waiting for `{self}`"));
        };
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(out) = handle
                .try_wait()
                .with_context(|| format!("waiting for `{self}`"))?
            {
                return Ok(out);
            }
            if Instant::now() >= deadline {
                signal_group(pid_of(handle), libc::SIGKILL);
                let _ = handle.wait();
                bail!(
                    "`{self}` did not finish within {}s and was stopped",
                    limit.as_secs_f32()
                );
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

type LineSink = Box<dyn FnMut(&str) + Send>;
use follow::{follow_files, pid_of, reader_status, Watchdog};

struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl<M: Mode> fmt::Display for Cmd<M> {
    /// Shell-quoted, for messages and `--dry-run` (never executed through a shell).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.argv().iter().map(|w| shell_quote(w)).collect();
        f.write_str(&words.join(" "))
    }
}

impl<M: Mode> fmt::Debug for Cmd<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({self})")
    }
}

/// Quotes a word for display so that it could be pasted into a POSIX shell.
pub fn shell_quote(w: &str) -> String {
    let safe = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if safe {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_string(),
    }
}

/// Indents output for an error message (four spaces), or says there was none.
pub fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "    (no output)".to_string();
    }
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Process groups of running children, for [`terminate_all`], with their own grace if any.
static CHILDREN: Mutex<BTreeMap<u32, Option<Duration>>> = Mutex::new(BTreeMap::new());

struct Registered(u32);

impl Registered {
    fn new(pid: u32, grace: Option<Duration>) -> Registered {
        if let Ok(mut c) = CHILDREN.lock() {
            c.insert(pid, grace);
        }
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = CHILDREN.lock() {
            c.remove(&self.0);
        }
    }
}

fn signal_group(pgid: u32, sig: libc::c_int) {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Asks every running child (and its process group) to stop: SIGTERM, then SIGKILL after
/// `grace` (or the child's own, see [`Cmd::cleans_up`]) for those still running. Used once on
/// Ctrl-C / SIGTERM, before cleanup.
pub fn terminate_all(grace: Duration) {
    stop(
        || CHILDREN.lock().map(|c| c.clone()).unwrap_or_default(),
        grace,
    );
}

/// SIGTERM to each group `running` lists, then SIGKILL to each still listed once its grace
/// has passed; returns when none is listed (or a second after the longest grace).
fn stop(running: impl Fn() -> BTreeMap<u32, Option<Duration>>, grace: Duration) {
    let start = Instant::now();
    let first = running();
    for p in first.keys() {
        signal_group(*p, libc::SIGTERM);
    }
    let longest = first.values().map(|g| g.unwrap_or(grace)).max();
    let until = longest.unwrap_or(grace) + Duration::from_secs(1);
    loop {
        let left = running();
        if left.is_empty() || start.elapsed() > until {
            return;
        }
        for (p, g) in left {
            if start.elapsed() >= g.unwrap_or(grace) {
                signal_group(p, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Finds `name` on PATH (or the `PATH`-like `path`), like `which`, without starting anything.
pub fn find_in_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    match path {
        Some(p) => which::which_in(name, Some(p), std::env::current_dir().ok()?).ok(),
        None => which::which(name).ok(),
    }
}

/// Whether a process exists (signal 0), for run records.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub use crate::exec::quick;

mod background;
mod follow;
pub use background::Background;
#[cfg(test)]
mod tests;
