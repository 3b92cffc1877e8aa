//! Command-line flags: every clap type of the xtask, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Container test infrastructure for this workspace's services.
///
/// `infra.toml` at the repository root describes the services, images and ports; every command
/// reads it. Run `cargo xtask doctor` first on a new machine.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    max_term_width = 100
)]
pub struct Xtask {
    /// Use this file instead of the repository's `infra.toml` (or set XTASK_CONFIG).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "XTASK_CONFIG",
        hide_env = true
    )]
    pub config: Option<PathBuf>,

    /// `auto` (bars on a terminal unless CI is set), `bars`, or `plain` timestamped lines.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "MODE",
        default_value_t = ProgressMode::Auto,
        env = "XTASK_PROGRESS",
        hide_env = true,
        hide_possible_values = true,
        hide_default_value = true
    )]
    pub progress: ProgressMode,

    /// Never install system packages (or set XTASK_NO_INSTALL=1): stop and print the command
    /// instead. Without it, runs as root on apt hosts install what they need after saying so.
    #[arg(
        long,
        global = true,
        env = "XTASK_NO_INSTALL",
        hide_env = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub no_install: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal and `CI` is unset; plain lines otherwise.
    Auto,
    /// Always progress bars.
    Bars,
    /// Always plain timestamped lines.
    Plain,
}

#[derive(Debug, Subcommand)]
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

/// Print a unique image tag, generated the way every run generates its tags.
///
/// For a service: `{service}-{user}-{git7}-{unix}` (the `IMAGE_TAG` environment variable, if set,
/// is printed instead). With `--consumer`: the reference of a shared infrastructure image built
/// for that consumer, `localhost/{infra}:{consumer}-{8hex}`, random on every call.
/// Outside a git checkout `git7` is the word `unknown`.
#[derive(Debug, Args)]
pub struct Tag {
    /// A service or infrastructure name from `infra.toml` (e.g. `notification`, `datastorage`).
    pub name: String,
    /// Print the infrastructure image reference built for this consumer instead.
    #[arg(long, value_name = "SERVICE")]
    pub consumer: Option<String>,
}

/// Validate `infra.toml` and report every error found, with file, line and column.
///
/// Checks: unknown keys, unknown services in `needs`, dependency cycles, host ports used twice
/// (naming both owners), ports outside 1-65535, NodePorts outside 30000-32767, missing
/// Dockerfiles and manifest templates, environment templates naming unknown components.
/// Exits non-zero when anything is wrong.
#[derive(Debug, Args)]
pub struct Check {}

/// Print the port allocation table: every service, tier, port and what it is for.
#[derive(Debug, Args)]
pub struct Ports {}

/// Show which tools this workspace needs, which are installed, and how to install the others.
///
/// Lists podman (or docker), kind, kubectl, git, debootstrap with found/missing and version, the
/// install command for this OS family (apt, dnf or brew), and which commands need each tool.
#[derive(Debug, Args)]
pub struct Doctor {}

/// Build local stand-ins for the third-party images, for hosts without a registry.
///
/// PostgreSQL, Redis, the runtime base and the registry are built from Debian packages
/// (debootstrap from the mirror apt uses, then apt-get in a chroot, then `podman import`),
/// honouring the official images' environment contract (POSTGRES_USER, POSTGRES_PASSWORD,
/// POSTGRES_DB). Images that exist are skipped. Runs that need them build them by themselves;
/// this command builds them ahead. Prints the environment variables that point the workspace
/// at them; `infra.toml` is not edited. Needs root and debootstrap.
#[derive(Debug, Args)]
pub struct Standins {
    /// Rebuild images that already exist.
    #[arg(long)]
    pub force: bool,
    /// Only print the `export` lines for images that already exist; build nothing.
    #[arg(long)]
    pub print_env: bool,
}

