//! Resolved stacks and the acceptance tests of issue 12: the repository's file with `redis`
//! renamed `redis-cache` passes (and plans and renders with the new name), a 64-character
//! name is refused naming its limit, and a fixture shaped like the real system (several
//! hyphenated consumers, a self-building Dockerfile, an E2E-only component, add, drop,
//! override, own_ports) resolves into the stacks the planners run.

use std::collections::BTreeMap;

use super::*;

fn repo_text() -> String {
    let file = crate::repo_root().join("infra.toml");
    std::fs::read_to_string(file).unwrap()
}

/// The repository's files, with `manifests/redis-cache.yaml` answered by `manifests/redis.yaml`
/// (a rename moves the template along).
fn repo_fs(p: &Path) -> Option<PathKind> {
    let rel = p.strip_prefix("/repo").unwrap_or(p).to_string_lossy();
    let rel = rel.replace("manifests/redis-cache.yaml", "manifests/redis.yaml");
    on_disk(&crate::repo_root().join(rel))
}

fn parse_repo(text: &str) -> std::result::Result<Config, Diagnostics> {
    parse(Path::new("infra.toml"), Path::new("/repo"), text, &repo_fs)
}

#[test]
fn the_repository_file_with_redis_renamed_redis_cache_passes() {
    let text = rename(&repo_text(), "redis", "redis-cache");
    assert!(text.contains("[infra.redis-cache]") && text.contains("{redis-cache.url}"));
    assert!(text.contains("kind = \"redis\"") && text.contains("redis://{host}"));
    let c = parse_repo(&text).unwrap_or_else(|e| panic!("{e}"));
    let s = c.stack("notification", TierName::Integration).unwrap();
    assert_eq!(
        s.names(),
        ["postgres", "migrations", "redis-cache", "datastorage"]
    );
    // Every name derived from it works: containers, the tests' variable, Kubernetes objects.
    let facts = crate::plan::stack::tests::facts();
    let runs = Path::new("/repo/target/xtask/runs");
    let run = crate::plan::Run {
        config: &c,
        consumer: "notification",
        facts: &facts,
        runs_dir: runs,
        pid: 1,
        env: &|_| None,
        snapshots: &crate::plan::NO_SNAPSHOTS,
    };
    let p = crate::plan::integration::plan(&run, &[]).unwrap();
    assert_eq!(p.tests.env["REDIS_CACHE_URL"], "redis://localhost:16385");
    let ds = p.nodes.iter().find(|n| n.id == "datastorage").unwrap();
    let crate::plan::integration::Step::Container { spec, .. } = &ds.action else {
        panic!("{:?}", ds.action)
    };
    assert_eq!(
        spec.env["REDIS_URL"],
        "redis://notification_redis-cache_test:6379"
    );
    let e2e = c.stack("notification", TierName::E2e).unwrap();
    let read = |p: &Path| {
        let p = p
            .to_string_lossy()
            .replace("redis-cache.yaml", "redis.yaml");
        crate::plan::stack::tests::read_repo(Path::new(&p))
    };
    let (ports, labels) = (BTreeMap::new(), BTreeMap::new());
    let target = crate::plan::render::Target {
        namespace: "notification-e2e",
        node_ports: &ports,
        labels: &labels,
        pull: None,
    };
    let reference = "localhost/redis-cache:notification-1884d074";
    let m = crate::plan::render::component(
        &c,
        &e2e,
        "redis-cache",
        reference,
        target,
        &crate::plan::stack::tests::Edit(read),
    )
    .unwrap();
    assert!(m.text.contains("name: redis-cache"), "{}", m.text);
    let secret = crate::plan::render::component(
        &c,
        &e2e,
        "datastorage",
        "localhost/d:t",
        target,
        &crate::plan::stack::tests::Edit(read),
    )
    .unwrap();
    assert!(
        secret.text.contains("redis://redis-cache:6379"),
        "{}",
        secret.text
    );
}

