//! The one place that starts processes: argv vectors only, never a shell string.
//!
//! Every child runs in its own process group and is registered while it runs, so that Ctrl-C
//! handling ([`terminate_all`]) can stop every child (and its children) before cleaning up.
//! Commands that change the container engine's state are [`Cmd::uninterruptible`]: they are
//! never signalled (stopping `podman build` or `podman run` half-way can leave the engine's
//! storage or network rules broken for every user of the host) and they write to files, not
//! pipes, so they finish even if this process is killed. Output is captured (and kept for
//! error messages) or streamed line by line to a callback, so workers never write to the
//! terminal themselves; only [`Cmd::run_inherit`] (the test phase) hands the terminal over.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A command to run: program, arguments, environment, folder, stdin, time limit.
#[derive(Clone, Default)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    uninterruptible: bool,
}

/// What a finished command left: exit status and its output (lossy UTF-8).
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// stdout and stderr lines in the order they arrived (for error messages).
    pub combined: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The last `n` non-empty output lines, in the order they were written, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let source = if self.combined.is_empty() {
            format!("{}{}", self.stdout, self.stderr)
        } else {
            self.combined.clone()
        };
        let mut lines: Vec<&str> = source.lines().collect();
        lines.retain(|l| !l.trim().is_empty());
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_os_string(),
            ..Cmd::default()
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Cmd
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Cmd {
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }

    /// For commands that change the engine's state: never signalled by [`terminate_all`], and
    /// writing to files instead of pipes so that they finish even if this process dies.
    pub fn uninterruptible(mut self) -> Cmd {
        self.uninterruptible = true;
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
                v.as_ref().map(|v| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
            })
            .collect()
    }

    /// Runs and captures; a non-zero exit is not an error here (see [`Cmd::run`]).
    pub fn output(&self) -> Result<Output> {
        self.exec(None::<fn(&str)>)
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

    /// Runs, handing every output line (stdout and stderr) to `on_line` as it comes; the output
    /// is also kept. Fails like [`Cmd::run`].
    pub fn run_streaming(&self, on_line: impl FnMut(&str) + Send + 'static) -> Result<Output> {
        let out = self.exec(Some(on_line))?;
        self.check(out)
    }

    /// Runs with the terminal's stdout and stderr (the test phase). Returns the exit status.
    pub fn run_inherit(&self) -> Result<ExitStatus> {
        let mut command = self.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let mut child = self.spawn(&mut command)?;
        let _guard = Registered::new(child.id());
        let status = self.wait(&mut child)?;
        Ok(status)
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

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        // Own process group: a terminal's Ctrl-C reaches only us; we stop children ourselves.
        c.process_group(0);
        c
    }

    fn spawn(&self, command: &mut Command) -> Result<Child> {
        command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "`{}` not found in PATH; run `cargo xtask doctor` for how to install it",
                    self.program.to_string_lossy()
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot start `{self}`"))
            }
        })
    }

    fn exec<F: FnMut(&str) + Send + 'static>(&self, on_line: Option<F>) -> Result<Output> {
        if self.uninterruptible {
            return self.exec_to_files(on_line);
        }
        let mut command = self.command();
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn(&mut command)?;
        let _guard = Registered::new(child.id());

        let feeder = match (self.stdin.clone(), child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(thread::spawn(move || {
                // A child that exits without reading all of stdin is not our error to report.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let sink: Option<Arc<Mutex<F>>> = on_line.map(|f| Arc::new(Mutex::new(f)));
        let combined = Arc::new(Mutex::new(String::new()));
        let stdout = reader(child.stdout.take(), sink.clone(), combined.clone());
        let stderr = reader(child.stderr.take(), sink, combined.clone());
        let status = self.wait(&mut child);
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let combined = combined.lock().map(|c| c.clone()).unwrap_or_default();
        Ok(Output {
            status: status?,
            stdout,
            stderr,
            combined,
        })
    }

    /// Like `exec`, with output to files (followed for `on_line`) and no registration.
    fn exec_to_files<F: FnMut(&str) + Send + 'static>(&self, on_line: Option<F>) -> Result<Output> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("xtask-{}-{n}", std::process::id()));
        let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
        let out_file =
            File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
        let err_file =
            File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
        let mut command = self.command();
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(out_file)
            .stderr(err_file);
        let spawned = self.spawn(&mut command);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&out_path);
                let _ = std::fs::remove_file(&err_path);
                return Err(e);
            }
        };
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            let _ = pipe.write_all(&bytes);
        }
        let done = Arc::new(AtomicBool::new(false));
        let follower = on_line.map(|mut f| {
            let (done, paths) = (done.clone(), [out_path.clone(), err_path.clone()]);
            thread::spawn(move || {
                let mut offsets = [0u64; 2];
                let mut partial = [String::new(), String::new()];
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    for i in 0..2 {
                        let Ok(mut file) = File::open(&paths[i]) else {
                            continue;
                        };
                        let mut buf = String::new();
                        if file.seek(SeekFrom::Start(offsets[i])).is_ok() {
                            let _ = file.read_to_string(&mut buf);
                        }
                        offsets[i] += buf.len() as u64;
                        partial[i].push_str(&buf);
                        while let Some(nl) = partial[i].find('\n') {
                            let line: String = partial[i].drain(..=nl).collect();
                            f(line.trim_end_matches(['\n', '\r']));
                        }
                    }
                    if finished {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        });
        let status = self.wait(&mut child);
        done.store(true, Ordering::SeqCst);
        if let Some(t) = follower {
            let _ = t.join();
        }
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        let combined = format!("{stdout}{stderr}");
        Ok(Output {
            status: status?,
            stdout,
            stderr,
            combined,
        })
    }

    fn wait(&self, child: &mut Child) -> Result<ExitStatus> {
        let Some(limit) = self.timeout else {
            return child
                .wait()
                .with_context(|| format!("waiting for `{self}`"));
        };
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for `{self}`"))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                signal_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
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

fn reader<F: FnMut(&str) + Send + 'static>(
    pipe: Option<impl Read + Send + 'static>,
    sink: Option<Arc<Mutex<F>>>,
    combined: Arc<Mutex<String>>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let Some(pipe) = pipe else {
            return String::new();
        };
        let mut all = String::new();
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if let Some(s) = &sink {
                        if let Ok(mut f) = s.lock() {
                            // Progress output like "\r50%" becomes separate updates.
                            for part in line.trim_end_matches(['\n', '\r']).split('\r') {
                                f(part);
                            }
                        }
                    }
                    all.push_str(&line);
                    if let Ok(mut c) = combined.lock() {
                        c.push_str(&line);
                        if !line.ends_with('\n') {
                            c.push('\n');
                        }
                    }
                }
            }
        }
        all
    })
}

