//! fake-kube: stand-ins for `kind` and `kubectl`, backed by podman, for testing the xtask's E2E
//! pipeline where neither kind nor a Kubernetes server can run. Only the commands and manifest
//! fields the xtask uses are emulated; anything else is refused loudly. See README.md.
//!
//! The binary acts as `kind` or `kubectl` by the name it was called by (symlinks), or as
//! `fake-kube kind ...` / `fake-kube kubectl ...`. Every call is appended to
//! `$FAKE_KUBE_STATE/calls.jsonl`.

mod apply;
mod forward;
mod kind;
mod kubectl;
mod podman;
mod pods;
mod state;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Mutex, OnceLock};

/// A failed invocation: the message goes to stderr, the exit status is 1.
#[derive(Debug, PartialEq)]
pub struct Fail(pub String);

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail(msg)
    }
}

pub type Res<T> = Result<T, Fail>;

/// A command line: positional words and flags by canonical name.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub pos: Vec<String>,
    pub flags: BTreeMap<&'static str, String>,
}

/// One flag: its spellings, its canonical name, and whether it takes a value.
pub type Flag = (&'static [&'static str], &'static str, bool);

impl Args {
    /// Parses `argv` (flags anywhere, `--flag value` or `--flag=value`); `None` for an unknown
    /// flag or a missing value.
    pub fn parse(argv: &[String], known: &[Flag]) -> Option<Args> {
        let mut a = Args::default();
        let mut words = argv.iter();
        while let Some(w) = words.next() {
            if !w.starts_with('-') || w == "-" {
                a.pos.push(w.clone());
                continue;
            }
            let (spelling, inline) = match w.split_once('=') {
                Some((s, v)) => (s, Some(v.to_string())),
                None => (w.as_str(), None),
            };
            let (_, name, takes) = known.iter().find(|f| f.0.contains(&spelling))?;
            let value = match (takes, inline) {
                (true, Some(v)) => v,
                (true, None) => words.next().cloned()?,
                (false, None) => "true".into(),
                (false, Some(v)) if v == "true" || v == "false" => v,
                (false, Some(_)) => return None,
            };
            a.flags.insert(name, value);
        }
        Some(a)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// A boolean flag given as `--flag` or `--flag=true`.
    pub fn on(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }
}

/// Whether `FAKE_KUBE_FAIL` (comma-separated) asks for this failure.
pub fn injected(what: &str) -> bool {
    std::env::var("FAKE_KUBE_FAIL")
        .unwrap_or_default()
        .split(',')
        .any(|x| x.trim() == what)
}

/// How long `kind create cluster` takes (`FAKE_KIND_CREATE_DELAY_MS`, default 1500).
pub fn create_delay() -> std::time::Duration {
    let ms = std::env::var("FAKE_KIND_CREATE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    std::time::Duration::from_millis(ms)
}

/// A Go duration as kubectl's flags take it (`120s`, `2m`, `1m30s`, `500ms`, `0`).
pub fn duration(flag: &str, s: &str) -> Res<std::time::Duration> {
    let bad = || {
        Fail(format!(
            "error: invalid argument \"{s}\" for \"--{flag}\" flag: time: invalid duration \"{s}\""
        ))
    };
    let (mut ms, mut rest) = (0u64, if s == "0" { "" } else { s });
    if s.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&n| n > 0)
            .ok_or_else(bad)?;
        let value: u64 = rest[..n].parse().map_err(|_| bad())?;
        const UNITS: [(&str, u64); 4] = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1000)];
        let (unit, scale) = UNITS
            .into_iter()
            .find(|(u, _)| rest[n..].starts_with(u))
            .ok_or_else(bad)?;
        ms += value * scale;
        rest = &rest[n + unit.len()..];
    }
    Ok(std::time::Duration::from_millis(ms))
}

static STDIN: OnceLock<String> = OnceLock::new();
static PULLS: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// Records an image pull in this call's log line (`pulls`).
pub fn note_pull(v: Value) {
    PULLS.lock().unwrap_or_else(|e| e.into_inner()).push(v);
}