#[test]
fn a_64_character_component_name_is_refused_naming_the_limit() {
    let long = "r".repeat(64);
    // The component only (its image keeps its name); its manifest is taken to exist.
    let text = rename(&repo_text(), "redis", &long)
        .replace(&format!("[images.{long}]"), "[images.redis]")
        .replace(&format!("image = \"{long}\""), "image = \"redis\"");
    // Every path is taken to exist, as it is in this checkout (a folder or a file).
    let all_exist = |p: &Path| repo_fs(p).or(Some(PathKind::File));
    let e = match parse(
        Path::new("infra.toml"),
        Path::new("/repo"),
        &text,
        &all_exist,
    ) {
        Ok(_) => panic!("a 64-character name passed"),
        Err(d) => d.to_string(),
    };
    assert!(e.contains("has 1 error:"), "one fault, one error:\n{e}");
    assert!(
        e.contains(
            "component name `rrrrrrrrrrrrrrrrrrrr...` is 64 characters; it becomes a Kubernetes \
             object name (at most 63)"
        ),
        "{e}"
    );
    let ok = rename(&repo_text(), "redis", &"r".repeat(63));
    let c = parse(Path::new("infra.toml"), Path::new("/repo"), &ok, &all_exist);
    // 63 characters make a valid component name; its containers' names are another limit.
    let e = c.map(|_| String::new()).unwrap_or_else(|d| d.to_string());
    assert!(!e.contains("component name"), "{e}");
    assert!(
        e.contains("the container name `datastorage_rrrrrrrr...` is 80 characters"),
        "{e}"
    );
}

/// Shaped like the real system: hyphenated consumers and components, a Rust service, a
/// Python service and a mock built by their own Dockerfiles, an E2E-only monitor.
const SYSTEM: &str = r#"
[images.postgres]
ref = "docker.io/library/postgres:15"
standin = "postgres"

[images.redis]
ref = "docker.io/library/redis:7"

[images.prometheus]
ref = "docker.io/prom/prometheus:v2"

[postgres]
user = "u"
password = "p"
database = "d"

[infra.postgres]
image = "postgres"
port = 5432
url = "postgres://{postgres.user}:{postgres.password}@{host}:{port}/{postgres.database}"
ready = { kind = "sql", query = "SELECT 1" }

[infra.redis-cache]
image = "redis"
port = 6379
url = "redis://{host}:{port}"
ready = { kind = "redis" }

# Monitoring runs only in E2E.
[infra.prometheus]
image = "prometheus"
port = 9090
ready = { kind = "http", path = "/-/ready" }
tiers = ["e2e"]
mounts = { "/etc/prometheus/prometheus.yml" = "config/prometheus.yml" }
args = ["--config.file=/etc/prometheus/prometheus.yml"]

[services.data-storage]
dockerfile = "services/data-storage/Dockerfile"
package = "data-storage"
binary = "data-storage"
context = ["migrations"]
port = 8080
extra_ports = { metrics = 9090 }
ready = { kind = "http", path = "/readyz" }
needs = ["db-migrate", "redis-cache"]
optional = ["redis-cache"]
env = { DATABASE_URL = "{postgres.url}", REDIS_URL = "{redis-cache.url}", LOG_LEVEL = "info" }
mounts = { "/etc/ds/config.yaml" = "config/data-storage.yaml" }

# Another language: its Dockerfile builds everything.
[services.mock-llm]
dockerfile = "mocks/mock-llm/Dockerfile"
build_args = { MODEL = "tiny" }
port = 8080
ready = { kind = "http", path = "/health" }
command = ["python", "-m", "mock_llm"]

[services.holmesgpt-api]
dockerfile = "services/holmesgpt-api/Dockerfile"
build_context = "services/"
port = 8080
ready = { kind = "http", path = "/healthz" }
needs = ["data-storage", "mock-llm"]
env = { DATA_STORAGE_URL = "{data-storage.url}", LLM_URL = "{mock-llm.url}" }

[services.notification-controller]
dockerfile = "services/notification-controller/Dockerfile"
package = "notification-controller"
binary = "notification-controller"
port = 8080
ready = { kind = "http", path = "/readyz" }
needs = ["data-storage"]
env = { DATA_STORAGE_URL = "{data-storage.url}", METRICS = "{data-storage.metrics.url}" }

[jobs.db-migrate]
service = "data-storage"
args = ["migrate"]
needs = ["postgres"]
env = { DATABASE_URL = "{postgres.url}" }

# Python: its tests are a command; its API runs in the test process.
[consumers.holmesgpt-api.integration]
test = ["python", "-m", "pytest", "tests/integration"]
own_ports = { api = 18150 }
drop = ["redis-cache"]
ports = { postgres = 15450, data-storage = 18151, mock-llm = 18152 }

