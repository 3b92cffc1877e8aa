//! Test harness: a temporary folder with `kind` / `kubectl` symlinks to the fake, its state, and
//! helpers to run them and read the call log.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A short random suffix for names (lowercase hex), unique enough for concurrent tests.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ (&nanos as *const _ as u64);
    format!("{:08x}", mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32)
}

/// The result of one fake invocation.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

pub struct Fake {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Fake {
    pub fn new(tag: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!("fake-kube-test-{tag}-{}", unique()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["kind", "kubectl"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fake-kube"), bin.join(tool)).unwrap();
        }
        let state = dir.join("state");
        let kubeconfig = dir.join("kubeconfig");
        let env = vec![("FAKE_KIND_CREATE_DELAY_MS".to_string(), "50".to_string())];
        Fake {
            dir,
            bin,
            state,
            kubeconfig,
            env,
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Fake {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.args(args)
            .env("PATH", path)
            .env("FAKE_KUBE_STATE", &self.state)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("FAKE_KUBE_FAIL")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run_with(&self, mut cmd: Command, stdin: Option<&str>) -> Out {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the fake");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_with(self.command(tool, args), stdin)
    }

    /// Runs and asserts exit code 0.
    pub fn ok(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Out {
        let out = self.run(tool, args, stdin);
        assert_eq!(out.code, 0, "{tool} {args:?} failed: {out:?}");
        out
    }

    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad call-log line ({e}): {l}"))
            })
            .collect()
    }

    /// A kind config with one port mapping and a node label.
    pub fn write_kind_config(&self, name: &str, node_port: u16, host_port: u16) -> PathBuf {
        let path = self.dir.join("kind.yaml");
        let text = format!(
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: {name}\nnodes:\n- role: control-plane\n  labels:\n    \
             io.kubernaut/test: fake-kube\n  extraPortMappings:\n  - containerPort: {node_port}\n    hostPort: {host_port}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A docker-archive holding a dummy layer and a manifest naming `tags` (enough for
/// `kind load`: the fake records names; containers run from local podman storage).
pub fn manifest_only_archive(path: &Path, tags: &[&str]) {
    let manifest = serde_json::json!([{"Config": "cfg.json", "RepoTags": tags, "Layers": []}]);
    let mut t = Vec::new();
    tar_entry(&mut t, "abc/layer.tar", &[7u8; 1000]);
    tar_entry(&mut t, "manifest.json", manifest.to_string().as_bytes());
    t.extend_from_slice(&[0u8; 1024]);
    std::fs::write(path, t).unwrap();
}

/// Polls `f` every 500 ms until it returns Some, or panics after `secs` with the last state.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// The pod named `name` from a `kubectl get pods -o json` list.
pub fn pod<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|p| p["metadata"]["name"] == name)
}
