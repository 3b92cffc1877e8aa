//! The services' `main`: the command line, configuration and logging, the runtime, serving until
//! SIGTERM or Ctrl-C, and exit codes (0 success, 1 failure, 2 bad usage or configuration).

use crate::config::{self, Env};
use crate::logging::{self, LogConfig};
use crate::shutdown::shutdown_signal;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

/// What tells a service to stop: SIGTERM or Ctrl-C.
pub type Stop = Pin<Box<dyn Future<Output = ()>>>;

/// The command line `args` (without the program) of a service that only serves: none or
/// `serve` runs it (`None`); `--help` and `--version` print and exit 0; anything else is a
/// usage error (exit 2).
pub fn serve_only_args(name: &str, version: &str, help: &str, args: &[String]) -> Option<ExitCode> {
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => None,
        Some("-h" | "--help" | "help") => {
            print!("{help}");
            Some(ExitCode::SUCCESS)
        }
        Some("-V" | "--version") => {
            println!("{name} {version}");
            Some(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{name}: unexpected arguments {args:?}; see {name} --help");
            Some(ExitCode::from(2))
        }
    }
}

/// Reads `LOG_FORMAT` and `RUST_LOG`, then the service's variables with `read`, from this
/// process's environment, and installs logging. When anything is wrong, every problem is
/// printed under `{name}: configuration error:` and the exit code is 2.
pub fn configure<C>(name: &str, read: impl FnOnce(&mut Env<'static>) -> C) -> Result<C, ExitCode> {
    match config::load(|env| (LogConfig::read(env), read(env))) {
        Ok((log, config)) => {
            logging::init(&log);
            Ok(config)
        }
        Err(e) => {
            eprintln!("{name}: configuration error:\n{e}");
            Err(ExitCode::from(2))
        }
    }
}

/// A multi-threaded Tokio runtime; when it cannot start, that is printed and the exit code is 1.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{name}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The `main` of a service: [`configure`], start the [`runtime`], and run `serve(config, stop)`
/// where `stop` completes on SIGTERM or Ctrl-C. Exit code 0 when it returns `Ok`; otherwise
/// the error is printed as `{name}: {error:#}` and the exit code is 1.
pub fn run<C, F, Fut>(name: &str, read: impl FnOnce(&mut Env<'static>) -> C, serve: F) -> ExitCode
where
    F: FnOnce(C, Stop) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match configure(name, read) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime(name) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(config, Box::pin(shutdown_signal()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
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

    fn outcome(a: &[&str]) -> Option<ExitCode> {
        serve_only_args("svc", "1.0", "HELP\n", &args(a))
    }

    #[test]
    fn command_line_of_a_service_that_only_serves() {
        assert_eq!(outcome(&[]), None);
        assert_eq!(outcome(&["serve"]), None);
        assert_eq!(outcome(&["--help"]), Some(ExitCode::SUCCESS));
        assert_eq!(outcome(&["help", "me"]), Some(ExitCode::SUCCESS));
        assert_eq!(outcome(&["-V"]), Some(ExitCode::SUCCESS));
        assert_eq!(outcome(&["serve", "x"]), Some(ExitCode::from(2)));
        assert_eq!(outcome(&["frobnicate"]), Some(ExitCode::from(2)));
    }
}
