//! Command-line flags: every clap type of the xtask (the `--help` texts live here and in the
//! two submodules, `runs.rs` and `tools.rs`).
//!
//! Built with clap's builder API, not its derive (which would put clap_derive, heck and syn's
//! "full" feature into every contributor's first build). Each type is followed by the
//! `clap::Command` that parses it and the function that reads it out of the `ArgMatches`. Help
//! texts follow the rule of clap's derive: a command's `about` is the first paragraph of its
//! text without the final period, the whole text is its `long_about` (see [`about`]).

mod runs;
mod tools;

use std::path::PathBuf;

use clap::builder::{BoolishValueParser, EnumValueParser, PossibleValue};
use clap::{value_parser, Arg, ArgAction, ArgMatches, ValueEnum};

pub use runs::{Bench, Cluster, ClusterAction, E2e, Integration, Render, Test};
pub use tools::{Check, Clean, CleanImages, Doctor, Ports, Standins, Tag};

/// The whole command line: global flags and the subcommand.
#[derive(Debug)]
pub struct Xtask {
    pub config: Option<PathBuf>,
    pub progress: ProgressMode,
    pub no_install: bool,
    pub command: Command,
}

impl Xtask {
    /// Parses the process's arguments; prints help, version or the error and exits as clap does.
    pub fn parse() -> Xtask {
        Xtask::from_matches(&command().get_matches())
    }

    fn from_matches(m: &ArgMatches) -> Xtask {
        Xtask {
            config: m.get_one::<PathBuf>("config").cloned(),
            progress: *m.get_one::<ProgressMode>("progress").expect("defaulted"),
            no_install: m.get_flag("no-install"),
            command: Command::from_matches(m),
        }
    }
}

/// `cargo xtask`: the global flags and every subcommand.
fn command() -> clap::Command {
    let cmd = clap::Command::new("cargo xtask")
        .bin_name("cargo xtask")
        .version(env!("CARGO_PKG_VERSION"))
        .max_term_width(100)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            option(
                "config",
                "PATH",
                "Use this file instead of the repository's `infra.toml` (or set XTASK_CONFIG)",
            )
            .value_parser(value_parser!(PathBuf))
            .global(true)
            .env("XTASK_CONFIG")
            .hide_env(true),
        )
        .arg(
            option(
                "progress",
                "MODE",
                "`auto` (bars on a terminal unless CI is set), `bars`, or `plain` timestamped \
                 lines",
            )
            .value_parser(EnumValueParser::<ProgressMode>::new())
            .default_value("auto")
            .global(true)
            .env("XTASK_PROGRESS")
            .hide_env(true)
            .hide_possible_values(true)
            .hide_default_value(true),
        )
        .arg(
            switch(
                "no-install",
                "Never install system packages (or set XTASK_NO_INSTALL=1): stop and print the \
                 command instead. Without it, runs as root on apt hosts install what they need \
                 after saying so",
            )
            .value_parser(BoolishValueParser::new())
            .global(true)
            .env("XTASK_NO_INSTALL")
            .hide_env(true),
        )
        .subcommands(Command::commands());
    about(
        cmd,
        "Container test infrastructure for this workspace's services.\n\n\
         `infra.toml` at the repository root describes the services, images and ports; every \
         command reads it. Run `cargo xtask doctor` first on a new machine.",
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bars,
    Plain,
}

impl ValueEnum for ProgressMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[ProgressMode::Auto, ProgressMode::Bars, ProgressMode::Plain]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ProgressMode::Auto => PossibleValue::new("auto")
                .help("Bars when stderr is a terminal and `CI` is unset; plain lines otherwise"),
            ProgressMode::Bars => PossibleValue::new("bars").help("Always progress bars"),
            ProgressMode::Plain => {
                PossibleValue::new("plain").help("Always plain timestamped lines")
            }
        })
    }
}

#[derive(Debug)]
pub enum Command {
    Tag(Tag),
    Check(Check),
    Ports(Ports),
    Doctor(Doctor),
    Standins(Standins),
    Integration(Integration),
    E2e(E2e),
    Render(Render),
    Cluster(Cluster),
    CleanImages(CleanImages),
    Clean(Clean),
    Bench(Bench),
    Test(Test),
}

impl Command {
    /// The subcommands, in the order `--help` lists them.
    fn commands() -> [clap::Command; 13] {
        [
            Tag::command(),
            Check::command(),
            Ports::command(),
            Doctor::command(),
            Standins::command(),
            Integration::command(),
            E2e::command(),
            Render::command(),
            Cluster::command(),
            CleanImages::command(),
            Clean::command(),
            Bench::command(),
            Test::command(),
        ]
    }

