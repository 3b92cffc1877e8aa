//! fake-kube: stand-ins for `kind` and `kubectl`, backed by podman, for testing the xtask's E2E
//! pipeline where neither kind nor a Kubernetes server can run. See README.md.
//!
//! The binary acts as `kind` or `kubectl` by the name it was called by (symlinks), or as
//! `fake-kube kind ...` / `fake-kube kubectl ...`. Every call is appended to
//! `$FAKE_KUBE_STATE/calls.jsonl`.

mod apply;
mod archive;
mod kind;
mod kubectl;
mod pods;
mod state;
mod util;
mod yaml;

use serde_json::json;
use std::io::Write;
use util::{Fail, Res};

/// `(tool, args)` from argv: the basename of argv[0], or the first argument after `fake-kube`.
fn split_tool(argv: &[String]) -> (String, Vec<String>) {
    let base = argv
        .first()
        .map(|a| {
            std::path::Path::new(a)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(a)
                .to_string()
        })
        .unwrap_or_default();
    match base.as_str() {
        "kind" | "kubectl" => (base, argv[1..].to_vec()),
        _ => match argv.get(1).map(String::as_str) {
            Some(t @ ("kind" | "kubectl")) => (t.to_string(), argv[2..].to_vec()),
            _ => (
                "fake-kube".into(),
                argv.get(1..).unwrap_or_default().to_vec(),
            ),
        },
    }
}

fn run(tool: &str, args: &[String]) -> Res<i32> {
    state::root()?;
    match tool {
        "kind" => kind::run(args),
        "kubectl" => kubectl::run(args),
        _ => Err(Fail { msg: "usage: fake-kube kind|kubectl ARGS... (or call it through a symlink named kind or kubectl)".into(), code: 2 }),
    }
}

/// The call-log line for one invocation.
fn call_record(
    tool: &str,
    args: &[String],
    stdin: Option<String>,
    start_ms: u128,
    end_ms: u128,
    code: i32,
) -> serde_json::Value {
    let env = |k: &str| std::env::var(k).ok();
    let mut rec = json!({
        "tool": tool,
        "argv": args,
        "start_ms": start_ms as u64,
        "end_ms": end_ms as u64,
        "exit_code": code,
        "env": {"KIND_EXPERIMENTAL_PROVIDER": env("KIND_EXPERIMENTAL_PROVIDER"), "KUBECONFIG": env("KUBECONFIG")},
    });
    if let Some(s) = stdin {
        rec["stdin"] = json!(s);
    }
    rec
}

fn main() {
    let start = util::now_ms();
    let argv: Vec<String> = std::env::args().collect();
    let (tool, args) = split_tool(&argv);
    let outcome = std::panic::catch_unwind(|| run(&tool, &args));
    let code = match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(f)) => {
            if !f.msg.is_empty() {
                eprintln!("{}", f.msg);
            }
            f.code
        }
        Err(_) => 2, // the panic message is already on stderr
    };
    let _ = std::io::stdout().flush();
    if std::env::var_os("FAKE_KUBE_STATE").is_some_and(|s| !s.is_empty()) {
        let rec = call_record(
            &tool,
            &args,
            util::stdin_seen(),
            start,
            util::now_ms(),
            code,
        );
        if let Err(e) = state::append_call_log(&rec.to_string()) {
            eprintln!("fake-kube: cannot write the call log: {e}");
        }
    }
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_on_program_name() {
        assert_eq!(
            split_tool(&argv!["/x/bin/kubectl", "get", "pods"]),
            ("kubectl".into(), argv!["get", "pods"].to_vec())
        );
        assert_eq!(
            split_tool(&argv!["kind", "version"]),
            ("kind".into(), argv!["version"].to_vec())
        );
        assert_eq!(
            split_tool(&argv!["target/debug/fake-kube", "kind", "get", "clusters"]),
            ("kind".into(), argv!["get", "clusters"].to_vec())
        );
        assert_eq!(split_tool(&argv!["fake-kube"]).0, "fake-kube");
    }

    #[test]
    fn call_records() {
        let r = call_record(
            "kubectl",
            &argv!["apply", "-f", "-"],
            Some("x".into()),
            1,
            2,
            0,
        );
        assert_eq!(r["argv"], json!(["apply", "-f", "-"]));
        assert_eq!(r["stdin"], "x");
        assert_eq!(
            (
                r["start_ms"].as_u64(),
                r["end_ms"].as_u64(),
                r["exit_code"].as_i64()
            ),
            (Some(1), Some(2), Some(0))
        );
        assert!(r["env"].as_object().unwrap().contains_key("KUBECONFIG"));
        assert!(call_record("kind", &[], None, 1, 2, 1)
            .get("stdin")
            .is_none());
    }
}
