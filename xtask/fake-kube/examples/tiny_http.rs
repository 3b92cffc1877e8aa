//! A tiny std-only HTTP server for fake-kube's podman tests (copied into a test image).
//!
//! `tiny_http [PORT]` (default: `$PORT`, else 8080) answers `GET /healthz` and `GET /readyz` with
//! 200, `GET /env/NAME` with the value of the environment variable NAME (404 when unset), and
//! anything else with 200 and the host name. It logs one line per request to stdout.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn respond(mut stream: TcpStream) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut line)?;
    // Drain the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    println!("tiny_http: {}", line.trim_end());
    let (code, body) = if path == "/healthz" || path == "/readyz" {
        (200, "ok\n".to_string())
    } else if let Some(name) = path.strip_prefix("/env/") {
        match std::env::var(name) {
            Ok(v) => (200, v),
            Err(_) => (404, format!("{name} is not set\n")),
        }
    } else {
        (
            200,
            format!(
                "tiny_http on {}\n",
                std::env::var("HOSTNAME").unwrap_or_default()
            ),
        )
    };
    let reason = if code == 200 { "OK" } else { "Not Found" };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))?;
    println!("tiny_http: listening on {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = respond(stream);
        });
    }
    Ok(())
}
