//! Shared helpers of the engine-backed xtask tests: running the xtask binary, reading run
//! records and reports, listing the engine's resources by label, the fake kind/kubectl, decoys,
//! and the locks that keep tests of one consumer (fixed host ports) from overlapping.
//!
//! The engine is the one the xtask under test uses: docker with `XTASK_ENGINE=docker` (at
//! `DOCKER_HOST`), else podman. [`Engine`] holds every difference the checks meet (as the
//! xtask's `host::engine` does for the xtask); podman-only state (buildah build containers,
//! netavark rules) is only looked for with podman.
//!
//! Every resource a helper creates is named uniquely (`xtask-test-...`) and removed by exactly
//! that name when its guard drops, also when the test panics.
#![allow(clippy::disallowed_methods)] // tests drive the built binaries and tools directly
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const RUN: &str = "io.kubernaut.xtask.run";
pub const OWNER: &str = "io.kubernaut.xtask.owner";
pub const TIER: &str = "io.kubernaut.xtask.tier";
pub const PID: &str = "io.kubernaut.xtask.pid";
pub const CREATED: &str = "io.kubernaut.xtask.created";
pub const SERVICE: &str = "io.kubernaut.xtask.service";
pub const CONSUMER: &str = "io.kubernaut.xtask.consumer";
/// On cached images: `1`, and their input key.
pub const CACHE: &str = "io.kubernaut.xtask.cache";
pub const CACHE_KEY: &str = "io.kubernaut.xtask.cache-key";
/// Marks everything the tests create themselves (decoys), besides its unique name.
pub const DECOY: &str = "io.kubernaut.xtask-test.decoy";

/// Local stand-ins used when the environment does not name other images.
const IMAGE_DEFAULTS: [(&str, &str); 4] = [
    (
        "XTASK_IMAGE_POSTGRES",
        "localhost/xtask-standin/postgres:15-bookworm",
    ),
    (
        "XTASK_IMAGE_REDIS",
        "localhost/xtask-standin/redis:7-bookworm",
    ),
    (
        "XTASK_IMAGE_RUNTIME",
        "localhost/xtask-standin/runtime:bookworm",
    ),
    (
        "XTASK_IMAGE_REGISTRY",
        "localhost/xtask-standin/registry:2-bookworm",
    ),
];

// ---------------------------------------------------------------------------------------------
// Paths and small utilities

/// The repository root (the xtask runs from there).
pub fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    r.canonicalize().unwrap_or(r)
}

/// `target/xtask/runs`, as the xtask computes it.
pub fn runs_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root().join(d)
            }
        }
        _ => root().join("target"),
    };
    target.join("xtask").join("runs")
}

pub fn run_dir(run_id: &str) -> PathBuf {
    runs_dir().join(run_id)
}

/// CONTAINERS_CONF for podman here: the caller's (`cargo xtask test` passes the one it found),
/// else the settings the xtask found by trying on this host, else none (`/dev/null`).
pub fn containers_conf() -> OsString {
    let found = root().join("target/xtask/engine/containers.conf");
    std::env::var_os("CONTAINERS_CONF")
        .filter(|v| !v.is_empty())
        .or_else(|| found.exists().then(|| found.into_os_string()))
        .unwrap_or_else(|| "/dev/null".into())
}

/// Eight random hex digits (for unique names).
pub fn hex8() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let mix = (u32::from_le_bytes(b) as u64)
        ^ (std::process::id() as u64) << 8
        ^ N.fetch_add(1, Ordering::SeqCst)
        ^ now_ms() as u64;
    format!("{:08x}", mix as u32)
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn unix_now() -> u64 {
    (now_ms() / 1000) as u64
}

/// Polls `f` every 100 ms until it returns `Some`, panicking after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pid no process can have (above the kernel's pid_max).
pub fn dead_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    let pid = max + 1;
    assert!(!pid_alive(pid));
    pid
}

pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether something listens on a TCP port (read from /proc, so the check itself never holds
/// the port, unlike a test bind that could race a container's port publishing).
pub fn port_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|t| {
        std::fs::read_to_string(t)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let p = f
                    .get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                p == Some(port) && f.get(3) == Some(&"0A")
            })
    })
}

/// Processes whose command line contains `needle` (e.g. a run label still being applied by a
/// `podman run` or `podman build` a killed xtask left running).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A directory removed (recursively) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "xtask-test-{what}-{}-{}",
            std::process::id(),
            hex8()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Locks: one consumer's integration (or E2E) host ports are fixed, so two tests of it must
// never overlap. `exclusive` is for tests that look at (or clean) everything of this user.

static GLOBAL: RwLock<()> = RwLock::new(());
static HELD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static FREED: Condvar = Condvar::new();

enum Global {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// Held while a test runs; releases its slots on drop (also on panic).
pub struct Slots {
    keys: Vec<String>,
    _global: Global,
}

impl Drop for Slots {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        for k in &self.keys {
            held.remove(k);
        }
        FREED.notify_all();
    }
}

fn take(keys: &[&str], global: Global) -> Slots {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    while keys.iter().any(|k| held.contains(*k)) {
        held = FREED.wait(held).unwrap_or_else(PoisonError::into_inner);
    }
    for k in keys {
        held.insert(k.to_string());
    }
    Slots {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        _global: global,
    }
}

