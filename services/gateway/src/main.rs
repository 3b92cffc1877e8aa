//! The `gateway` binary.

use std::process::ExitCode;
use svc_common::logging::{self, LogConfig};

const HELP: &str = "\
gateway: deduplicates signals, audits them, forwards critical ones to Notification

USAGE:
    gateway                 run the service
    gateway --help | --version

ENVIRONMENT:
    REDIS_URL                required, redis://host:6379
    DATASTORAGE_URL          required, http://datastorage:8080
    NOTIFICATION_URL         optional, http://notification:8080: forward critical signals
    LISTEN_ADDR              default 0.0.0.0:8080
    DEDUP_WINDOW_SECONDS     deduplication window (default 300)
    AUDIT_BUFFER_CAPACITY    audit events buffered while DataStorage is down (default 10000)
    AUDIT_FLUSH_INTERVAL_MS  audit flush interval (default 200)
    AUDIT_BATCH_SIZE         audit events per request (default 100)
    LOG_FORMAT               json | text (default text)
    RUST_LOG                 log filter (default info)

EXIT CODES: 0 success, 1 failure, 2 bad usage or configuration.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => {}
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("gateway {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("gateway: unexpected arguments {args:?}; see gateway --help");
            return ExitCode::from(2);
        }
    }
    let (log, config) =
        match svc_common::config::load(|env| (LogConfig::read(env), gateway::Config::read(env))) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("gateway: configuration error:\n{e}");
                return ExitCode::from(2);
            }
        };
    logging::init(&log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(gateway::serve(
        config,
        svc_common::shutdown::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