[consumers.holmesgpt-api.integration.override.data-storage]
env = { LOG_LEVEL = "debug" }
timeout = "90s"

[consumers.holmesgpt-api.e2e]
test = ["python", "-m", "pytest", "tests/e2e"]
add = ["prometheus"]

[consumers.holmesgpt-api.e2e.ports]
holmesgpt-api = { node_port = 30090, host_port = 28150 }
prometheus = { node_port = 30091, host_port = 28151 }

[consumers.holmesgpt-api.e2e.override.data-storage]
port = 8081
extra_ports = { metrics = 9191 }

[consumers.notification-controller.integration]
test = "it"

[consumers.notification-controller.integration.ports]
postgres = 15460
redis-cache = 16460
data-storage = 18160
"data-storage.metrics" = 19160

[consumers.notification-controller.e2e.ports]
notification-controller = { node_port = 30086, host_port = 28160 }

# DataStorage tests itself in process; in E2E without Redis, with monitoring.
[consumers.data-storage.integration]
ports = { postgres = 15470, redis-cache = 16470 }

[consumers.data-storage.e2e]
add = ["prometheus"]
drop = ["redis-cache"]
ports = { data-storage = { node_port = 30081, host_port = 28170 } }
"#;

fn system() -> Config {
    parse_str(SYSTEM).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_system_fixture_is_valid_and_modelled() {
    let c = system();
    assert_eq!(
        c.components["mock-llm"].source,
        Source::Dockerfile {
            dockerfile: "mocks/mock-llm/Dockerfile".into(),
            context: "mocks/mock-llm".into()
        }
    );
    assert_eq!(c.components["mock-llm"].build_args["MODEL"], "tiny");
    assert_eq!(
        c.components["mock-llm"].command,
        ["python", "-m", "mock_llm"]
    );
    assert!(
        matches!(&c.components["holmesgpt-api"].source, Source::Dockerfile { context, .. } if context == Path::new("services/"))
    );
    let prom = &c.components["prometheus"];
    assert_eq!(
        prom.tiers,
        Tiers {
            integration: false,
            e2e: true
        }
    );
    assert_eq!(prom.mounts[0].target, "/etc/prometheus/prometheus.yml");
    let h = &c.consumers["holmesgpt-api"];
    let hi = h.integration.as_ref().unwrap();
    assert_eq!(hi.own_ports["api"], 18150);
    assert_eq!(
        hi.test,
        TestCmd::Argv(vec![
            "python".into(),
            "-m".into(),
            "pytest".into(),
            "tests/integration".into()
        ])
    );
    let n = c.consumers["notification-controller"]
        .integration
        .as_ref()
        .unwrap();
    assert_eq!(
        n.test,
        TestCmd::Cargo {
            package: "notification-controller".into(),
            target: "it".into()
        }
    );
}

#[test]
fn drop_and_override_shape_one_consumers_stack_only() {
    let c = system();
    let s = c.stack("holmesgpt-api", TierName::Integration).unwrap();
    assert_eq!(
        s.names(),
        ["mock-llm", "postgres", "db-migrate", "data-storage"]
    );
    let ds = s.get("data-storage").unwrap();
    assert!(
        !ds.env.contains_key("REDIS_URL"),
        "the entry naming a dropped component goes"
    );
    assert_eq!(ds.env["LOG_LEVEL"], "debug");
    assert_eq!(ds.timeout, Duration::from_secs(90));
    assert_eq!(ds.needs, ["db-migrate"]);
    assert!(ds.optional.is_empty());
    // Another consumer sees the component as defined.
    let other = c
        .stack("notification-controller", TierName::Integration)
        .unwrap();
    let ds = other.get("data-storage").unwrap();
    assert_eq!(ds.env["LOG_LEVEL"], "info");
    assert_eq!(ds.env["REDIS_URL"], "{redis-cache.url}");
    assert_eq!(ds.timeout, Duration::from_secs(60));
    assert_eq!(
        other.names(),
        ["postgres", "db-migrate", "redis-cache", "data-storage"]
    );
}

#[test]
fn e2e_stacks_add_the_e2e_only_component_and_the_consumer() {
    let c = system();
    let s = c.stack("holmesgpt-api", TierName::E2e).unwrap();
    assert_eq!(s.names().last().unwrap(), "holmesgpt-api");
    assert!(s.get("prometheus").is_some());
    assert!(
        s.get("redis-cache").is_some(),
        "dropped in integration only"
    );
    let ds = s.get("data-storage").unwrap();
    assert_eq!((ds.port, ds.extra_ports["metrics"]), (Some(8081), 9191));
    let ds_own = c.stack("data-storage", TierName::E2e).unwrap();
    assert_eq!(
        ds_own.names(),
        ["postgres", "db-migrate", "data-storage", "prometheus"]
    );
    assert!(c
        .stack("notification-controller", TierName::E2e)
        .unwrap()
        .get("prometheus")
        .is_none());
    let e = c.stack("holmesgpt-api", TierName::Integration).unwrap();
    assert!(e.get("prometheus").is_none());
}

#[test]
fn every_host_port_of_every_tier_is_in_one_check() {
    one_error(
        &SYSTEM.replace("host_port = 28151", "host_port = 18150"),
        "host port 18150 of consumers.holmesgpt-api.e2e.ports.prometheus.host_port is also used by consumers.holmesgpt-api.integration.own_ports.api",
    );
    one_error(
        &SYSTEM.replace("redis-cache = 16470", "redis-cache = 28160"),
        "host port 28160 of consumers.data-storage.integration.ports.redis-cache is also used by consumers.notification-controller.e2e.ports.notification-controller.host_port",
    );
}

#[test]
fn the_e2e_only_component_stays_out_of_integration() {
    one_error(
        &SYSTEM.replace("test = \"it\"", "test = \"it\"\nadd = [\"prometheus\"]"),
        "consumers.notification-controller.integration.add: `prometheus` runs in e2e only (its `tiers`), not in integration",
    );
    one_error(
        &SYSTEM.replace("needs = [\"data-storage\"]", "needs = [\"data-storage\", \"prometheus\"]"),
        "services.notification-controller.needs: `notification-controller` may run in both tiers but `prometheus` runs in e2e only",
    );
}

#[test]
fn a_stack_of_a_missing_tier_is_an_error_naming_the_table() {
    let c = parse_str(GOOD).unwrap();
    let e = c.stack("store", TierName::E2e).unwrap_err().to_string();
    assert!(e.contains("has no [consumers.store.e2e] table"), "{e}");
}

#[test]
fn overrides_change_env_and_timeouts_only_as_asked() {
    let mut c = parse_str(GOOD).unwrap();
    c.apply_overrides(&[
        "store.env.DATABASE_URL=postgres://u:wrong@{postgres.url}".into(),
        "store.timeout=15s".into(),
    ])
    .unwrap();
    let stack = c.stack("notify", TierName::Integration).unwrap();
    let store = stack.get("store").unwrap();
    assert_eq!(
        store.env["DATABASE_URL"],
        "postgres://u:wrong@{postgres.url}"
    );
    assert_eq!(store.timeout, Duration::from_secs(15));
    assert_eq!(
        c.components["store"].timeout,
        Duration::from_secs(60),
        "the file's model is unchanged"
    );
    for (bad, want) in [
        (
            "stroe.timeout=1s",
            "unknown component `stroe` (did you mean `store`?)",
        ),
        ("store.env.X", "expected <component>.env.<VAR>=<value>"),
        ("store.port=1", "expected <component>.env.<VAR>=<value>"),
        ("store.timeout=soon", "not a duration"),
        ("store.timeout=300000000000000d", "too large"),
        ("store.env.X={nope}", "unknown placeholder `{nope}`"),
        ("store.env.x-y=1", "not an environment variable name"),
    ] {
        let e = format!("{:#}", c.apply_overrides(&[bad.to_string()]).unwrap_err());
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// `--set` wins over the consumer's own `override` of the same key.
#[test]
fn the_command_line_wins_over_a_consumer_override() {
    let text = format!(
        "{GOOD}\n[consumers.notify.integration.override.store]\ntimeout = \"90s\"\nenv = {{ LOG = \"debug\" }}\n"
    );
    let mut c = parse_str(&text).unwrap();
    let store = |c: &Config| {
        c.stack("notify", TierName::Integration)
            .unwrap()
            .get("store")
            .cloned()
            .unwrap()
    };
    assert_eq!(store(&c).timeout, Duration::from_secs(90));
    c.apply_overrides(&["store.timeout=5s".into(), "store.env.LOG=trace".into()])
        .unwrap();
    assert_eq!(store(&c).timeout, Duration::from_secs(5));
    assert_eq!(store(&c).env["LOG"], "trace");
}