/// The slots of these keys (e.g. `integration:notification`, `e2e:notification`), all at
/// once (no lock-order deadlock), alongside other tests.
pub fn slots(keys: &[&str]) -> Slots {
    take(
        keys,
        Global::Shared(GLOBAL.read().unwrap_or_else(PoisonError::into_inner)),
    )
}

/// No other test of this process runs meanwhile.
pub fn exclusive(keys: &[&str]) -> Slots {
    take(
        keys,
        Global::Exclusive(GLOBAL.write().unwrap_or_else(PoisonError::into_inner)),
    )
}

// ---------------------------------------------------------------------------------------------
// Running the xtask

/// The xtask binary with the environment of this machine (stand-ins, containers.conf, plain
/// progress), run from the repository root.
pub struct Xtask {
    args: Vec<OsString>,
    env: BTreeMap<OsString, Option<OsString>>,
    timeout: Duration,
}

impl Xtask {
    pub fn new(args: &[&str]) -> Xtask {
        let mut env = BTreeMap::new();
        env.insert("CONTAINERS_CONF".into(), Some(containers_conf()));
        env.insert("XTASK_PROGRESS".into(), Some("plain".into()));
        env.insert("XTASK_ENGINE".into(), Some(engine().name().into()));
        for (k, v) in IMAGE_DEFAULTS {
            env.insert(
                k.into(),
                Some(std::env::var_os(k).unwrap_or_else(|| v.into())),
            );
        }
        Xtask {
            args: args.iter().map(OsString::from).collect(),
            env,
            timeout: Duration::from_secs(600),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Xtask {
        self.args.push(a.into());
        self
    }

    pub fn args<S: Into<OsString>>(mut self, a: impl IntoIterator<Item = S>) -> Xtask {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Xtask {
        self.env.insert(k.into(), Some(v.into()));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Xtask {
        self.env.insert(k.into(), None);
        self
    }

    /// The fake kind/kubectl first on PATH, with their own state folder.
    pub fn fakes(self, f: &FakeKube) -> Xtask {
        f.env().into_iter().fold(self, |x, (k, v)| x.env(&k, v))
    }

    /// Gives up (SIGINT, then SIGKILL) and fails the test after this long.
    pub fn timeout(mut self, t: Duration) -> Xtask {
        self.timeout = t;
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "xtask {}",
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    pub fn spawn(self) -> Running {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(&self.args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let what = self.describe();
        eprintln!("$ {what}");
        let started = Instant::now();
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pid = child.id();
        let readers = vec![
            pump(
                child.stdout.take().unwrap(),
                Arc::clone(&stdout),
                format!("[{pid} out]"),
            ),
            pump(
                child.stderr.take().unwrap(),
                Arc::clone(&stderr),
                format!("[{pid} err]"),
            ),
        ];
        Running {
            child: Some(child),
            stdout,
            stderr,
            readers,
            started,
            what,
            timeout: self.timeout,
        }
    }

    /// Runs to the end.
    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }
}

fn pump(r: impl Read + Send + 'static, into: Arc<Mutex<String>>, tag: String) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            eprintln!("{tag} {line}");
            let mut s = into.lock().unwrap_or_else(PoisonError::into_inner);
            s.push_str(&line);
            s.push('\n');
        }
    })
}

/// A running xtask. Dropped while running (the test failed): interrupted like Ctrl-C so it
/// cleans up, killed if it does not finish within a minute.
pub struct Running {
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    what: String,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// stdout + stderr so far.
    pub fn output_so_far(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap_or_else(PoisonError::into_inner),
            self.stderr.lock().unwrap_or_else(PoisonError::into_inner)
        )
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid(), sig);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The record of this process's run, once written.
    pub fn record(&self) -> Option<RunRecord> {
        record_of_pid(self.pid())
    }

    /// True once the process has exited (a zombie not yet reaped counts).
    pub fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            Ok(stat) => {
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z")
            }
            Err(_) => true,
        }
    }

    /// Polls `f` like [`wait_for`], failing at once (with the output) if the process exits
    /// before `f` is satisfied.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        wait_for(what, timeout, || {
            if let Some(v) = f() {
                return Some(v);
            }
            assert!(
                !self.exited(),
                "{} exited while waiting for {what}:\n{}",
                self.what,
                self.output_so_far()
            );
            None
        })
    }

    /// Waits for the exit (failing the test after the timeout).
    pub fn wait(mut self) -> Outcome {
        let mut child = self.child.take().expect("waited twice");
        let deadline = self.started + self.timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let status = match status {
            Some(s) => s,
            None => {
                stop(&mut child);
                panic!(
                    "{} did not finish within {:?}; output:\n{}",
                    self.what,
                    self.timeout,
                    self.output_so_far()
                );
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = Outcome {
            code: status.code(),
            stdout: std::mem::take(
                &mut *self.stdout.lock().unwrap_or_else(PoisonError::into_inner),
            ),
            stderr: std::mem::take(
                &mut *self.stderr.lock().unwrap_or_else(PoisonError::into_inner),
            ),
            elapsed: self.started.elapsed(),
            what: self.what.clone(),
        };
        eprintln!(
            "{} exited with {:?} after {:.1}s",
            out.what,
            out.code,
            out.elapsed.as_secs_f64()
        );
        out
    }
}

/// SIGINT (the xtask cleans up), then SIGKILL after a minute.
fn stop(child: &mut Child) {
    signal(child.id(), libc::SIGINT);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("stopping {} (the test ended before it)", self.what);
                stop(&mut c);
            }
        }
    }
}

