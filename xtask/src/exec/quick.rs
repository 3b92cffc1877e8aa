//! Short synchronous reads through xshell (`git`, `--version`): quick commands that need no
//! time limit, process group or streaming. `None` when the program is missing or fails.
#![allow(clippy::disallowed_methods)] // part of the process layer: xshell for short reads

use std::path::Path;

use xshell::{cmd, Shell};

/// `git -C <root> rev-parse HEAD`, trimmed.
pub fn git_head(root: &Path) -> Option<String> {
    let sh = Shell::new().ok()?;
    let out = cmd!(sh, "git -C {root} rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    Some(out.trim().to_string())
}

/// The first non-empty line `program args...` prints (stdout, else stderr).
pub fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let sh = Shell::new().ok()?;
    let out = cmd!(sh, "{program} {args...}")
        .quiet()
        .ignore_status()
        .output()
        .ok()?;
    let text = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}
