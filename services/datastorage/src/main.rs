//! The `datastorage` binary: `serve` (default) or `migrate [--dir PATH]`.

use std::path::PathBuf;
use std::process::ExitCode;
use svc_common::cli;
use svc_common::config::Env;

const HELP: &str = "\
datastorage: audit event store (HTTP over PostgreSQL, Redis dead-letter queue)

USAGE:
    datastorage [serve]              run the service (default)
    datastorage migrate [--dir PATH] apply NNNN_description.sql migrations, then exit
    datastorage --help | --version

ENVIRONMENT (serve):
    DATABASE_URL           required, postgres://user:pass@host:5432/db
    REDIS_URL              redis://host:6379; unset: no dead-letter queue
    LISTEN_ADDR            API address (default 0.0.0.0:8080)
    METRICS_ADDR           metrics address (default 0.0.0.0:9090)
    DLQ_RETRY_INTERVAL_MS  dead-letter retry interval (default 1000)
    DLQ_REDIS_KEY          Redis list of the dead-letter queue (default datastorage:dlq)
    MAX_BODY_BYTES         largest request body (default 1048576)
    QUERY_LIMIT_MAX        largest query limit (default 1000)
    LOG_FORMAT             json | text (default text)
    RUST_LOG               log filter (default info)

ENVIRONMENT (migrate):
    DATABASE_URL           required
    MIGRATIONS_DIR         folder of migrations (default migrations); --dir overrides it

EXIT CODES: 0 success, 1 failure (e.g. a migration refused), 2 bad usage or configuration.
";

enum Command {
    Serve,
    Migrate { dir: Option<PathBuf> },
    Help,
    Version,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter();
    let cmd = match it.next().map(String::as_str) {
        None | Some("serve") => Command::Serve,
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("migrate") => {
            let mut dir = None;
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--dir" => match it.next() {
                        Some(d) => dir = Some(PathBuf::from(d)),
                        None => return Err("--dir needs a path".into()),
                    },
                    s if s.starts_with("--dir=") => dir = Some(PathBuf::from(&s["--dir=".len()..])),
                    "-h" | "--help" => return Ok(Command::Help),
                    other => return Err(format!("unexpected argument {other:?} for migrate")),
                }
            }
            return Ok(Command::Migrate { dir });
        }
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    Ok(cmd)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("datastorage: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("datastorage {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Serve => serve(),
        Command::Migrate { dir } => migrate(dir),
    }
}

fn serve() -> ExitCode {
    cli::run(
        "datastorage",
        datastorage::Config::read,
        |config, stop| async move {
            let result = datastorage::serve(config, stop).await;
            if let Err(e) = &result {
                tracing::error!(error = %format!("{e:#}"), "datastorage failed");
            }
            result
        },
    )
}

fn migrate(dir_arg: Option<PathBuf>) -> ExitCode {
    let read = |env: &mut Env<'static>| {
        let url = env.required_url(
            "DATABASE_URL",
            &["postgres", "postgresql"],
            datastorage::config::DATABASE_URL_EXAMPLE,
        );
        let dir = PathBuf::from(env.string("MIGRATIONS_DIR", "migrations"));
        (url, dir)
    };
    let (url, env_dir) = match cli::configure("datastorage migrate", read) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let dir = dir_arg.unwrap_or(env_dir);
    let rt = match cli::runtime("datastorage") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(datastorage::migrate::run(&url, &dir)) {
        Ok(report) => {
            println!("datastorage migrate: {report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("datastorage migrate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line() {
        assert!(matches!(parse_args(&args(&[])), Ok(Command::Serve)));
        assert!(matches!(parse_args(&args(&["serve"])), Ok(Command::Serve)));
        assert!(matches!(parse_args(&args(&["--help"])), Ok(Command::Help)));
        assert!(matches!(
            parse_args(&args(&["migrate"])),
            Ok(Command::Migrate { dir: None })
        ));
        match parse_args(&args(&["migrate", "--dir", "/m"])) {
            Ok(Command::Migrate { dir: Some(d) }) => assert_eq!(d, PathBuf::from("/m")),
            _ => panic!("--dir"),
        }
        match parse_args(&args(&["migrate", "--dir=/x"])) {
            Ok(Command::Migrate { dir: Some(d) }) => assert_eq!(d, PathBuf::from("/x")),
            _ => panic!("--dir="),
        }
        assert!(parse_args(&args(&["migrate", "--dir"])).is_err());
        assert!(parse_args(&args(&["migrate", "extra"])).is_err());
        assert!(parse_args(&args(&["serve", "x"])).is_err());
        assert!(parse_args(&args(&["frobnicate"])).is_err());
    }
}
