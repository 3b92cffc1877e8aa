//! A private docker engine for `cargo xtask test`: Debian's `dockerd` with its own data root,
//! exec root, socket, configuration and containerd namespace, so it never touches a docker the
//! host may run. Started, waited for until it answers, and stopped by its pid; its folders are
//! then unmounted and removed, also after a crash (the next start clears what is left).
//!
//! Settings, and why (measured with dockerd 20.10):
//! - `--config-file` of our own: never the host's `/etc/docker/daemon.json`; it also moves the
//!   daemon's key (`deprecated-key-path`) out of `/etc/docker`.
//! - `--bridge none`: a second dockerd on the default bridge shares `docker0` with any other
//!   (and one with `--bridge none` deletes an unused `docker0`). Runs create their own networks.
//!   `--host-gateway-ip` (the host's address) then gives `host-gateway` a value. The price:
//!   `RUN` steps get no network by default (only loopback; `mocks/Dockerfile` fetches python3
//!   with apt-get), so builds on a daemon without a default bridge use the host's network
//!   (`Engine::build_network`).
//! - `--iptables=false --ip-forward=false --ip-masq=false`: the host's firewall and sysctls
//!   stay as they are; published ports work through docker-proxy, containers on one network
//!   reach each other, and the host through the gateway address.
//! - The exec root holds sockets (containerd's too): it goes to a short path under the temp
//!   folder when the build folder's path is too long for a socket.
//!
//! The daemon is started through [`Cmd::uninterruptible`]: in its own process group, never
//! signalled by Ctrl-C handling (the runs it serves clean up through it first); we stop it.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::process::{find_in_path, pid_alive, Cmd};
use crate::host::removal::{self, Removed};
use crate::host::tools::{Engine, Tool};
use crate::plan::labels::Filter;

/// Unix socket paths are limited to 108 bytes; containerd's is the longest below the exec root.
const SOCKET_ROOM: usize = 100;
const CONTAINERD_SOCKET: &str = "exec/containerd/containerd.sock.ttrpc";

/// Where one private dockerd keeps everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Data root, configuration, client configuration, log, lock (`target/xtask/dockerd`).
    pub base: PathBuf,
    /// Exec root, socket and pid file: `base/run`, or a short folder when that is too long.
    pub run: PathBuf,
}

impl Layout {
    pub fn new(base: &Path, temp: &Path) -> Layout {
        let inside = base.join("run");
        let run = if inside.join(CONTAINERD_SOCKET).as_os_str().len() <= SOCKET_ROOM {
            inside
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            base.hash(&mut h);
            temp.join(format!("xtask-dockerd-{:08x}", h.finish() as u32))
        };
        Layout {
            base: base.to_path_buf(),
            run,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join("sock")
    }

    /// `DOCKER_HOST` for this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn pid_file(&self) -> PathBuf {
        self.run.join("pid")
    }

    fn config(&self) -> PathBuf {
        self.base.join("daemon.json")
    }

    pub fn log(&self) -> PathBuf {
        self.base.join("dockerd.log")
    }

    /// The client's configuration folder (`DOCKER_CONFIG`): nothing goes to `~/.docker`.
    pub fn client_config(&self) -> PathBuf {
        self.base.join("client")
    }

    /// The containerd namespace, one per folder: it matters when the host's own containerd is
    /// running (dockerd then uses it instead of starting its own), so that no other daemon's
    /// containers and images are seen, or taken for stale ones and removed.
    fn namespace(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.base.hash(&mut h);
        format!("xtask-{:08x}", h.finish() as u32)
    }

    /// The daemon's argv after the program (pure).
    pub fn args(&self, gateway: Option<IpAddr>) -> Vec<String> {
        let p = |p: PathBuf| p.display().to_string();
        let mut a: Vec<String> = vec![
            "--config-file".into(),
            p(self.config()),
            "--data-root".into(),
            p(self.base.join("data")),
            "--exec-root".into(),
            p(self.run.join("exec")),
            "--pidfile".into(),
            p(self.pid_file()),
            "--host".into(),
            self.host(),
            "--containerd-namespace".into(),
            self.namespace(),
            "--containerd-plugins-namespace".into(),
            format!("{}-plugins", self.namespace()),
            "--bridge".into(),
            "none".into(),
            "--iptables=false".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
        ];
        if let Some(ip) = gateway {
            a.extend(["--host-gateway-ip".into(), ip.to_string()]);
        }
        a
    }

    /// The daemon's configuration file (pure): its key stays in our folder.
    pub fn config_text(&self) -> String {
        serde_json::json!({ "deprecated-key-path": self.base.join("key.json") }).to_string()
    }
}

/// A running private dockerd. [`Dockerd::stop`] stops it and removes its folders; dropping it
/// does the same, without reporting.
pub struct Dockerd {
    layout: Layout,
    pid: u32,
    daemon: Option<JoinHandle<()>>,
    _lock: fs::File,
}