/// How an xtask run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub what: String,
}

impl Outcome {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn assert_success(&self) -> &Outcome {
        assert!(
            self.success(),
            "{} failed ({:?}):\n{}",
            self.what,
            self.code,
            self.all()
        );
        self
    }

    pub fn assert_failure(&self) -> &Outcome {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "{} should have failed, exited {:?}:\n{}",
            self.what,
            self.code,
            self.all()
        );
        self
    }

    pub fn assert_contains(&self, needle: &str) -> &Outcome {
        assert!(
            self.all().contains(needle),
            "the output of {} lacks {needle:?}:\n{}",
            self.what,
            self.all()
        );
        self
    }

    /// The run id the xtask printed (`...: run 1884d074a1b2 ...` / `run 1884d074a1b2,`).
    pub fn run_id(&self) -> Option<String> {
        run_id_in(&self.all())
    }
}

/// First `: run <12 hex>` in a text.
pub fn run_id_in(text: &str) -> Option<String> {
    text.match_indices(": run ").find_map(|(i, m)| {
        let id: String = text[i + m.len()..].chars().take(12).collect();
        let next = text[i + m.len()..].chars().nth(12);
        (id.len() == 12
            && id.chars().all(|c| c.is_ascii_hexdigit())
            && !next.is_some_and(|c| c.is_ascii_alphanumeric()))
        .then_some(id)
    })
}

// ---------------------------------------------------------------------------------------------
// Run records and reports

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub pid: u32,
    pub events: Vec<Value>,
}

impl RunRecord {
    pub fn kinds(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Names of the resources of one kind (`container`, `network`, `image` reference, ...).
    pub fn named(&self, kind: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == kind)
            .filter_map(|e| {
                ["name", "reference", "path"]
                    .iter()
                    .find_map(|k| e[*k].as_str().map(str::to_string))
            })
            .collect()
    }

    pub fn last_event(&self) -> Option<&Value> {
        self.events.last()
    }
}

pub fn read_record(run_id: &str) -> Option<RunRecord> {
    let text = std::fs::read_to_string(run_dir(run_id).join("record.jsonl")).ok()?;
    parse_record(&text)
}

fn parse_record(text: &str) -> Option<RunRecord> {
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let head = events.first()?;
    if head["event"] != "run" {
        return None;
    }
    Some(RunRecord {
        run_id: head["run_id"].as_str()?.to_string(),
        pid: head["pid"].as_u64()? as u32,
        events,
    })
}

/// Run ids that have a folder under the runs dir.
pub fn run_ids() -> BTreeSet<String> {
    std::fs::read_dir(runs_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The record whose run line names this process.
pub fn record_of_pid(pid: u32) -> Option<RunRecord> {
    run_ids()
        .iter()
        .filter_map(|id| read_record(id))
        .find(|r| r.pid == pid)
}

pub fn read_report(run_id: &str) -> Value {
    let p = run_dir(run_id).join("report.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The engine under test

/// The container engine the xtask under test uses, and what differs between the two for the
/// checks of these tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Docker,
}

/// `XTASK_ENGINE=docker` selects docker; anything else podman.
pub fn engine() -> Engine {
    match std::env::var("XTASK_ENGINE").as_deref().map(str::trim) {
        Ok("docker") => Engine::Docker,
        _ => Engine::Podman,
    }
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    /// Runs the engine's CLI (podman with this host's CONTAINERS_CONF; docker with the
    /// inherited DOCKER_HOST).
    pub fn run(self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(self.name());
        if self == Engine::Podman {
            c.env("CONTAINERS_CONF", containers_conf());
        }
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.name(), args.join(" ")))
    }

    /// [`Engine::run`], which must succeed; its stdout.
    pub fn ok(self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{} {} failed: {}",
            self.name(),
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `images` as the xtask lists them: podman with intermediate images (`--all`: a build's
    /// layers carry its labels); docker top-level only (its legacy builder's intermediate
    /// images carry them too, and go with their tagged image).
    pub fn images_verb(self) -> &'static [&'static str] {
        match self {
            Engine::Podman => &["images", "--all"],
            Engine::Docker => &["images"],
        }
    }

    /// `rm` that kills at once (`--time 0` is podman's; docker's `--force` kills).
    pub fn rm_args(self) -> &'static [&'static str] {
        match self {
            Engine::Podman => &["rm", "--force", "--time", "0"],
            Engine::Docker => &["rm", "--force"],
        }
    }

    /// The labels of an image (`Config.Labels` in both engines' `image inspect`).
    pub fn image_labels(self, reference: &str) -> BTreeMap<String, String> {
        let o = self.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            reference,
        ]);
        serde_json::from_slice::<Option<BTreeMap<String, String>>>(o.stdout.trim_ascii())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Ids (full, without `sha256:`) of the images any container uses.
    pub fn images_in_use(self) -> BTreeSet<String> {
        let out = match self {
            Engine::Podman => self.ok(&["ps", "-a", "--format", "{{.ImageID}}"]),
            Engine::Docker => {
                let ids = self.ok(&["ps", "-a", "-q", "--no-trunc"]);
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if ids.is_empty() {
                    return BTreeSet::new();
                }
                let mut args = vec!["inspect", "--type", "container", "--format", "{{.Image}}"];
                args.extend(ids);
                String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
            }
        };
        out.lines()
            .map(|l| l.trim().trim_start_matches("sha256:").to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// The engine under test, which must succeed; its stdout.
pub fn engine_ok(args: &[&str]) -> String {
    engine().ok(args)
}

/// podman itself, whatever the engine under test (podman-only state: build containers, ...).
pub fn podman(args: &[&str]) -> std::process::Output {
    Engine::Podman.run(args)
}

fn lines(s: String) -> BTreeSet<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Names of containers (running or not) matching a `--filter label=...` term.
pub fn containers(label: &str) -> BTreeSet<String> {
    lines(engine_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ]))
}

pub fn networks(label: &str) -> BTreeSet<String> {
    lines(engine_ok(&[
        "network",
        "ls",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Name}}",
    ]))
}

