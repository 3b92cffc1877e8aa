//! The flags of the commands that run tests, stacks or clusters, or prepare them: `integration`,
//! `e2e`, `render`, `cluster`, `bench`, `test`.

use std::path::PathBuf;

use clap::{value_parser, Arg, ArgAction, ArgMatches};

use super::{
    about, count, number, option, positional, set_overrides, string, strings, switch, test_args,
};

#[derive(Debug)]
pub struct Integration {
    pub consumer: String,
    pub keep: bool,
    pub down: bool,
    pub no_tests: bool,
    pub rebuild: bool,
    pub set: Vec<String>,
    pub test_args: Vec<String>,
}

impl Integration {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("integration")
            .arg(positional(
                "consumer",
                "CONSUMER",
                "The service whose integration tests run (a consumer in `infra.toml`)",
            ))
            .arg(
                switch(
                    "keep",
                    "Leave the stack running after the tests and print its URLs and how to remove \
                     it",
                )
                .conflicts_with("down"),
            )
            .arg(switch(
                "down",
                "Remove a stack left running by `--keep` (or by a run that was killed), then exit",
            ))
            .arg(
                switch(
                    "no-tests",
                    "Start the stack and print its URLs without running the tests (implies \
                     --keep)",
                )
                .conflicts_with("down"),
            )
            .arg(switch(
                "rebuild",
                "Build every image (and the database's data image) even when the cache has it",
            ))
            .arg(set_overrides())
            .arg(test_args(
                "Arguments after `--` go to the test binary (e.g. a test name filter)",
            ));
        about(
            cmd,
            "Run a consumer's integration tests against a real podman stack, then remove the \
             stack.\n\n\
             Starts the consumer's infrastructure from `infra.toml` (PostgreSQL, migrations, \
             Redis, DataStorage, ...) on its own network in dependency order, independent parts \
             in parallel, each checked for readiness; runs `cargo test -p <consumer> --test \
             integration` with the URLs in the environment; removes containers, network and this \
             run's images. The exit code is the tests'. A taken host port or another stack of the \
             same consumer stops it at once, naming the holder.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Integration {
        Integration {
            consumer: string(m, "consumer"),
            keep: m.get_flag("keep"),
            down: m.get_flag("down"),
            no_tests: m.get_flag("no-tests"),
            rebuild: m.get_flag("rebuild"),
            set: strings(m, "set"),
            test_args: strings(m, "test_args"),
        }
    }
}

#[derive(Debug)]
pub struct E2e {
    pub consumer: String,
    pub dry_run: bool,
    pub keep: bool,
    pub rebuild: bool,
    pub cluster: Option<String>,
    pub registry: Option<String>,
    pub ttl: String,
    pub max_runs: usize,
    pub jobs: usize,
    pub cluster_slots: usize,
    pub set: Vec<String>,
    pub test_args: Vec<String>,
}