impl Dockerd {
    /// Starts a dockerd for `layout` (clearing what an earlier one left) and waits until it
    /// answers.
    pub fn start(layout: Layout, say: &dyn Fn(&str)) -> Result<Dockerd> {
        let program = find_in_path("dockerd", None).with_context(|| {
            format!(
                "`dockerd` not found in PATH: the docker half of `cargo xtask test` starts its \
                 own docker engine; install it: {}",
                crate::host::tools::Tool::Docker.install(crate::host::tools::os_family())
            )
        })?;
        fs::create_dir_all(&layout.base)
            .with_context(|| format!("creating {}", layout.base.display()))?;
        let lock = take_lock(&layout.base.join("lock"))?;
        if leftovers(&layout) {
            say(&format!(
                "clearing what an earlier private dockerd left in {}",
                layout.base.display()
            ));
            clear(&layout, &program, &lock, say)?;
        }
        let _ = fs::remove_file(layout.log());
        let (pid, daemon) = launch(&layout, &program)?;
        Ok(Dockerd {
            layout,
            pid,
            daemon: Some(daemon),
            _lock: lock,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What a child process needs to use this daemon.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DOCKER_HOST".into(), self.layout.host()),
            (
                "DOCKER_CONFIG".into(),
                self.layout.client_config().display().to_string(),
            ),
        ]
    }

    /// The docker engine (the docker client on PATH) pointed at this daemon.
    pub fn engine(&self) -> Result<Engine> {
        Engine::detect_in(Some(Tool::Docker.name()), None)
    }

    /// Removes what runs left in the daemon (by our labels: a leak of the runs, returned so the
    /// caller can fail on it), stops the daemon, unmounts and removes its folders.
    pub fn stop(mut self) -> Result<Removed> {
        let left = self.remove_labelled();
        self.shut_down()?;
        left
    }

    /// Kills the daemon as a crash would (SIGKILL), leaving its folders and mounts (tests).
    #[cfg(test)]
    fn crash(mut self) {
        signal(self.pid, libc::SIGKILL);
        if let Some(d) = self.daemon.take() {
            let _ = d.join();
        }
    }

    fn remove_labelled(&self) -> Result<Removed> {
        let engine = self.engine()?;
        with_env(&self.env(), || {
            removal::remove(&engine, &Filter::any_run(), false)
        })
    }

    fn shut_down(&mut self) -> Result<()> {
        let Some(daemon) = self.daemon.take() else {
            return Ok(());
        };
        let stopped = terminate(self.pid, Duration::from_secs(60));
        let _ = daemon.join();
        unmount_under(&[&self.layout.base, &self.layout.run]);
        remove_folders(&self.layout)?;
        stopped
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// Runs `f` with `env` set for the engine commands it starts (this process's environment: the
/// engine layer's commands inherit it). Only the test command calls this, between its steps.
fn with_env<T>(env: &[(String, String)], f: impl FnOnce() -> T) -> T {
    let saved: Vec<(String, Option<String>)> = env
        .iter()
        .map(|(k, _)| (k.clone(), std::env::var(k).ok()))
        .collect();
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let out = f();
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(&k, v),
            None => std::env::remove_var(&k),
        }
    }
    out
}

/// Starts the daemon and waits until it answers (60 s), returning its pid and the thread that
/// copies its output to the log.
fn launch(layout: &Layout, program: &Path) -> Result<(u32, JoinHandle<()>)> {
    for dir in [&layout.run, &layout.client_config()] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(layout.config(), layout.config_text())
        .with_context(|| format!("writing {}", layout.config().display()))?;
    // An empty client configuration: podman (the fake kind's pods) reads DOCKER_CONFIG too,
    // and fails to create containers when the folder has no config.json.
    let client = layout.client_config().join("config.json");
    fs::write(&client, "{}\n").with_context(|| format!("writing {}", client.display()))?;
    let _ = fs::remove_file(layout.pid_file());
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())
        .with_context(|| format!("opening {}", layout.log().display()))?;
    let cmd = Cmd::new(program)
        .args(layout.args(host_address()))
        .uninterruptible();
    let daemon = std::thread::spawn(move || {
        let _ = cmd.run_streaming(move |line| {
            let _ = writeln!(log, "{line}");
        });
    });
    let docker = find_in_path("docker", None).with_context(|| {
        format!(
            "`docker` (the client) not found in PATH; install it: {}",
            crate::host::tools::Tool::Docker.install(crate::host::tools::os_family())
        )
    })?;
    let started = Instant::now();
    loop {
        let answered = Cmd::new(&docker)
            .args(["--host", &layout.host(), "version", "--format"])
            .arg("{{.Server.Version}}")
            .timeout(Duration::from_secs(10))
            .output()
            .is_ok_and(|o| o.success());
        let pid = fs::read_to_string(layout.pid_file())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let (true, Some(pid)) = (answered, pid) {
            return Ok((pid, daemon));
        }
        if daemon.is_finished() || started.elapsed() > Duration::from_secs(60) {
            if let Some(pid) = pid {
                let _ = terminate(pid, Duration::from_secs(30));
            }
            let _ = daemon.join();
            bail!(
                "the private dockerd did not answer at {} within 60 s; its log ({}) ends:\n{}",
                layout.host(),
                layout.log().display(),
                crate::exec::process::indent(&log_tail(&layout.log(), 15))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The host's own address (the source address of its default route; a UDP `connect` sends
/// nothing), for `host-gateway`. `None` without a default route.
fn host_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("1.1.1.1:53").ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// Whether an earlier daemon left anything (a crash, a killed `cargo xtask test`).
fn leftovers(layout: &Layout) -> bool {
    layout.base.join("data").exists() || layout.run.exists()
}

/// Stops a daemon still running on these folders; a crashed one's containers, mounts and
/// network namespaces are cleared by starting a daemon on the same folders once (it removes
/// stale sandboxes and unmounts what it finds), removing what runs left in it (networks' bridges
/// outlive a daemon otherwise) and stopping it; then what stays mounted is unmounted and the
/// folders removed.
fn clear(layout: &Layout, program: &Path, lock: &fs::File, say: &dyn Fn(&str)) -> Result<()> {
    if let Some(pid) = recorded_pid(layout) {
        say(&format!("stopping the earlier private dockerd (pid {pid})"));
        terminate(pid, Duration::from_secs(60))?;
    }
    // Its containerd: killed with it, but possibly a zombie that this host's init has not
    // reaped yet, which a new dockerd would wait for (measured: 18 s to never) instead of
    // starting its own. A live one (not a zombie) is stopped; the pid file goes either way.
    let containerd_pid = layout.run.join("exec/containerd/containerd.pid");
    if let Some(pid) = fs::read_to_string(&containerd_pid)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|p| runs_with(*p, &layout.run))
    {
        terminate(pid, Duration::from_secs(10))?;
    }
    let _ = fs::remove_file(&containerd_pid);
    if layout.base.join("data").exists() {
        match launch(layout, program) {
            Ok((pid, daemon)) => {
                let earlier = Dockerd {
                    layout: layout.clone(),
                    pid,
                    daemon: Some(daemon),
                    _lock: lock.try_clone()?,
                };
                let left = earlier.stop()?;
                if !left.is_empty() {
                    say(&format!("removed what its runs left: {left}"));
                }
            }
            Err(e) => say(&format!(
                "(restarting it to clear its containers failed: {e:#})"
            )),
        }
    }
    unmount_under(&[&layout.base, &layout.run]);
    remove_folders(layout)
}

/// The pid in the pid file, if that process is a live dockerd of these folders.
fn recorded_pid(layout: &Layout) -> Option<u32> {
    let pid: u32 = fs::read_to_string(layout.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    runs_with(pid, &layout.socket()).then_some(pid)
}

/// Whether `pid` is a live process (not a zombie) whose command line mentions `dir`.
fn runs_with(pid: u32, dir: &Path) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !cmdline.is_empty() && String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

/// SIGTERM, then SIGKILL if it is still there after `grace`.
fn terminate(pid: u32, grace: Duration) -> Result<()> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Ok(());
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !gone(pid) {
        signal(pid, libc::SIGKILL);
        bail!(
            "the private dockerd (pid {pid}) did not stop within {}s and was killed",
            grace.as_secs()
        );
    }
    Ok(())
}

/// Exited: no such process, or a zombie (an orphan's exit is reaped by init, which may be late).
fn gone(pid: u32) -> bool {
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    zombie || !pid_alive(pid)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we started (checked against its pid file and command line);
    // no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Unmounts every mount point under `dirs`, deepest first (lazily: a busy one goes once free).
fn unmount_under(dirs: &[&Path]) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts_under(&info, dirs) {
        if let Ok(c) = std::ffi::CString::new(point.into_os_string().into_encoded_bytes()) {
            // SAFETY: umount2(2) with a NUL-terminated path that outlives the call.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// Mount points under `dirs` in `/proc/self/mountinfo` text, deepest first (pure).
pub fn mounts_under(mountinfo: &str, dirs: &[&Path]) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    points.sort_by(|a, b| {
        let depth = |p: &PathBuf| p.components().count();
        depth(b).cmp(&depth(a)).then(b.cmp(a))
    });
    points
}

/// `\040` and friends (octal escapes of space, tab, newline, backslash) back to characters.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn remove_folders(layout: &Layout) -> Result<()> {
    for dir in [
        &layout.run,
        &layout.base.join("data"),
        &layout.client_config(),
    ] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    for file in ["daemon.json", "key.json"] {
        let _ = fs::remove_file(layout.base.join(file));
    }
    Ok(())
}

/// One `cargo xtask test` per folder at a time (released by the kernel when this process ends).
fn take_lock(path: &Path) -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        bail!(
            "another `cargo xtask test` uses the private dockerd of this folder (it holds {}); \
             wait for it to finish",
            path.display()
        );
    }
    Ok(file)
}

#[cfg(test)]
mod tests;