/// `repo:tag` of each image (its id when dangling) matching a label term.
pub fn images(label: &str) -> BTreeSet<String> {
    lines(engine_ok(&[
        "images",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]))
    .into_iter()
    .map(|l| {
        let (name, id) = l.split_once(' ').unwrap_or((&l, ""));
        if name.contains("<none>") {
            id.to_string()
        } else {
            name.to_string()
        }
    })
    .collect()
}

/// Like [`images`], as the xtask lists them ([`Engine::images_verb`]): with podman, with
/// intermediate images too (a build's layers carry its labels, and layers another build reused
/// stay hidden from the plain listing).
pub fn all_images(label: &str) -> BTreeSet<String> {
    let mut args = engine().images_verb().to_vec();
    let filter = format!("label={label}");
    args.extend([
        "--filter",
        &filter,
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    lines(engine_ok(&args))
        .into_iter()
        .map(|l| {
            let (name, id) = l.split_once(' ').unwrap_or((&l, ""));
            if name.contains("<none>") {
                id.to_string()
            } else {
                name.to_string()
            }
        })
        .collect()
}

/// The full id (`sha256:...` as the engine prints it) of an image named or given by id.
pub fn image_id(name_or_id: &str) -> String {
    engine_ok(&["image", "inspect", "--format", "{{.Id}}", name_or_id])
        .trim()
        .to_string()
}

pub fn image_exists(reference: &str) -> bool {
    let format = ["--format", "{{.Id}}"];
    let o = engine().run(&[&["image", "inspect"], &format[..], &[reference]].concat());
    o.status.success()
}

pub fn container_exists(name: &str) -> bool {
    let format = ["--format", "{{.Id}}"];
    let o = engine().run(&[&["container", "inspect"], &format[..], &[name]].concat());
    o.status.success()
}

pub fn network_exists(name: &str) -> bool {
    engine()
        .run(&["network", "inspect", "--format", "{{.Name}}", name])
        .status
        .success()
}

pub fn image_labels(reference: &str) -> BTreeMap<String, String> {
    engine().image_labels(reference)
}

/// Everything still carrying a run's label: `container X`, `network Y`, `image Z` (image layers
/// included). Panics if podman cannot list.
pub fn leftovers(run_id: &str) -> Vec<String> {
    try_leftovers(run_id).unwrap_or_else(|e| panic!("listing what run {run_id} left: {e}"))
}

/// [`leftovers`] without panicking (for guards, which run while a test unwinds).
pub fn try_leftovers(run_id: &str) -> Result<Vec<String>, String> {
    let l = format!("label={RUN}={run_id}");
    let e = engine();
    let list = |args: &[&str]| -> Result<BTreeSet<String>, String> {
        let o = e.run(args);
        if o.status.success() {
            Ok(lines(String::from_utf8_lossy(&o.stdout).into_owned()))
        } else {
            Err(format!(
                "{} {}: {}",
                e.name(),
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let mut v: Vec<String> = list(&["ps", "-a", "--filter", &l, "--format", "{{.Names}}"])?
        .into_iter()
        .map(|c| format!("container {c}"))
        .collect();
    v.extend(
        list(&["network", "ls", "--filter", &l, "--format", "{{.Name}}"])?
            .into_iter()
            .map(|n| format!("network {n}")),
    );
    v.extend(
        list(
            &[
                e.images_verb(),
                &[
                    "--filter",
                    &l,
                    "--format",
                    "{{.Repository}}:{{.Tag}} {{.ID}}",
                ][..],
            ]
            .concat(),
        )?
        .into_iter()
        .map(|i| {
            let (name, id) = i.split_once(' ').unwrap_or((&i, ""));
            format!("image {}", if name.contains("<none>") { id } else { name })
        }),
    );
    Ok(v)
}

pub fn assert_nothing_left(run_id: &str) {
    let left = leftovers(run_id);
    if !left.is_empty() {
        let pins: Vec<String> = build_containers()
            .into_values()
            .filter(|d| d.contains(run_id))
            .collect();
        panic!(
            "run {run_id} left: {}{}",
            left.join(", "),
            if pins.is_empty() {
                String::new()
            } else {
                format!("\n(pinned by build containers: {})", pins.join(", "))
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Guards

/// An integration run of `consumer` whose tests all pass at once (a filter that matches
/// none): its stack starts, which leaves the caches warm, and is torn down. Its run id.
pub fn warm_integration_run(consumer: &str, guard: &CleanRuns) -> String {
    let out = Xtask::new(&["integration", consumer, "--", "no_test_is_called_this"])
        .timeout(std::time::Duration::from_secs(900))
        .run();
    let id = out.run_id().expect("a run id");
    guard.add(&id);
    out.assert_success();
    id
}

/// Runs `xtask clean --run <id>` for every registered run on drop (with the fakes' PATH and
/// state, when given), so a failing test leaves nothing. Only ids this test's own runs printed
/// or recorded are ever registered.
pub struct CleanRuns {
    ids: Mutex<Vec<String>>,
    env: Vec<(String, OsString)>,
}

impl CleanRuns {
    pub fn new() -> CleanRuns {
        CleanRuns {
            ids: Mutex::new(Vec::new()),
            env: Vec::new(),
        }
    }

    pub fn with_fakes(f: &FakeKube) -> CleanRuns {
        CleanRuns {
            ids: Mutex::new(Vec::new()),
            env: f.env(),
        }
    }

    pub fn add(&self, id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
}

impl Default for CleanRuns {
    fn default() -> Self {
        CleanRuns::new()
    }
}

impl Drop for CleanRuns {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner));
        for id in ids {
            if try_leftovers(&id).is_ok_and(|l| l.is_empty())
                && !run_dir(&id).join("images").exists()
            {
                continue;
            }
            let mut x = Xtask::new(&["clean", "--run", &id]).timeout(Duration::from_secs(300));
            for (k, v) in &self.env {
                x = x.env(k, v.clone());
            }
            let o = x.run();
            if !o.success() {
                eprintln!("guard: clean --run {id} failed:\n{}", o.all());
            }
            // Layers of this run's builds that the xtask does not see (see `all_images`):
            // removed by id, as long as that makes progress.
            let label = format!("label={RUN}={id}");
            let e = engine();
            let list = || {
                let o = e.run(&[e.images_verb(), &["--quiet", "--filter", &label][..]].concat());
                lines(String::from_utf8_lossy(&o.stdout).into_owned())
            };
            for _ in 0..5 {
                let ids = list();
                if ids.is_empty() {
                    break;
                }
                eprintln!(
                    "guard: removing {} image(s) of run {id} the cleanup left",
                    ids.len()
                );
                let mut args = vec!["rmi"];
                args.extend(ids.iter().map(String::as_str));
                if !e.run(&args).status.success() && list() == ids {
                    break;
                }
            }
        }
    }
}

/// Images, containers and networks a test creates to check that cleanup leaves them alone.
/// Each has a unique `xtask-test-decoy` name and the DECOY label; drop removes exactly those.
pub struct Decoys {
    images: Vec<String>,
    containers: Vec<String>,
    networks: Vec<String>,
    ctx: TempDir,
}

impl Decoys {
    pub fn new() -> Decoys {
        let ctx = TempDir::new("decoy-ctx");
        std::fs::write(
            ctx.path().join("Containerfile"),
            "FROM scratch\nCOPY marker /marker\n",
        )
        .unwrap();
        Decoys {
            images: Vec::new(),
            containers: Vec::new(),
            networks: Vec::new(),
            ctx,
        }
    }

    /// A tiny image (`FROM scratch`, so it inherits no label) with exactly these labels (plus
    /// DECOY), built under a unique name.
    pub fn image(&mut self, hint: &str, labels: &[(&str, &str)]) -> String {
        let id = hex8();
        let reference = format!("localhost/xtask-test-decoy/{hint}:{id}");
        std::fs::write(self.ctx.path().join("marker"), format!("{reference}\n")).unwrap();
        let mut args: Vec<String> = vec!["build".into()];
        if engine() == Engine::Podman {
            args.push("--pull=never".into());
        }
        args.extend([
            "--quiet".into(),
            "--file".into(),
            self.ctx.path().join("Containerfile").display().to_string(),
            "--tag".into(),
            reference.clone(),
        ]);
        args.extend(["--label".into(), format!("{DECOY}={id}")]);
        for (k, v) in labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.push(self.ctx.path().display().to_string());
        self.images.push(reference.clone());
        engine_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        reference
    }

    /// A created (never started) container of `image` with these labels.
    pub fn container(&mut self, image: &str, labels: &[(&str, &str)]) -> String {
        let name = format!("xtask-test-decoy-{}", hex8());
        let mut args: Vec<String> = vec![
            "create".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("{DECOY}=1"),
        ];
        for (k, v) in labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend([image.to_string(), "/marker".to_string()]);
        self.containers.push(name.clone());
        engine_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        name
    }

    pub fn network(&mut self, labels: &[(&str, &str)]) -> String {
        let name = format!("xtask-test-decoy-{}", hex8());
        let mut args: Vec<String> = vec![
            "network".into(),
            "create".into(),
            "--label".into(),
            format!("{DECOY}=1"),
        ];
        for (k, v) in labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.push(name.clone());
        self.networks.push(name.clone());
        engine_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        name
    }

    /// Every decoy that no longer exists.
    pub fn missing(&self) -> Vec<String> {
        let mut gone: Vec<String> = self
            .images
            .iter()
            .filter(|i| !image_exists(i))
            .map(|i| format!("image {i}"))
            .collect();
        gone.extend(
            self.containers
                .iter()
                .filter(|c| !container_exists(c))
                .map(|c| format!("container {c}")),
        );
        gone.extend(
            self.networks
                .iter()
                .filter(|n| !network_exists(n))
                .map(|n| format!("network {n}")),
        );
        gone
    }

    pub fn assert_all_present(&self, after: &str) {
        self.assert_present_but(&[], after);
    }

    /// Every decoy is still there, but those named in `expected_gone` (the test removed them,
    /// or they are ours to remove).
    pub fn assert_present_but(&self, expected_gone: &[&str], after: &str) {
        let gone: Vec<String> = self
            .missing()
            .into_iter()
            .filter(|m| !expected_gone.iter().any(|e| m.ends_with(e)))
            .collect();
        assert!(
            gone.is_empty(),
            "{after} removed decoys it must leave alone: {}",
            gone.join(", ")
        );
    }
}

impl Default for Decoys {
    fn default() -> Self {
        Decoys::new()
    }
}

impl Drop for Decoys {
    fn drop(&mut self) {
        let e = engine();
        for c in &self.containers {
            let _ = e.run(&[e.rm_args(), &[c.as_str()][..]].concat());
        }
        for n in &self.networks {
            let _ = e.run(&["network", "rm", n]);
        }
        for i in &self.images {
            let _ = e.run(&["rmi", i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fake kind / kubectl

/// The fake-kube binary: `$FAKE_KUBE_BIN`, else built once per test process.
pub fn fake_kube_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FAKE_KUBE_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--package",
                "fake-kube",
                "--bin",
                "fake-kube",
                "--message-format=json",
            ])
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo build -p fake-kube");
        assert!(out.status.success(), "cargo build -p fake-kube failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "fake-kube")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no fake-kube executable")
    })
}

/// A `kind` and `kubectl` on a private PATH entry, with a private state folder.
pub struct FakeKube {
    dir: TempDir,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub argv: Vec<String>,
    pub stdin: Option<String>,
    pub start_ms: u128,
    pub end_ms: u128,
    pub exit_code: i64,
}

impl FakeKube {
    pub fn new() -> FakeKube {
        FakeKube::with_tools(&["kind", "kubectl"])
    }

    /// Only some of the tools (to test a missing one).
    pub fn with_tools(tools: &[&str]) -> FakeKube {
        let dir = TempDir::new("fake-kube");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        for t in tools {
            std::os::unix::fs::symlink(fake_kube_bin(), bin.join(t)).unwrap();
        }
        FakeKube { dir }
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// PATH with the fakes first.
    pub fn path(&self) -> OsString {
        let mut parts = vec![self.bin_dir()];
        parts.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(parts).unwrap()
    }

    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("PATH".into(), self.path()),
            ("FAKE_KUBE_STATE".into(), self.state().into_os_string()),
            ("CONTAINERS_CONF".into(), containers_conf()),
        ]
    }

    pub fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.state().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Call {
                tool: v["tool"].as_str().unwrap_or_default().to_string(),
                argv: v["argv"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                stdin: v["stdin"].as_str().map(str::to_string),
                start_ms: v["start_ms"].as_u64().unwrap_or(0) as u128,
                end_ms: v["end_ms"].as_u64().unwrap_or(0) as u128,
                exit_code: v["exit_code"].as_i64().unwrap_or(-1),
            })
            .collect()
    }

    /// Clusters with state under `clusters/`.
    pub fn clusters(&self) -> Vec<String> {
        std::fs::read_dir(self.state().join("clusters"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What is left of a cluster: its state folder, podman containers and network.
    pub fn cluster_leftovers(&self, cluster: &str) -> Vec<String> {
        let mut v = Vec::new();
        if self.state().join("clusters").join(cluster).exists() {
            v.push(format!("fake state of {cluster}"));
        }
        v.extend(
            containers(&format!("io.kubernaut.fake-kube.cluster={cluster}"))
                .into_iter()
                .map(|c| format!("container {c}")),
        );
        let net = format!("kindfake-{cluster}");
        if network_exists(&net) {
            v.push(format!("network {net}"));
        }
        v
    }
}

impl Default for FakeKube {
    fn default() -> Self {
        FakeKube::new()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        // Clusters a failed test left (the run guards normally delete them first).
        for c in self.clusters() {
            let _ = Command::new(fake_kube_bin())
                .args(["kind", "delete", "cluster", "--name", &c])
                .env("FAKE_KUBE_STATE", self.state())
                .env("CONTAINERS_CONF", containers_conf())
                .output();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archives and manifests

/// The contents of one member of a tar file (ustar/GNU; long names handled), read by seeking
/// over the others (image archives are hundreds of MB).
pub fn tar_member(path: &Path, wanted: &str) -> Option<Vec<u8>> {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut long_name: Option<String> = None;
    loop {
        let mut h = [0u8; 512];
        if f.read_exact(&mut h).is_err() || h.iter().all(|b| *b == 0) {
            return None;
        }
        let field = |a: usize, b: usize| {
            let s = &h[a..b];
            String::from_utf8_lossy(&s[..s.iter().position(|c| *c == 0).unwrap_or(s.len())])
                .into_owned()
        };
        let size = u64::from_str_radix(field(124, 136).trim(), 8).unwrap_or(0);
        let kind = h[156];
        let mut name = field(0, 100);
        if &h[257..262] == b"ustar" {
            let prefix = field(345, 500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        let padded = size.div_ceil(512) * 512;
        if kind == b'L' {
            let mut buf = vec![0u8; padded as usize];
            f.read_exact(&mut buf).ok()?;
            buf.truncate(size as usize);
            long_name = Some(
                String::from_utf8_lossy(&buf)
                    .trim_end_matches('\0')
                    .to_string(),
            );
            continue;
        }
        if name.trim_start_matches("./") == wanted && (kind == b'0' || kind == 0) {
            let mut buf = vec![0u8; size as usize];
            f.read_exact(&mut buf).ok()?;
            return Some(buf);
        }
        f.seek(SeekFrom::Current(padded as i64)).ok()?;
    }
}

/// The image names a docker-archive carries (`manifest.json` RepoTags) or an oci-archive
/// (`index.json` name annotations).
pub fn archive_image_names(path: &Path) -> Vec<String> {
    if let Some(m) = tar_member(path, "manifest.json") {
        let v: Value = serde_json::from_slice(&m).expect("manifest.json is JSON");
        return v
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["RepoTags"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
    }
    if let Some(i) = tar_member(path, "index.json") {
        let v: Value = serde_json::from_slice(&i).expect("index.json is JSON");
        return v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let a = &m["annotations"];
                a["io.containerd.image.name"]
                    .as_str()
                    .or(a["org.opencontainers.image.ref.name"].as_str())
                    .map(str::to_string)
            })
            .collect();
    }
    panic!(
        "{} has neither manifest.json nor index.json",
        path.display()
    )
}

/// Every `image:` value in a YAML text, read line by line (`image: x`, `- image: x`, quoted
/// or not).
pub fn image_lines(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            let v = t.strip_prefix("image:")?;
            let v = v.split_whitespace().next()?;
            Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
        .collect()
}

/// Every container of every workload in a YAML stream: (document kind/name, container name,
/// image, imagePullPolicy).
pub fn workload_containers(yaml: &str) -> Vec<(String, String, String, Option<String>)> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(yaml)
        .unwrap_or_else(|e| panic!("applied YAML does not parse: {e}\n{yaml}"));
    let mut out = Vec::new();
    let mut visit = |doc: &Yaml| {
        let what = format!(
            "{}/{}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        let pod = match doc["kind"].as_str() {
            Some("Pod") => &doc["spec"],
            _ => &doc["spec"]["template"]["spec"],
        };
        for list in ["initContainers", "containers"] {
            for c in pod[list].as_vec().into_iter().flatten() {
                out.push((
                    what.clone(),
                    c["name"].as_str().unwrap_or("?").to_string(),
                    c["image"].as_str().unwrap_or("").to_string(),
                    c["imagePullPolicy"].as_str().map(str::to_string),
                ));
            }
        }
    };
    for d in &docs {
        if d["kind"].as_str() == Some("List") {
            for item in d["items"].as_vec().into_iter().flatten() {
                visit(item);
            }
        } else {
            visit(d);
        }
    }
    out
}

/// The owner label value of this user's runs (login name, sanitised like the xtask does).
pub fn me() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    assert!(!s.is_empty(), "no login name");
    s
}

// ---------------------------------------------------------------------------------------------
// Build containers: an interrupted `podman build` leaves buildah "working containers" behind
// (listed only by `podman ps --external`), which pin the images they are based on.

/// Buildah/external containers (state `storage`): id -> `name (image)`. podman only: docker's
/// builders keep no such containers (the legacy one gets `--force-rm`).
pub fn build_containers() -> BTreeMap<String, String> {
    if engine() == Engine::Docker {
        return BTreeMap::new();
    }
    let out = podman(&["ps", "--external", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["State"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("storage"))
        })
        .filter_map(|c| {
            let id = c["Id"].as_str()?.to_string();
            let name = c["Names"]
                .as_array()
                .and_then(|n| n.first())
                .and_then(|n| n.as_str())
                .unwrap_or("?");
            let on = podman(&[
                "image",
                "inspect",
                "--format",
                "{{json .Labels}}",
                c["ImageID"].as_str().unwrap_or(""),
            ]);
            let labels: BTreeMap<String, String> =
                serde_json::from_slice::<Option<BTreeMap<String, String>>>(&on.stdout)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
            let run = labels
                .get(RUN)
                .map(|r| format!(", on an image of run {r}"))
                .unwrap_or_default();
            Some((
                id,
                format!("{name} ({}{run})", c["Image"].as_str().unwrap_or("?")),
            ))
        })
        .collect()
}

/// Processes of `podman build` / `buildah` / `docker build` (anyone's).
pub fn builds_running() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            let argv: Vec<String> = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let prog = argv
                .first()
                .map(|a| a.rsplit('/').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let verb = argv.get(1).map(String::as_str);
            (matches!(prog.as_str(), "podman" | "docker") && verb == Some("build"))
                || prog == "buildah"
        })
        .collect()
}

/// Images podman reports as "exists in local storage but may be corrupted" (a commit cut short
/// by a signal leaves an image without its manifest): while one exists, every `podman images`
/// fails, for every user of this host.
pub fn corrupted_images() -> Vec<String> {
    if engine() == Engine::Docker {
        return Vec::new();
    }
    let o = podman(&["images", "--all", "--quiet"]);
    if o.status.success() {
        return Vec::new();
    }
    let err = String::from_utf8_lossy(&o.stderr);
    let marker = "locating item named \"manifest\" for image with ID \"";
    let mut ids: Vec<String> = Vec::new();
    for (i, _) in err.match_indices(marker) {
        let id: String = err[i + marker.len()..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        if id.len() == 64 && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Remembers the build containers that existed when created. `leaked` (once no build runs)
/// lists those that appeared since; drop removes them: they were left by builds of the runs
/// this test started (the test holds the exclusive slot, so no other run of this process
/// builds meanwhile).
pub struct BuildLeftovers {
    before: BTreeSet<String>,
    corrupted_before: Vec<String>,
}

impl BuildLeftovers {
    pub fn new() -> BuildLeftovers {
        BuildLeftovers {
            before: build_containers().into_keys().collect(),
            corrupted_before: corrupted_images(),
        }
    }

    pub fn leaked(&self) -> Vec<String> {
        wait_for("image builds to end", Duration::from_secs(120), || {
            builds_running().is_empty().then_some(())
        });
        let mut v: Vec<String> = self
            .new_corrupted()
            .into_iter()
            .map(|id| format!("corrupted image {id}"))
            .collect();
        v.extend(
            build_containers()
                .into_iter()
                .filter(|(id, _)| !self.before.contains(id))
                .map(|(_, d)| d),
        );
        v
    }

    fn new_corrupted(&self) -> Vec<String> {
        corrupted_images()
            .into_iter()
            .filter(|id| !self.corrupted_before.contains(id))
            .collect()
    }
}

impl Default for BuildLeftovers {
    fn default() -> Self {
        BuildLeftovers::new()
    }
}

impl Drop for BuildLeftovers {
    fn drop(&mut self) {
        let start = Instant::now();
        while !builds_running().is_empty() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(200));
        }
        // First what breaks every listing: images whose commit a signal cut short.
        for id in self.new_corrupted() {
            eprintln!(
                "guard: removing image {id}, left without a manifest by an interrupted build"
            );
            let _ = podman(&["rmi", "--force", &id]);
        }
        for (id, what) in build_containers() {
            if !self.before.contains(&id) {
                eprintln!("guard: removing build container {what} left by an interrupted build");
                let _ = podman(&["rm", "--force", &id]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host network state of an integration stack: netavark's port-forward (NAT) rules and
// aardvark-dns records. A container whose `podman run` was cut short can leave them behind;
// a stale DNAT rule for a fixed host port then sends every later run's connections to a dead
// address, and stale DNS records answer for the container names.

/// The integration network and host ports of a consumer (infra.toml).
pub fn stack_net(consumer: &str) -> (String, Vec<u16>) {
    let ports = match consumer {
        "datastorage" => vec![15433, 16379],
        "gateway" => vec![15437, 16380, 18091, 19091, 18092],
        "notification" => vec![15440, 16385, 18096, 19096],
        other => panic!("no ports known for {other}"),
    };
    (format!("{consumer}_test_network"), ports)
}

const AARDVARK_DIR: &str = "/run/containers/networks/aardvark-dns";

/// NAT rules (as `iptables -t nat -S` prints them) and aardvark-dns record files of the
/// consumer's stack that outlived it. Empty while the network exists or a port is in use
/// (then nothing can be told apart).
pub fn stale_network_state(consumer: &str) -> Vec<String> {
    let (net, ports) = stack_net(consumer);
    // netavark and aardvark-dns are podman's (the private dockerd of `cargo xtask test` sets
    // no iptables rules).
    if engine() == Engine::Docker || network_exists(&net) {
        return Vec::new();
    }
    let ports: Vec<u16> = ports.into_iter().filter(|p| !port_listening(*p)).collect();
    let mut v = Vec::new();
    if let Ok(o) = Command::new("iptables").args(["-t", "nat", "-S"]).output() {
        for l in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("-A NETAVARK"))
        {
            let padded = format!("{l} ");
            if padded.contains(&format!("dnat name: {net} "))
                || ports
                    .iter()
                    .any(|p| padded.contains(&format!("--dport {p} ")))
            {
                v.push(format!("nat rule: {l}"));
            }
        }
    }
    let records = Path::new(AARDVARK_DIR).join(&net);
    if records.exists() {
        v.push(format!("aardvark-dns records: {}", records.display()));
    }
    v
}

/// Splits an `iptables -S` line into arguments (double quotes group words).
fn iptables_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Removes what [`stale_network_state`] finds (only ever state of a network that no longer
/// exists, on ports nothing listens on). Used by guards of tests that interrupt runs.
pub fn remove_stale_network_state(consumer: &str) {
    for item in stale_network_state(consumer) {
        eprintln!("guard: removing stale {item}");
        if let Some(rule) = item.strip_prefix("nat rule: -A ") {
            let mut args = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
            args.extend(iptables_words(rule));
            let _ = Command::new("iptables").args(&args).output();
        } else if let Some(file) = item.strip_prefix("aardvark-dns records: ") {
            let _ = std::fs::remove_file(file);
            if let Some(pid) = std::fs::read_to_string(Path::new(AARDVARK_DIR).join("aardvark.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                signal(pid, libc::SIGHUP);
            }
        }
    }
}

/// On drop, removes stale network state of these consumers' stacks (see above).
pub struct NetworkStateGuard(Vec<String>);

impl NetworkStateGuard {
    pub fn new(consumers: &[&str]) -> NetworkStateGuard {
        NetworkStateGuard(consumers.iter().map(|c| c.to_string()).collect())
    }
}

impl Drop for NetworkStateGuard {
    fn drop(&mut self) {
        for c in &self.0 {
            remove_stale_network_state(c);
        }
    }
}
