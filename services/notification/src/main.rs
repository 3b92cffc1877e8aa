//! The `notification` binary.

use std::process::ExitCode;
use svc_common::cli;

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
    if let Some(code) = cli::serve_only_args("notification", env!("CARGO_PKG_VERSION"), HELP, &args)
    {
        return code;
    }
    cli::run(
        "notification",
        notification::Config::read,
        notification::serve,
    )
}