impl E2e {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("e2e")
            .arg(positional(
                "consumer",
                "CONSUMER",
                "The service whose E2E tests run (a consumer in `infra.toml`)",
            ))
            .arg(switch(
                "dry-run",
                "Print the phase plan and every command without running any",
            ))
            .arg(switch(
                "keep",
                "Keep the cluster, images and archives after the run (printing how to remove \
                 them)",
            ))
            .arg(switch(
                "rebuild",
                "Build every image even when the cache has it (and save every archive again)",
            ))
            .args(E2e::cluster_args())
            .arg(number(
                "jobs",
                "4",
                "How many image builds may run at once (default 4)",
            ))
            .arg(
                number(
                    "cluster-slots",
                    "2",
                    "How many kind clusters may be created at once on this host, across all \
                     users (default 2, or set XTASK_CLUSTER_SLOTS)",
                )
                .env("XTASK_CLUSTER_SLOTS")
                .hide_env(true),
            )
            .arg(set_overrides())
            .arg(test_args("Arguments after `--` go to the test binary"));
        about(
            cmd,
            "Run a consumer's E2E tests in a fresh kind cluster (or a kept/shared one), then \
             clean up.\n\n\
             Tags made once; images built while the cluster is created, loaded (or pushed to the \
             registry with --cluster), checked, deployed in dependency order; then `cargo test \
             -p <consumer> --test e2e` against the NodePorts (or port-forwards).",
        )
    }

    /// `--cluster` and the options that need it.
    fn cluster_args() -> [Arg; 4] {
        [
            option(
                "cluster",
                "NAME|CONTEXT",
                "Run in a kept cluster (`cargo xtask cluster up`) or a kube context, in a \
                 namespace of its own, images through a registry (instead of a fresh kind \
                 cluster)",
            ),
            option(
                "registry",
                "REGISTRY",
                "With --cluster: the registry both this host and the cluster reach, \
                 HOST[:PORT][/PREFIX] (a kept cluster has its own)",
            )
            .requires("cluster"),
            option(
                "ttl",
                "DURATION",
                "With --cluster: after this, a run whose process cannot be checked (another \
                 host) counts as abandoned: the next run's sweep or `clean --orphans` removes \
                 its namespace",
            )
            .default_value("2h")
            .requires("cluster"),
            number(
                "max-runs",
                "4",
                "With --cluster: at most this many runs at once in the cluster, others wait \
                 (default 4)",
            )
            .requires("cluster"),
        ]
    }

    pub(super) fn from_matches(m: &ArgMatches) -> E2e {
        E2e {
            consumer: string(m, "consumer"),
            dry_run: m.get_flag("dry-run"),
            keep: m.get_flag("keep"),
            rebuild: m.get_flag("rebuild"),
            cluster: m.get_one::<String>("cluster").cloned(),
            registry: m.get_one::<String>("registry").cloned(),
            ttl: string(m, "ttl"),
            max_runs: count(m, "max-runs"),
            jobs: count(m, "jobs"),
            cluster_slots: count(m, "cluster-slots"),
            set: strings(m, "set"),
            test_args: strings(m, "test_args"),
        }
    }
}

#[derive(Debug)]
pub struct Render {
    pub consumer: String,
    pub out: Option<PathBuf>,
    pub set: Vec<String>,
}

