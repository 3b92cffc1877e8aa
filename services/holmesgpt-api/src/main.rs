//! The `holmesgpt-api` binary.

use std::process::ExitCode;
use svc_common::cli;

const HELP: &str = "\
holmesgpt-api: investigates alerts with an LLM and audits the outcomes

USAGE:
    holmesgpt-api            run the service
    holmesgpt-api --help | --version

ENVIRONMENT:
    LLM_URL                  required, http://mock-llm:8080 (OpenAI-style /v1/chat/completions)
    LLM_MODEL                model asked for (default gpt-4o-mini)
    LLM_TIMEOUT_MS           timeout of one LLM request (default 30000)
    DATASTORAGE_URL          required, http://datastorage:8080
    LISTEN_ADDR              default 0.0.0.0:8080
    AUDIT_BUFFER_CAPACITY    audit events buffered while DataStorage is down (default 10000)
    AUDIT_FLUSH_INTERVAL_MS  audit flush interval (default 200)
    AUDIT_BATCH_SIZE         audit events per request (default 100)
    LOG_FORMAT               json | text (default text)
    RUST_LOG                 log filter (default info)

EXIT CODES: 0 success, 1 failure, 2 bad usage or configuration.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) =
        cli::serve_only_args("holmesgpt-api", env!("CARGO_PKG_VERSION"), HELP, &args)
    {
        return code;
    }
    cli::run(
        "holmesgpt-api",
        holmesgpt_api::Config::read,
        holmesgpt_api::serve,
    )
}