/// All of stdin, read once (the call log records it).
pub fn read_stdin() -> Res<String> {
    if let Some(s) = STDIN.get() {
        return Ok(s.clone());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Fail(format!("error: reading stdin: {e}")))?;
    Ok(STDIN.get_or_init(|| text).clone())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `(tool, args)` from argv: the basename of argv[0], or the first argument after `fake-kube`.
fn split_tool(argv: &[String]) -> (String, Vec<String>) {
    let base = argv
        .first()
        .map_or("", |a| a.rsplit('/').next().unwrap_or(a));
    match (base, argv.get(1).map(String::as_str)) {
        ("kind" | "kubectl", _) => (base.to_string(), argv[1..].to_vec()),
        (_, Some(t @ ("kind" | "kubectl"))) => (t.to_string(), argv[2..].to_vec()),
        _ => (
            "fake-kube".into(),
            argv.get(1..).unwrap_or_default().to_vec(),
        ),
    }
}

fn run(tool: &str, args: &[String]) -> Res<()> {
    state::root()?;
    // Command-level failure injections: `<tool>-<first word>`, e.g. kind-create, kubectl-apply.
    let what = format!("{tool}-{}", args.first().map_or("", String::as_str));
    if injected(&what) {
        if what == "kind-create" {
            std::thread::sleep(create_delay());
        }
        return Err(Fail(format!("ERROR: fake-kube: injected failure {what}")));
    }
    match tool {
        "kind" => kind::run(args),
        "kubectl" => kubectl::run(args),
        _ => Err(Fail(
            "usage: fake-kube kind|kubectl ARGS... (or through a symlink named kind or kubectl)"
                .into(),
        )),
    }
}

fn main() {
    let start = now_ms();
    let argv: Vec<String> = std::env::args().collect();
    let (tool, args) = split_tool(&argv);
    let code = match std::panic::catch_unwind(|| run(&tool, &args)) {
        Ok(Ok(())) => 0,
        Ok(Err(Fail(msg))) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            1
        }
        Err(_) => 2, // the panic message is on stderr already
    };
    let _ = std::io::stdout().flush();
    if std::env::var_os("FAKE_KUBE_STATE").is_some_and(|s| !s.is_empty()) {
        let env = |k: &str| std::env::var(k).ok();
        let mut rec = json!({
            "tool": tool, "argv": args, "start_ms": start, "end_ms": now_ms(), "exit_code": code,
            "env": {"KIND_EXPERIMENTAL_PROVIDER": env("KIND_EXPERIMENTAL_PROVIDER"), "KUBECONFIG": env("KUBECONFIG")},
        });
        if let Some(s) = STDIN.get() {
            rec["stdin"] = json!(s);
        }
        let pulls = std::mem::take(&mut *PULLS.lock().unwrap_or_else(|e| e.into_inner()));
        if !pulls.is_empty() {
            rec["pulls"] = json!(pulls);
        }
        if let Err(Fail(e)) = state::append_call(&rec.to_string()) {
            eprintln!("fake-kube: cannot write the call log: {e}");
        }
    }
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn dispatch_on_program_name() {
        assert_eq!(
            split_tool(&v(&["/x/bin/kubectl", "get", "pods"])),
            ("kubectl".into(), v(&["get", "pods"]))
        );
        assert_eq!(
            split_tool(&v(&["target/debug/fake-kube", "kind", "get", "clusters"])),
            ("kind".into(), v(&["get", "clusters"]))
        );
        assert_eq!(split_tool(&v(&["fake-kube"])).0, "fake-kube");
    }

    #[test]
    fn go_durations() {
        let d = |s| duration("timeout", s).map(|d| d.as_millis());
        assert_eq!(d("120s"), Ok(120_000));
        assert_eq!(d("1m30s"), Ok(90_000));
        assert_eq!(
            (d("500ms"), d("1h"), d("0")),
            (Ok(500), Ok(3_600_000), Ok(0))
        );
        assert_eq!(
            d("5").unwrap_err().0,
            "error: invalid argument \"5\" for \"--timeout\" flag: time: invalid duration \"5\""
        );
        assert!(d("").is_err() && d("s").is_err() && d("3d").is_err());
    }

    #[test]
    fn flags_anywhere() {
        const KNOWN: &[Flag] = &[
            (&["-n", "--namespace"], "namespace", true),
            (&["--client"], "client", false),
        ];
        let a = Args::parse(&v(&["get", "-n", "x", "pods", "--client"]), KNOWN).unwrap();
        assert_eq!(a.pos, ["get", "pods"]);
        assert_eq!(
            (a.get("namespace"), a.get("client")),
            (Some("x"), Some("true"))
        );
        let a = Args::parse(&v(&["--namespace=y", "-"]), KNOWN).unwrap();
        assert_eq!(
            (a.get("namespace"), a.pos.as_slice()),
            (Some("y"), &v(&["-"])[..])
        );
        assert!(Args::parse(&v(&["--bogus"]), KNOWN).is_none());
        assert!(Args::parse(&v(&["-n"]), KNOWN).is_none());
        let off = Args::parse(&v(&["--client=false"]), KNOWN).unwrap();
        assert!(!off.on("client") && Args::parse(&v(&["--client"]), KNOWN).unwrap().on("client"));
        assert!(Args::parse(&v(&["--client=no"]), KNOWN).is_none());
    }
}