impl Render {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("render")
            .arg(positional(
                "consumer",
                "CONSUMER",
                "The consumer to render for",
            ))
            .arg(
                option(
                    "out",
                    "DIR",
                    "Directory to write `kind-config.yaml` and `manifests.yaml` into",
                )
                .value_parser(value_parser!(PathBuf)),
            )
            .arg(set_overrides());
        about(
            cmd,
            "Write the kind config and the Kubernetes manifests an E2E run would apply.\n\n\
             Tags are generated as a real run would; nothing is built or applied. Without \
             `--out` the files go to `target/xtask/render/<consumer>/`.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Render {
        Render {
            consumer: string(m, "consumer"),
            out: m.get_one::<PathBuf>("out").cloned(),
            set: strings(m, "set"),
        }
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub action: ClusterAction,
}

#[derive(Debug)]
pub enum ClusterAction {
    Up {
        name: String,
        registry_port: Option<u16>,
    },
    Down {
        name: String,
        force: bool,
    },
    Status {
        name: Option<String>,
    },
}

impl Cluster {
    pub(super) fn command() -> clap::Command {
        let name = || option("name", "NAME", "");
        let cmd = clap::Command::new("cluster")
            .subcommand_required(true)
            .arg_required_else_help(true)
            .subcommand(about(
                clap::Command::new("up")
                    .arg(name().default_value("xtask-kept"))
                    .arg(
                        option(
                            "registry-port",
                            "PORT",
                            "The registry's port on 127.0.0.1 (default: a free one)",
                        )
                        .value_parser(value_parser!(u16)),
                    ),
                "Create the cluster and its registry (nothing happens if they are up).",
            ))
            .subcommand(about(
                clap::Command::new("down")
                    .arg(name().default_value("xtask-kept"))
                    .arg(switch("force", "")),
                "Delete the cluster and its registry (refused while runs are live, unless \
                 --force).",
            ))
            .subcommand(about(
                clap::Command::new("status").arg(name()),
                "The cluster, its registry, and the runs inside (namespaces, slots); without \
                 --name, every kept cluster recorded here.",
            ));
        about(
            cmd,
            "A kept kind cluster with a local registry, for E2E runs that share it (`e2e \
             --cluster`).\n\n\
             `up` creates the cluster and a registry container on its network (the kind \
             local-registry pattern), `status` lists the runs inside, `down` deletes both. \
             Everything is labelled and recorded under `target/xtask/clusters/<name>/`.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Cluster {
        let action = match m.subcommand().expect("subcommand_required") {
            ("up", m) => ClusterAction::Up {
                name: string(m, "name"),
                registry_port: m.get_one::<u16>("registry-port").copied(),
            },
            ("down", m) => ClusterAction::Down {
                name: string(m, "name"),
                force: m.get_flag("force"),
            },
            ("status", m) => ClusterAction::Status {
                name: m.get_one::<String>("name").cloned(),
            },
            (name, _) => unreachable!("subcommand cluster {name} is not in Cluster::command"),
        };
        Cluster { action }
    }
}

#[derive(Debug)]
pub struct Bench {
    pub consumers: Vec<String>,
    pub runs: usize,
    pub e2e: bool,
    pub cold_build: bool,
}

impl Bench {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("bench")
            .arg(
                Arg::new("consumers")
                    .value_name("CONSUMERS")
                    .num_args(1..)
                    .action(ArgAction::Append)
                    .default_values(["notification"])
                    .help("Consumers to bench"),
            )
            .arg(
                option(
                    "runs",
                    "RUNS",
                    "Cycles per consumer (0: none, e.g. with --cold-build alone)",
                )
                .value_parser(value_parser!(usize))
                .default_value("3"),
            )
            .arg(switch("e2e", "Also time full E2E runs"))
            .arg(switch("cold-build", "Also time cold builds (minutes)"));
        about(
            cmd,
            "Measure: stack start-up against its critical path, planning speed, cold builds.\n\n\
             Each round runs the seeds' sequential way (DD-TEST-002's script, on the same \
             images), a warm `integration <consumer> --no-tests` and a cold one (`--rebuild`), \
             each then `--down`, and prints the medians, the stack's critical path and the \
             ratios to the seeds' way; times planning a run \
             in-process; with `--e2e`, also full E2E runs (needs kind, or the fakes first on \
             PATH); with `--cold-build`, cold builds of the xtask and of the workspace in a \
             scratch target folder.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Bench {
        Bench {
            consumers: strings(m, "consumers"),
            runs: count(m, "runs"),
            e2e: m.get_flag("e2e"),
            cold_build: m.get_flag("cold-build"),
        }
    }
}

#[derive(Debug)]
pub struct Test {
    pub quick: bool,
}

impl Test {
    pub(super) fn command() -> clap::Command {
        let cmd = clap::Command::new("test").arg(switch(
            "quick",
            "Only what needs no container engine (formatting, clippy, unit and tidy tests)",
        ));
        about(
            cmd,
            "Run every test of the workspace: what CI runs (`.ci/run`).\n\n\
             In order: formatting, clippy, unit and tidy tests, the fake kind/kubectl against \
             podman, the integration run of every consumer, the E2E run of every consumer \
             against the fake kind/kubectl, and the podman-backed xtask scenarios. Builds the \
             stand-in images first when they are missing (as root). Every step runs; a summary \
             lists the failed ones.",
        )
    }

    pub(super) fn from_matches(m: &ArgMatches) -> Test {
        Test {
            quick: m.get_flag("quick"),
        }
    }
}