    fn from_matches(m: &ArgMatches) -> Command {
        match m.subcommand().expect("subcommand_required") {
            ("tag", m) => Command::Tag(Tag::from_matches(m)),
            ("check", _) => Command::Check(Check {}),
            ("ports", _) => Command::Ports(Ports {}),
            ("doctor", _) => Command::Doctor(Doctor {}),
            ("standins", m) => Command::Standins(Standins::from_matches(m)),
            ("integration", m) => Command::Integration(Integration::from_matches(m)),
            ("e2e", m) => Command::E2e(E2e::from_matches(m)),
            ("render", m) => Command::Render(Render::from_matches(m)),
            ("cluster", m) => Command::Cluster(Cluster::from_matches(m)),
            ("clean-images", m) => Command::CleanImages(CleanImages::from_matches(m)),
            ("clean", m) => Command::Clean(Clean::from_matches(m)),
            ("bench", m) => Command::Bench(Bench::from_matches(m)),
            ("test", m) => Command::Test(Test::from_matches(m)),
            (name, _) => unreachable!("subcommand {name} is not in Command::commands"),
        }
    }
}

/// Sets a command's help the way clap's derive did from a doc comment: the first paragraph
/// without its final period is the `about` (`-h`, the list of subcommands); the whole text,
/// when it has more than one paragraph, the `long_about` (`--help`).
fn about(cmd: clap::Command, text: &'static str) -> clap::Command {
    let (first, more) = match text.split_once("\n\n") {
        Some((first, _)) => (first, true),
        None => (text, false),
    };
    let short = first
        .strip_suffix('.')
        .filter(|s| !s.ends_with('.'))
        .unwrap_or(first);
    let cmd = cmd.about(short);
    if more {
        cmd.long_about(text)
    } else {
        cmd
    }
}

/// A `--name` flag, `true` when given. An empty `help` means none.
fn switch(name: &'static str, help: &'static str) -> Arg {
    let arg = Arg::new(name).long(name).action(ArgAction::SetTrue);
    if help.is_empty() {
        arg
    } else {
        arg.help(help)
    }
}

/// A `--name VALUE` option (a string unless a value parser says otherwise). An empty `help`
/// means none.
fn option(name: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    let arg = Arg::new(name)
        .long(name)
        .value_name(value_name)
        .action(ArgAction::Set);
    if help.is_empty() {
        arg
    } else {
        arg.help(help)
    }
}

/// A `--name N` count whose default the help text states itself.
fn number(name: &'static str, default: &'static str, help: &'static str) -> Arg {
    option(name, "N", help)
        .value_parser(value_parser!(usize))
        .default_value(default)
        .hide_default_value(true)
}

/// A required positional argument.
fn positional(id: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .value_name(value_name)
        .required(true)
        .help(help)
}

/// The repeatable `--set KEY=VALUE` of the commands that load a run's configuration.
fn set_overrides() -> Arg {
    option(
        "set",
        "KEY=VALUE",
        "Override a component for this run without editing infra.toml (repeatable): \
         `<component>.env.<VAR>=<value>` or `<component>.timeout=<duration>`",
    )
    .action(ArgAction::Append)
}

/// Everything after `--`, for the test binary.
fn test_args(help: &'static str) -> Arg {
    Arg::new("test_args")
        .value_name("TEST_ARGS")
        .num_args(1..)
        .last(true)
        .action(ArgAction::Append)
        .help(help)
}

/// A required or defaulted string.
fn string(m: &ArgMatches, id: &str) -> String {
    m.get_one::<String>(id)
        .cloned()
        .expect("required or defaulted")
}

/// A repeatable string (none given: empty).
fn strings(m: &ArgMatches, id: &str) -> Vec<String> {
    m.get_many::<String>(id)
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// A defaulted count.
fn count(m: &ArgMatches, id: &str) -> usize {
    *m.get_one::<usize>(id).expect("defaulted")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (ids, conflicts, requirements, groups), which otherwise
    /// run only when a debug build parses a command line.
    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn flags_reach_their_fields() {
        let parse =
            |argv: &[&str]| Xtask::from_matches(&command().try_get_matches_from(argv).unwrap());
        let x = parse(&[
            "x",
            "e2e",
            "n",
            "--cluster",
            "c",
            "--max-runs",
            "7",
            "--",
            "t",
        ]);
        let Command::E2e(e) = x.command else {
            panic!("{x:?}")
        };
        assert_eq!((e.max_runs, e.jobs, e.ttl.as_str()), (7, 4, "2h"));
        assert_eq!(e.test_args, ["t"]);
        let x = parse(&["x", "cluster", "up", "--progress", "plain"]);
        assert_eq!(x.progress, ProgressMode::Plain);
        assert!(matches!(
            x.command,
            Command::Cluster(Cluster {
                action: ClusterAction::Up { ref name, registry_port: None }
            }) if name == "xtask-kept"
        ));
    }
}
