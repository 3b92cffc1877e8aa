//! Readiness checks of integration containers, polled fast from the host: a real SQL query
//! (psql inside the container), Redis `PING`, HTTP status, TCP connect, or a command in the
//! container. A container that exits while being waited for fails at once; a timeout fails with
//! the last lines of the container's log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::dag::Ctx;
use crate::host::tools::Engine;

pub use crate::plan::probe::Probe;

/// Runs the check once; the error says why it is not ready yet.
pub fn once(probe: &Probe, engine: &Engine) -> Result<()> {
    let short = Duration::from_millis(800);
    match probe {
        Probe::Sql {
            container,
            pg,
            query,
            host_port,
        } => {
            // Cheap first: the final server listens on TCP; initdb's temporary one does not.
            if let Some(p) = host_port {
                connect(*p, short)?;
            }
            let argv: Vec<String> = [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                &pg.user,
                "-d",
                &pg.database,
                "-tAc",
                query,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let out = engine
                .exec(
                    container,
                    &argv,
                    &[("PGPASSWORD".into(), pg.password.clone())],
                )
                .timeout(Duration::from_secs(5))
                .output()?;
            if !out.success() {
                bail!("{}", out.tail(1));
            }
            Ok(())
        }
        Probe::Postgres {
            port,
            user,
            database,
        } => postgres_accepts(*port, user, database, short),
        Probe::Redis { port } => {
            let mut s = connect(*port, short)?;
            s.write_all(b"PING\r\n")?;
            let reply = read_line(&mut s)?;
            if reply.starts_with("+PONG") {
                Ok(())
            } else {
                bail!("PING answered {:?}", reply.trim())
            }
        }
        Probe::Http { port, path } => {
            let (status, body) = http_get(*port, path, short)?;
            if (200..300).contains(&status) {
                Ok(())
            } else if body.is_empty() {
                bail!("GET {path} answered {status}")
            } else {
                bail!("GET {path} answered {status}: {}", one_line(&body, 400))
            }
        }
        Probe::Tcp { port } => connect(*port, short).map(|_| ()),
        Probe::Exec { container, argv } => {
            let out = engine
                .exec(container, argv, &[])
                .timeout(Duration::from_secs(10))
                .output()?;
            if out.success() {
                Ok(())
            } else {
                bail!("`{}` failed: {}", argv.join(" "), out.tail(1))
            }
        }
    }
}

/// Polls `probe` until it passes, the container exits, or `timeout` passes.
pub fn wait(
    engine: &Engine,
    container: &str,
    probe: &Probe,
    timeout: Duration,
    ctx: &Ctx,
) -> Result<Duration> {
    let start = Instant::now();
    let mut last_state_check = Instant::now();
    let mut last_err;
    ctx.line.state("waiting", &probe.describe());
    loop {
        match once(probe, engine) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last_err = format!("{e:#}"),
        }
        if last_state_check.elapsed() > Duration::from_millis(700) {
            last_state_check = Instant::now();
            if let Ok((status, code)) = engine.state(container) {
                if status != "running" {
                    bail!(
                        "{container} stopped ({status}, exit code {code}) before it was ready; \
                         its last log lines:\n{}",
                        crate::exec::process::indent(&engine.logs_tail(container, 30))
                    );
                }
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "{container} was not ready after {}s ({}); last answer: {last_err}\n\
                 last log lines of {container}:\n{}",
                timeout.as_secs(),
                probe.describe(),
                crate::exec::process::indent(&engine.logs_tail(container, 30))
            );
        }
        // A socket costs microseconds; a process in the container ~0.15 s.
        ctx.pause(Duration::from_millis(if probe.from_host() {
            25
        } else {
            100
        }))?;
    }
}

/// What `pg_isready` asks, over the wire protocol from the host: a startup message answered
/// with an authentication request means the server accepts connections; an error (`the
/// database system is starting up`) or a closed connection means not yet. No password is
/// sent: the connection ends at the request. Only the final server listens on TCP (initdb's
/// temporary one listens on its unix socket), so this never passes during initialisation.
fn postgres_accepts(port: u16, user: &str, database: &str, t: Duration) -> Result<()> {
    let mut s = connect(port, t)?;
    s.write_all(&startup_message(user, database))?;
    let (tag, body) = read_message(&mut s)?;
    match tag {
        b'R' => {
            // Terminate: the server logs no "unexpected EOF" for a polite goodbye.
            let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
            Ok(())
        }
        b'E' => bail!("{}", error_text(&body)),
        other => bail!(
            "PostgreSQL answered an unexpected message `{}`",
            other as char
        ),
    }
}

