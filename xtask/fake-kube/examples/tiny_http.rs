//! A tiny std-only HTTP server and client for fake-kube's podman tests (copied into a test image
//! as its entrypoint, so pods choose a mode with `args`).
//!
//! - `tiny_http [PORT]` (default: `$PORT`, else 8080) answers `GET /healthz` and `GET /readyz`
//!   with 200, `GET /env/NAME` with the value of the environment variable NAME (404 when
//!   unset), `GET /file/PATH` with the contents of the file `/PATH` (404 when it cannot be
//!   read), and anything else with 200 and the host name. It logs one line per request.
//! - `tiny_http get URL` fetches `http://HOST:PORT/PATH` until it answers 200 (at most 20 s),
//!   prints the body and exits 0; else exits 1.
//! - `tiny_http exit CODE` prints `boom` and exits with CODE.

use std::io::{BufRead, BufReader, Read, Write};
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
    } else if let Some(file) = path.strip_prefix("/file/") {
        match std::fs::read_to_string(format!("/{file}")) {
            Ok(text) => (200, text),
            Err(e) => (404, format!("/{file}: {e}\n")),
        }
    } else {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        (200, format!("tiny_http on {host}\n"))
    };
    let reason = if code == 200 { "OK" } else { "Not Found" };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// One GET: the body when the answer is 200.
fn get(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(text),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("get") => {
            let url = args.get(1).cloned().unwrap_or_default();
            for _ in 0..40 {
                match get(&url) {
                    Ok(body) => {
                        println!("{body}");
                        return Ok(());
                    }
                    Err(e) => eprintln!("tiny_http: GET {url}: {e}"),
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            std::process::exit(1);
        }
        Some("exit") => {
            println!("boom");
            std::process::exit(args.get(1).and_then(|c| c.parse().ok()).unwrap_or(1));
        }
        _ => {}
    }
    let port = args
        .first()
        .cloned()
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
