//! The `notification` binary.

use std::process::ExitCode;
use svc_common::logging::{self, LogConfig};

const HELP: &str = "\
notification: delivers notifications (console, file, webhook) and audits the outcomes

USAGE:
    notification            run the service
    notification --help | --version

ENVIRONMENT:
    DATASTORAGE_URL          required, http://datastorage:8080
    LISTEN_ADDR              default 0.0.0.0:8080
    NOTIFICATION_FILE_DIR    folder of the file channel (default /tmp/notifications)
    DELIVERY_MAX_ATTEMPTS    attempts before failing (default 5)
    DELIVERY_BACKOFF_MS      first retry delay, doubled each time (default 200)
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
            println!("notification {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("notification: unexpected arguments {args:?}; see notification --help");
            return ExitCode::from(2);
        }
    }
    let (log, config) = match svc_common::config::load(|env| {
        (LogConfig::read(env), notification::Config::read(env))
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("notification: configuration error:\n{e}");
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
            eprintln!("notification: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(notification::serve(
        config,
        svc_common::shutdown::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notification: {e:#}");
            ExitCode::FAILURE
        }
    }
}
