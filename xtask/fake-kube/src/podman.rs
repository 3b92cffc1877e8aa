//! The one way the fake runs programs: the container engine (`podman`, or `$FAKE_KUBE_PODMAN`),
//! and for `kind load docker-image` the docker client (`docker`, or `$FAKE_KUBE_DOCKER`, talking
//! to the engine `DOCKER_HOST` names), always with an argv vector, never through a shell. Through duct: stdout and stderr are read
//! while the program runs (no pipe fills up), a deadline kills it, output can go straight to the
//! terminal or a file as it is written, and every failure names the command.

use crate::{Fail, Res};
use std::path::Path;
use std::time::Duration;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `$FAKE_KUBE_PODMAN`, else `podman`. The environment (e.g. `CONTAINERS_CONF`) is inherited.
pub fn program() -> String {
    std::env::var("FAKE_KUBE_PODMAN")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "podman".into())
}

/// `$FAKE_KUBE_DOCKER`, else `docker`.
fn docker_program() -> String {
    std::env::var("FAKE_KUBE_DOCKER")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "docker".into())
}

fn shown<S: AsRef<str>>(args: &[S]) -> String {
    let words: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    format!("{} {}", program(), words.join(" "))
}

fn expr<S: AsRef<str>>(args: &[S]) -> duct::Expression {
    let argv: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    duct::cmd(program(), argv).stdin_null().unchecked()
}

fn cannot<S: AsRef<str>>(args: &[S], e: std::io::Error) -> Fail {
    Fail(format!(
        "fake-kube: cannot run `{}`: {e} (FAKE_KUBE_PODMAN names the engine)",
        shown(args)
    ))
}

/// Runs the docker client to the end (`docker image inspect`, `docker save`); a failure is an
/// error quoting its stderr.
pub fn docker(args: &[&str]) -> Res<String> {
    let shown = format!("{} {}", docker_program(), args.join(" "));
    let o = duct::cmd(docker_program(), args)
        .stdin_null()
        .unchecked()
        .stdout_capture()
        .stderr_capture()
        .run()
        .map_err(|e| {
            Fail(format!(
                "fake-kube: cannot run `{shown}`: {e} (FAKE_KUBE_DOCKER names the docker client)"
            ))
        })?;
    let o = out(&o);
    match o.ok {
        true => Ok(o.stdout),
        false => Err(Fail(format!(
            "fake-kube: `{shown}` failed: {}",
            o.stderr.trim()
        ))),
    }
}

fn out(o: &std::process::Output) -> Out {
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The error for a command that ran and failed.
pub fn failed<S: AsRef<str>>(args: &[S], o: &Out) -> Fail {
    Fail(format!(
        "fake-kube: `{}` failed: {}",
        shown(args),
        o.stderr.trim()
    ))
}

/// Runs to the end with both outputs captured.
pub fn output<S: AsRef<str>>(args: &[S]) -> Res<Out> {
    let o = expr(args)
        .stdout_capture()
        .stderr_capture()
        .run()
        .map_err(|e| cannot(args, e))?;
    Ok(out(&o))
}

/// Like [`output`], but a failure is an error; returns stdout.
pub fn run<S: AsRef<str>>(args: &[S]) -> Res<String> {
    let o = output(args)?;
    if o.ok {
        Ok(o.stdout)
    } else {
        Err(failed(args, &o))
    }
}

/// Like [`output`] with a deadline: `None` when it passed (the program is killed).
pub fn output_within<S: AsRef<str>>(args: &[S], limit: Duration) -> Res<Option<Out>> {
    let handle = expr(args)
        .stdout_capture()
        .stderr_capture()
        .start()
        .map_err(|e| cannot(args, e))?;
    match handle.wait_timeout(limit).map_err(|e| cannot(args, e))? {
        Some(o) => Ok(Some(out(o))),
        None => {
            let _ = handle.kill();
            Ok(None)
        }
    }
}

/// Runs with stdout and stderr passed through: the output appears as the program writes it.
pub fn stream<S: AsRef<str>>(args: &[S]) -> Res<bool> {
    let o = expr(args).run().map_err(|e| cannot(args, e))?;
    Ok(o.status.success())
}

/// Runs with stdout and stderr written to `path` as they come.
pub fn to_file<S: AsRef<str>>(args: &[S], path: &Path) -> Res<bool> {
    let o = expr(args)
        .stderr_to_stdout()
        .stdout_path(path)
        .run()
        .map_err(|e| cannot(args, e))?;
    Ok(o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain programs stand in for the engine (the only test that sets FAKE_KUBE_PODMAN).
    #[test]
    fn captures_fails_times_out_and_writes_files() {
        let engine = |p: &str| std::env::set_var("FAKE_KUBE_PODMAN", p);
        engine("echo");
        assert_eq!(run(&["out"]).unwrap(), "out\n");
        engine("ls");
        let e = run(&["/nonexistent-fk"]).unwrap_err().0;
        assert!(
            e.starts_with("fake-kube: `ls /nonexistent-fk` failed: ls: cannot access"),
            "{e}"
        );
        let file = std::env::temp_dir().join(format!("fake-kube-podman-{}", std::process::id()));
        assert!(!to_file(&["-d", "/", "/nonexistent-fk"], &file).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("/\n") && text.contains("cannot access"),
            "{text}"
        );
        let _ = std::fs::remove_file(file);
        engine("sleep");
        let t = std::time::Instant::now();
        assert!(output_within(&["5"], Duration::from_millis(200))
            .unwrap()
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(
            output_within(&["0"], Duration::from_secs(5))
                .unwrap()
                .unwrap()
                .ok
        );
        std::env::set_var("FAKE_KUBE_DOCKER", "echo");
        assert_eq!(docker(&["save", "x"]).unwrap(), "save x\n");
        std::env::set_var("FAKE_KUBE_DOCKER", "false");
        assert_eq!(
            docker(&["save", "x"]).unwrap_err().0,
            "fake-kube: `false save x` failed: "
        );
        engine("/nonexistent/engine");
        assert!(output(&["ps"])
            .unwrap_err()
            .0
            .starts_with("fake-kube: cannot run `/nonexistent/engine ps`"));
    }
}