impl fmt::Display for Cmd {
    /// Shell-quoted, for messages and `--dry-run` (never executed through a shell).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.argv().iter().map(|w| shell_quote(w)).collect();
        f.write_str(&words.join(" "))
    }
}

impl fmt::Debug for Cmd {
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

/// Process groups of running children, for [`terminate_all`].
static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

struct Registered(u32);

impl Registered {
    fn new(pid: u32) -> Registered {
        if let Ok(mut c) = CHILDREN.lock() {
            c.insert(pid);
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
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Asks every running child (and its process group) to stop: SIGTERM, then SIGKILL after
/// `grace` for those still running. Used once on Ctrl-C / SIGTERM, before cleanup.
pub fn terminate_all(grace: Duration) {
    let pids: Vec<u32> = CHILDREN
        .lock()
        .map(|c| c.iter().copied().collect())
        .unwrap_or_default();
    for &p in &pids {
        signal_group(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if CHILDREN.lock().map(|c| c.is_empty()).unwrap_or(true) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = CHILDREN
        .lock()
        .map(|c| c.iter().copied().collect())
        .unwrap_or_default();
    for p in left {
        signal_group(p, libc::SIGKILL);
    }
}

/// Finds `name` on PATH (or `PATH`-like `path`), like `which`, without starting anything.
pub fn find_in_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| p.is_file());
    }
    let path = path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = Cmd::new("cat").stdin("hello\nworld\n").output().unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "hello\nworld\n");
        let err = Cmd::new("false").run().unwrap_err().to_string();
        assert!(err.contains("`false` failed (exit status 1)"), "{err}");
    }

    #[test]
    fn missing_program_points_to_doctor() {
        let err = Cmd::new("surely-not-a-program-xyz")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found in PATH"), "{err}");
        assert!(err.contains("cargo xtask doctor"), "{err}");
    }

    #[test]
    fn streams_lines_to_callback() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        Cmd::new("cat")
            .stdin("a\nb\r c\n")
            .run_streaming(move |l| s.lock().unwrap().push(l.to_string()))
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["a", "b", " c"]);
    }

    #[test]
    fn uninterruptible_commands_are_not_registered_and_still_report() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let out = Cmd::new("cat")
            .stdin("one\ntwo\n")
            .uninterruptible()
            .run_streaming(move |l| s.lock().unwrap().push(l.to_string()))
            .unwrap();
        assert_eq!(out.stdout, "one\ntwo\n");
        assert_eq!(*seen.lock().unwrap(), vec!["one", "two"]);
        let err = Cmd::new("ls")
            .arg("/surely/not/here")
            .uninterruptible()
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn timeout_stops_the_child() {
        let t = Instant::now();
        let err = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn display_quotes_for_a_shell() {
        let c = Cmd::new("podman").args(["run", "--env", "A=b c", "it's"]);
        assert_eq!(c.to_string(), r"podman run --env 'A=b c' 'it'\''s'");
        assert_eq!(c.argv()[3], "A=b c");
    }

    #[test]
    fn env_is_passed_and_listed() {
        let c = Cmd::new("printenv").arg("XTASK_T").env("XTASK_T", "v1");
        assert_eq!(c.read().unwrap(), "v1");
        assert_eq!(
            c.env_vars(),
            vec![("XTASK_T".to_string(), "v1".to_string())]
        );
    }

    #[test]
    fn finds_programs_in_path() {
        let dir = std::env::temp_dir().join(format!("xtask-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("kind");
        std::fs::write(&exe, "#!/bin/true\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in_path("kind", Some(dir.as_os_str())), Some(exe));
        assert_eq!(find_in_path("kubectl", Some(dir.as_os_str())), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
