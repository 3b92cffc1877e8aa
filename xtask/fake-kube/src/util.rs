//! Small helpers shared by the fakes: errors, podman, time, hashing, base64, atomic writes.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A failed invocation: `msg` goes to stderr (when not empty), `code` is the exit status.
#[derive(Debug)]
pub struct Fail {
    pub msg: String,
    pub code: i32,
}

impl Fail {
    pub fn new(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail::new(msg)
    }
}

pub type Res<T> = Result<T, Fail>;

/// Failure injections from `FAKE_KUBE_FAIL` (comma-separated).
#[derive(Debug, Default, Clone)]
pub struct Injections(Vec<String>);

impl Injections {
    pub fn from_env() -> Injections {
        Injections::parse(&std::env::var("FAKE_KUBE_FAIL").unwrap_or_default())
    }
    pub fn parse(s: &str) -> Injections {
        Injections(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )
    }
    pub fn has(&self, what: &str) -> bool {
        self.0.iter().any(|x| x == what)
    }
    /// `pod-unready:<name>` / `pod-crash:<name>` for a workload name.
    pub fn pod(&self, kind: &str, workload: &str) -> bool {
        self.has(&format!("{kind}:{workload}"))
    }
}

static STDIN_TEXT: Mutex<Option<String>> = Mutex::new(None);

/// Reads all of stdin once and remembers it for the call log.
pub fn read_stdin() -> Res<String> {
    let mut guard = STDIN_TEXT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(text) = guard.as_ref() {
        return Ok(text.clone());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Fail::new(format!("error: reading stdin: {e}")))?;
    *guard = Some(text.clone());
    Ok(text)
}

/// What `read_stdin` read, if it was called.
pub fn stdin_seen() -> Option<String> {
    STDIN_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

pub fn podman_bin() -> String {
    std::env::var("FAKE_KUBE_PODMAN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "podman".into())
}

/// Runs podman with `args` and captures its output (the environment, e.g. CONTAINERS_CONF, is
/// inherited).
pub fn podman(args: &[String]) -> Res<Output> {
    let bin = podman_bin();
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Fail::new(format!(
                "fake-kube: cannot run {bin} (FAKE_KUBE_PODMAN): {e}"
            ))
        })
}

/// Runs podman and fails with its stderr when it exits non-zero; returns stdout.
pub fn podman_ok(args: &[String]) -> Res<String> {
    let out = podman(args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Fail::new(format!(
            "command \"{} {}\" failed with error: {}\nCommand Output: {}",
            podman_bin(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Builds an argv array of Strings from string-ish items (`Vec::from(argv![..])` to grow it).
#[macro_export]
macro_rules! argv {
    ($($x:expr),* $(,)?) => { [$(String::from($x)),*] };
}

/// Runs a command with a deadline; returns (exit code, stdout+stderr) or None on timeout or
/// spawn failure. The child is killed when the deadline passes.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Option<(i32, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut text = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut text);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut text);
                }
                return Some((status.code().unwrap_or(-1), text));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// FNV-1a 64-bit, as 16 hex digits: stable across builds (unlike std's DefaultHasher).
pub fn fnv64(data: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A UUID-shaped id derived from `seed` (for metadata.uid).
pub fn uuid_like(seed: &str) -> String {
    let a = fnv64(seed);
    let b = fnv64(&format!("{seed}/uid"));
    format!(
        "{}-{}-{}-{}-{}",
        &a[..8],
        &a[8..12],
        &a[12..16],
        &b[..4],
        &b[4..16]
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding, as the API server accepts for Secret `data`. The error names the
/// offending input byte like Go's decoder does.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "illegal base64 data at input byte {}",
            bytes.len() / 4 * 4
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'=' if i >= 2 && ci == bytes.len() / 4 - 1 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => {
                    return Err(format!("illegal base64 data at input byte {}", ci * 4 + i))
                }
                _ => match B64.iter().position(|&x| x == c) {
                    Some(p) => p as u32,
                    None => {
                        return Err(format!("illegal base64 data at input byte {}", ci * 4 + i))
                    }
                },
            };
            n = n << 6 | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

/// Writes a file atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Res<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::new(format!("fake-kube: mkdir {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Fail::new(format!("fake-kube: write {}: {e}", path.display())))
}

/// Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as RFC 3339 UTC (`2025-01-02T03:04:05Z`), the way the API server prints times.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses the RFC 3339 times podman prints (`2026-01-02T03:04:05.123456789Z`, or with a `+01:00`
/// offset) into unix seconds. Go's zero time (year 1) comes back as a negative number.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, se) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Parses Go-style durations as kubectl and kind accept them (`90s`, `2m`, `1h30m`, `500ms`, `0`,
/// a bare number = seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let idx = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..idx].parse().ok()?;
        rest = &rest[idx..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// kubectl's AGE column (`42s`, `5m3s`, `2h`, `3d`).
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_errors() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "test_password",
            "\u{e9}t\u{e9}",
        ] {
            assert_eq!(b64_decode(&b64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(b64_encode(b"slm_user"), "c2xtX3VzZXI=");
        assert_eq!(b64_decode("c2xtX3VzZXI=").unwrap(), b"slm_user");
        assert_eq!(
            b64_decode("c2xt!3VzZXI=").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
        assert!(b64_decode("abc").is_err());
        assert!(b64_decode("ab=c").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_301_527), "2026-11-21T22:52:07Z");
        assert_eq!(
            parse_rfc3339("2026-11-21T22:52:07.628633888Z"),
            Some(1_795_301_527)
        );
        assert_eq!(
            parse_rfc3339("2026-11-21T23:52:07.5+01:00"),
            Some(1_795_301_527)
        );
        assert_eq!(parse_rfc3339("2026-11-21T22:52:07Z"), Some(1_795_301_527));
        assert!(parse_rfc3339("0001-01-01T00:00:00Z").unwrap() < 0);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn durations_and_ages() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(age(42), "42s");
        assert_eq!(age(303), "5m3s");
        assert_eq!(age(7200), "120m");
        assert_eq!(age(86_400 * 3), "3d");
    }

    #[test]
    fn injections() {
        let i = Injections::parse("kind-create, pod-crash:web ,");
        assert!(i.has("kind-create"));
        assert!(i.pod("pod-crash", "web"));
        assert!(!i.pod("pod-unready", "web"));
        assert!(!i.has("kubectl-apply"));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv64(""), "cbf29ce484222325");
        assert_ne!(fnv64("a"), fnv64("b"));
    }
}