/// Run a consumer's integration tests against a real podman stack, then remove the stack.
///
/// Starts the consumer's infrastructure from `infra.toml` (PostgreSQL, migrations, Redis,
/// DataStorage, ...) on its own network in dependency order, independent parts in parallel, each
/// checked for readiness; runs `cargo test -p <consumer> --test integration` with the URLs in the
/// environment; removes containers, network and this run's images. The exit code is the tests'.
/// A taken host port or another stack of the same consumer stops it at once, naming the holder.
#[derive(Debug, Args)]
pub struct Integration {
    /// The service whose integration tests run (a consumer in `infra.toml`).
    pub consumer: String,
    /// Leave the stack running after the tests and print its URLs and how to remove it.
    #[arg(long, conflicts_with = "down")]
    pub keep: bool,
    /// Remove a stack left running by `--keep` (or by a run that was killed), then exit.
    #[arg(long)]
    pub down: bool,
    /// Start the stack and print its URLs without running the tests (implies --keep).
    #[arg(long, conflicts_with = "down")]
    pub no_tests: bool,
    /// Build every image (and the database's data image) even when the cache has it.
    #[arg(long)]
    pub rebuild: bool,
    /// Override a component for this run without editing infra.toml (repeatable):
    /// `<component>.env.<VAR>=<value>` or `<component>.timeout=<duration>`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Arguments after `--` go to the test binary (e.g. a test name filter).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Run a consumer's E2E tests in a fresh kind cluster (or a kept/shared one), then clean up.
///
/// Tags made once; images built while the cluster is created, loaded (or pushed to the
/// registry with --cluster), checked, deployed in dependency order; then
/// `cargo test -p <consumer> --test e2e` against the NodePorts (or port-forwards).
#[derive(Debug, Args)]
pub struct E2e {
    /// The service whose E2E tests run (a consumer in `infra.toml`).
    pub consumer: String,
    /// Print the phase plan and every command without running any.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the cluster, images and archives after the run (printing how to remove them).
    #[arg(long)]
    pub keep: bool,
    /// Build every image even when the cache has it (and save every archive again).
    #[arg(long)]
    pub rebuild: bool,
    /// Run in a kept cluster (`cargo xtask cluster up`) or a kube context, in a namespace of
    /// its own, images through a registry (instead of a fresh kind cluster).
    #[arg(long, value_name = "NAME|CONTEXT")]
    pub cluster: Option<String>,
    /// With --cluster: the registry both this host and the cluster reach, HOST[:PORT][/PREFIX]
    /// (a kept cluster has its own).
    #[arg(long, value_name = "REGISTRY", requires = "cluster")]
    pub registry: Option<String>,
    /// With --cluster: after this, a run whose process cannot be checked (another host) counts
    /// as abandoned: the next run's sweep or `clean --orphans` removes its namespace.
    #[arg(
        long,
        default_value = "2h",
        value_name = "DURATION",
        requires = "cluster"
    )]
    pub ttl: String,
    /// With --cluster: at most this many runs at once in the cluster, others wait (default 4).
    #[arg(
        long,
        default_value_t = 4,
        hide_default_value = true,
        value_name = "N",
        requires = "cluster"
    )]
    pub max_runs: usize,
    /// How many image builds may run at once (default 4).
    #[arg(long, default_value_t = 4, hide_default_value = true, value_name = "N")]
    pub jobs: usize,
    /// How many kind clusters may be created at once on this host, across all users
    /// (default 2, or set XTASK_CLUSTER_SLOTS).
    #[arg(
        long,
        default_value_t = 2,
        hide_default_value = true,
        value_name = "N",
        env = "XTASK_CLUSTER_SLOTS",
        hide_env = true
    )]
    pub cluster_slots: usize,
    /// Override a component for this run without editing infra.toml (repeatable):
    /// `<component>.env.<VAR>=<value>` or `<component>.timeout=<duration>`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Arguments after `--` go to the test binary.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Write the kind config and the Kubernetes manifests an E2E run would apply.