/// A protocol 3.0 StartupMessage for `user` and `database`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608_u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        for part in [k, v] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// One backend message: its type byte and body (at most 64 KiB).
fn read_message(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .context("the connection closed without an answer")?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=65_536).contains(&len) {
        bail!("not a PostgreSQL answer (message length {len})");
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body)
        .context("the answer was cut short")?;
    Ok((head[0], body))
}

/// `message (SQLSTATE)` of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'M' => message = text,
            b'C' => code = text,
            _ => {}
        }
    }
    format!("{message} ({code})")
}

fn connect(port: u16, t: Duration) -> Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, t)
        .with_context(|| format!("connect to localhost:{port}"))?;
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))?;
    Ok(s)
}

/// Reads until the first line is complete (a reply can arrive in several segments).
fn read_line(s: &mut TcpStream) -> Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.contains(&b'\n') && got.len() < 8192 {
        let n = s.read(&mut buf).context("no answer")?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got.is_empty() {
        bail!("connection closed without an answer");
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Status code and (the start of) the body of `GET path` on localhost:port (HTTP/1.1, the
/// connection closed after the answer).
pub fn http_get(port: u16, path: &str, t: Duration) -> Result<(u16, String)> {
    let mut s = connect(port, t)?;
    // One write: the request goes out in one segment.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A server that keeps the connection open: use what came.
            Err(_) if !got.is_empty() => break,
            Err(e) => return Err(anyhow::Error::new(e).context("no answer")),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = parse_status(&text).with_context(|| {
        format!(
            "not an HTTP answer: {:?}",
            text.lines().next().unwrap_or("")
        )
    })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A body on one line, cut to `max` characters, for messages.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

pub fn parse_status(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status("HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            Some(503)
        );
        assert_eq!(parse_status("+PONG\r\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn http_probe_against_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            // Other tests may connect to a port they just freed that the OS gave to us: only
            // our own two requests count.
            let mut served = 0;
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 256];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if !req.starts_with(b"GET /readyz") {
                    continue;
                }
                let (status, body) = if served == 0 {
                    (
                        "503 Service Unavailable",
                        "{\"unavailable\":[\"postgres\"],\n \"error\":\"password authentication failed\"}",
                    )
                } else {
                    ("200 OK", "")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                served += 1;
                if served == 2 {
                    break;
                }
            }
        });
        let (status, body) = http_get(port, "/readyz", Duration::from_secs(1)).unwrap();
        assert_eq!(status, 503);
        assert_eq!(
            one_line(&body, 400),
            "{\"unavailable\":[\"postgres\"], \"error\":\"password authentication failed\"}"
        );
        assert_eq!(
            http_get(port, "/readyz", Duration::from_secs(1)).unwrap(),
            (200, String::new())
        );
        t.join().unwrap();
    }

    /// A server that answers each of `answers` to one startup message, in turn, and hands
    /// back the startup messages it got.
    fn fake_postgres(answers: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            for answer in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut msg = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                s.read_exact(&mut msg).unwrap();
                got.push(msg);
                s.write_all(&answer).unwrap();
            }
            got
        });
        (port, t)
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn postgres_probe_passes_on_an_authentication_request_only() {
        let starting = message(
            b'E',
            b"SFATAL\0C57P03\0Mthe database system is starting up\0\0",
        );
        // AuthenticationSASL, as a scram-sha-256 server asks.
        let sasl = message(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        let (port, server) = fake_postgres(vec![starting, b"HTTP/1.1 400".to_vec(), sasl]);
        let probe = Probe::Postgres {
            port,
            user: "slm_user".into(),
            database: "action_history".into(),
        };
        let engine = Engine {
            tool: crate::host::tools::Tool::Podman,
            program: "podman".into(),
        };
        let err = once(&probe, &engine).unwrap_err().to_string();
        assert_eq!(err, "the database system is starting up (57P03)");
        let err = once(&probe, &engine).unwrap_err().to_string();
        assert!(err.contains("not a PostgreSQL answer"), "{err}");
        once(&probe, &engine).unwrap();
        let got = server.join().unwrap();
        assert_eq!(
            got[0], b"\0\x03\0\0user\0slm_user\0database\0action_history\0\0",
            "protocol 3.0, user and database"
        );
    }

    #[test]
    fn closed_port_is_not_ready() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let engine = Engine {
            tool: crate::host::tools::Tool::Podman,
            program: "podman".into(),
        };
        assert!(once(&Probe::Tcp { port }, &engine).is_err());
        assert!(once(&Probe::Redis { port }, &engine).is_err());
        let pg = Probe::Postgres {
            port,
            user: "u".into(),
            database: "d".into(),
        };
        assert!(once(&pg, &engine).is_err());
    }
}
