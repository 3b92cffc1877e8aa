//! The flags of the other commands: `tag`, `check`, `ports`, `doctor`, `standins`,
//! `clean-images`, `clean`.

use clap::{ArgGroup, ArgMatches};

use super::{about, option, positional, string, switch};

#[derive(Debug)]
pub struct Tag {
    pub name: String,
    pub consumer: Option<String>,
}

impl Tag {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("tag")
            .arg(positional(
                "name",
                "NAME",
                "A service or infrastructure name from `infra.toml` (e.g. `notification`, \
                 `datastorage`)",
            ))
            .arg(option(
                "consumer",
                "SERVICE",
                "Print the infrastructure image reference built for this consumer instead",
            ));
        about(
            cmd,
            "Print a unique image tag, generated the way every run generates its tags.\n\n\
             For a service: `{service}-{user}-{git7}-{unix}` (the `IMAGE_TAG` environment \
             variable, if set, is printed instead). With `--consumer`: the reference of a shared \
             infrastructure image built for that consumer, `localhost/{infra}:{consumer}-{8hex}`, \
             random on every call. Outside a git checkout `git7` is the word `unknown`.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Tag {
        Tag {
            name: string(m, "name"),
            consumer: m.get_one::<String>("consumer").cloned(),
        }
    }
}

#[derive(Debug)]
pub struct Check {}

impl Check {
    pub(super) fn command() -> clap::Command {
        about(
            clap::Command::new("check"),
            "Validate `infra.toml` and report every error found, with file, line and column.\n\n\
             Checks: unknown keys, unknown services in `needs`, dependency cycles, host ports \
             used twice (naming both owners), ports outside 1-65535, NodePorts outside \
             30000-32767, missing Dockerfiles and manifest templates, environment templates \
             naming unknown components. Exits non-zero when anything is wrong.",
        )
    }
}

#[derive(Debug)]
pub struct Ports {}

impl Ports {
    pub(super) fn command() -> clap::Command {
        about(
            clap::Command::new("ports"),
            "Print the port allocation table: every service, tier, port and what it is for.",
        )
    }
}

#[derive(Debug)]
pub struct Doctor {}

impl Doctor {
    pub(super) fn command() -> clap::Command {
        about(
            clap::Command::new("doctor"),
            "Show which tools this workspace needs, which are installed, and how to install the \
             others.\n\n\
             Lists podman (or docker), kind, kubectl, git, debootstrap with found/missing and \
             version, the install command for this OS family (apt, dnf or brew), and which \
             commands need each tool.",
        )
    }
}

#[derive(Debug)]
pub struct Standins {
    pub force: bool,
    pub print_env: bool,
}

impl Standins {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("standins")
            .arg(switch("force", "Rebuild images that already exist"))
            .arg(switch(
                "print-env",
                "Only print the `export` lines for images that already exist; build nothing",
            ));
        about(
            cmd,
            "Build local stand-ins for the third-party images, for hosts without a registry.\n\n\
             PostgreSQL, Redis, the runtime base and the registry are built from Debian packages \
             (debootstrap from the mirror apt uses, then apt-get in a chroot, then `podman \
             import`), honouring the official images' environment contract (POSTGRES_USER, \
             POSTGRES_PASSWORD, POSTGRES_DB). Images that exist are skipped. Runs that need them \
             build them by themselves; this command builds them ahead. Prints the environment \
             variables that point the workspace at them; `infra.toml` is not edited. Needs root \
             and debootstrap.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Standins {
        Standins {
            force: m.get_flag("force"),
            print_env: m.get_flag("print-env"),
        }
    }
}

#[derive(Debug)]
pub struct CleanImages {
    pub older_than: String,
    pub service: Option<String>,
    pub all_users: bool,
    pub dry_run: bool,
}

impl CleanImages {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("clean-images")
            .arg(
                option(
                    "older-than",
                    "DURATION",
                    "Only images created longer ago than this (e.g. `30m`, `12h`, `7d`)",
                )
                .default_value("24h"),
            )
            .arg(option("service", "SERVICE", "Only images of this service"))
            .arg(switch(
                "all-users",
                "Include images owned by other users (still only images this tool labelled)",
            ))
            .arg(switch(
                "dry-run",
                "List what would be removed, remove nothing",
            ));
        about(
            cmd,
            "Remove old test images created by this tool, and only those (selected by label).\n\n\
             An image is ours when it carries the `io.kubernaut.xtask.run` label; by default \
             only images whose owner label is the current user. Images used by a container are \
             skipped (and named). Stand-in images (no run label) are never removed here.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> CleanImages {
        CleanImages {
            older_than: string(m, "older-than"),
            service: m.get_one::<String>("service").cloned(),
            all_users: m.get_flag("all-users"),
            dry_run: m.get_flag("dry-run"),
        }
    }
}

#[derive(Debug)]
pub struct Clean {
    /// `--run ID`; without it `--orphans` was given (the required `what` group: one of them).
    pub run: Option<String>,
    pub include_kept: bool,
    pub cluster: Option<String>,
    pub dry_run: bool,
}

impl Clean {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("clean")
            .arg(switch(
                "orphans",
                "Everything of runs whose process is gone (killed, crashed, power loss)",
            ))
            .arg(option(
                "run",
                "ID",
                "Everything of one run (a run id, as printed by the run and shown in the labels)",
            ))
            .arg(switch(
                "include-kept",
                "With --orphans: also runs left up on purpose with `--keep`",
            ))
            .arg(
                option(
                    "cluster",
                    "CONTEXT",
                    "With --orphans: also sweep this kube context for run namespaces whose \
                     process is gone or whose TTL passed (kept clusters of this host are always \
                     swept)",
                )
                .requires("orphans"),
            )
            .arg(switch(
                "dry-run",
                "List what would be removed, remove nothing",
            ))
            .group(
                ArgGroup::new("what")
                    .required(true)
                    .args(["orphans", "run"]),
            );
        about(
            cmd,
            "Remove what earlier runs left behind: containers, networks, clusters, images, \
             archives.\n\n\
             Works from the run records under `target/xtask/runs/` and, when a record is lost, \
             from the labels on the resources themselves. Never touches anything without our \
             labels.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Clean {
        Clean {
            run: m.get_one::<String>("run").cloned(),
            include_kept: m.get_flag("include-kept"),
            cluster: m.get_one::<String>("cluster").cloned(),
            dry_run: m.get_flag("dry-run"),
        }
    }
}