///
/// Tags are generated as a real run would; nothing is built or applied. Without `--out` the
/// files go to `target/xtask/render/<consumer>/`.
#[derive(Debug, Args)]
pub struct Render {
    /// The consumer to render for.
    pub consumer: String,
    /// Directory to write `kind-config.yaml` and `manifests.yaml` into.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a component for this run without editing infra.toml (repeatable):
    /// `<component>.env.<VAR>=<value>` or `<component>.timeout=<duration>`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// A kept kind cluster with a local registry, for E2E runs that share it (`e2e --cluster`).
///
/// `up` creates the cluster and a registry container on its network (the kind local-registry
/// pattern), `status` lists the runs inside, `down` deletes both. Everything is labelled and
/// recorded under `target/xtask/clusters/<name>/`.
#[derive(Debug, Args)]
pub struct Cluster {
    #[command(subcommand)]
    pub action: ClusterAction,
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Create the cluster and its registry (nothing happens if they are up).
    Up {
        #[arg(long, default_value = "xtask-kept", value_name = "NAME")]
        name: String,
        /// The registry's port on 127.0.0.1 (default: a free one).
        #[arg(long, value_name = "PORT")]
        registry_port: Option<u16>,
    },
    /// Delete the cluster and its registry (refused while runs are live, unless --force).
    Down {
        #[arg(long, default_value = "xtask-kept", value_name = "NAME")]
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// The cluster, its registry, and the runs inside (namespaces, slots); without --name,
    /// every kept cluster recorded here.
    Status {
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

/// Remove old test images created by this tool, and only those (selected by label).
///
/// An image is ours when it carries the `io.kubernaut.xtask.run` label; by default only images
/// whose owner label is the current user. Images used by a container are skipped (and named).
/// Stand-in images (no run label) are never removed here.
#[derive(Debug, Args)]
pub struct CleanImages {
    /// Only images created longer ago than this (e.g. `30m`, `12h`, `7d`).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub older_than: String,
    /// Only images of this service.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Include images owned by other users (still only images this tool labelled).
    #[arg(long)]
    pub all_users: bool,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Remove what earlier runs left behind: containers, networks, clusters, images, archives.
///
/// Works from the run records under `target/xtask/runs/` and, when a record is lost, from the
/// labels on the resources themselves. Never touches anything without our labels.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["orphans", "run"]))]
pub struct Clean {
    /// Everything of runs whose process is gone (killed, crashed, power loss).
    #[arg(long)]
    pub orphans: bool,
    /// Everything of one run (a run id, as printed by the run and shown in the labels).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// With --orphans: also runs left up on purpose with `--keep`.
    #[arg(long)]
    pub include_kept: bool,
    /// With --orphans: also sweep this kube context for run namespaces whose process is gone
    /// or whose TTL passed (kept clusters of this host are always swept).
    #[arg(long, value_name = "CONTEXT", requires = "orphans")]
    pub cluster: Option<String>,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Measure: stack start-up against its critical path, planning speed, cold builds.
///
/// Runs `integration <consumer> --no-tests` then `--down` cycles (warm caches) and prints the
/// median stack time, critical path and their ratio; times planning a run in-process; with
/// `--e2e`, also full E2E runs (needs kind, or the fakes first on PATH); with `--cold-build`,
/// cold builds of the xtask and of the workspace in a scratch target folder.
#[derive(Debug, Args)]
pub struct Bench {
    /// Consumers to bench.
    #[arg(default_values_t = ["notification".to_string()])]
    pub consumers: Vec<String>,
    /// Cycles per consumer (0: none, e.g. with --cold-build alone).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also time full E2E runs.
    #[arg(long)]
    pub e2e: bool,
    /// Also time cold builds (minutes).
    #[arg(long)]
    pub cold_build: bool,
}

/// Run every test of the workspace: what CI runs (`.ci/run`).
///
/// In order: formatting, clippy, unit and tidy tests, the fake kind/kubectl against podman,
/// the integration run of every consumer, the E2E run of every consumer against the fake
/// kind/kubectl, and the podman-backed xtask scenarios. Builds the stand-in images first when
/// they are missing (as root). Every step runs; a summary lists the failed ones.
#[derive(Debug, Args)]
pub struct Test {
    /// Only what needs no container engine (formatting, clippy, unit and tidy tests).
    #[arg(long)]
    pub quick: bool,
}
