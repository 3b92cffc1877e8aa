//! The `gateway` binary.

use std::process::ExitCode;
use svc_common::cli;

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
    if let Some(code) = cli::serve_only_args("gateway", env!("CARGO_PKG_VERSION"), HELP, &args) {
        return code;
    }
    cli::run("gateway", gateway::Config::read, gateway::serve)
}
