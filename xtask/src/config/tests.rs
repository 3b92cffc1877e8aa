//! Tests of `infra.toml` validation: a small valid fixture, and malformed variants of it whose
//! every message (file, line, column, names) is asserted.

use std::path::{Path, PathBuf};

use super::*;

/// A small but complete file: two infra, two services, a job, two consumers.
const GOOD: &str = r#"
[images.postgres]
ref = "docker.io/library/postgres:15"
env = "XTASK_IMAGE_POSTGRES"

[images.redis]
ref = "docker.io/library/redis:7"

[postgres]
user = "u"
password = "p"
database = "d"

[infra.postgres]
image = "postgres"
port = 5432
url = "postgres://{postgres.user}:{postgres.password}@{host}:{port}/{postgres.database}"
ready = { kind = "sql", query = "SELECT 1" }

[infra.redis]
image = "redis"
port = 6379
ready = { kind = "redis" }

[services.store]
dockerfile = "services/store/Dockerfile"
package = "store"
binary = "store"
port = 8080
extra_ports = { metrics = 9090 }
ready = { kind = "http", path = "/readyz" }
needs = ["migrate", "redis"]
env = { DATABASE_URL = "{postgres.url}" }

[services.notify]
dockerfile = "services/notify/Dockerfile"
package = "notify"
binary = "notify"
port = 8080
ready = { kind = "http", path = "/readyz" }
needs = ["store"]
env = { STORE_URL = "{store.url}", STORE_METRICS = "{store.metrics.url}" }

[jobs.migrate]
service = "store"
args = ["migrate"]
needs = ["postgres"]

[consumers.store.integration]
postgres = 15433
redis = 16379

[consumers.notify.integration]
postgres = 15440
redis = 16385
store = 18096
"store.metrics" = 19096

[consumers.notify.e2e]
notify = { node_port = 30086, host_port = 28120 }
store = { node_port = 30081, host_port = 28121 }
"#;

fn parse_str(text: &str) -> std::result::Result<Config, Diagnostics> {
    parse(
        Path::new("infra.toml"),
        Path::new("/repo"),
        text,
        &|p: &Path| {
            // Everything exists except paths containing "missing".
            !p.to_string_lossy().contains("missing")
        },
    )
}

/// The rendered errors of a file that must fail.
fn errors(text: &str) -> String {
    match parse_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// `GOOD` with `from` replaced by `to` (which must occur once).
fn variant(from: &str, to: &str) -> String {
    assert_eq!(
        GOOD.matches(from).count(),
        1,
        "fixture must contain `{from}` once"
    );
    GOOD.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn the_fixture_is_valid_and_modelled() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.components.len(), 5);
    let store = &c.components["store"];
    assert_eq!(store.port, Some(8080));
    assert_eq!(store.extra_ports["metrics"], 9090);
    assert_eq!(store.manifest, PathBuf::from("manifests/store.yaml"));
    assert_eq!(c.components["migrate"].ready, Ready::Exit);
    assert_eq!(c.components["migrate"].timeout, Duration::from_secs(120));
    let notify = &c.consumers["notify"];
    assert_eq!(notify.integration[&PortRef::parse("store.metrics")], 19096);
    assert_eq!(
        notify.e2e[&PortRef::parse("notify")],
        NodePort {
            node_port: 30086,
            host_port: 28120
        }
    );
    assert_eq!(notify.integration_test, "integration");
}

#[test]
fn the_repository_file_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra.toml");
    let c = Config::load(&file).unwrap_or_else(|e| panic!("{e:#}"));
    for s in ["datastorage", "notification", "gateway"] {
        assert!(c.consumers.contains_key(s), "{s} is a consumer");
    }
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = variant("port = 6379", "port = = 6379");
    let e = errors(&text);
    let line = line_of(&text, "port = = 6379");
    assert!(e.contains(&format!("infra.toml:{line}:")), "{e}");
    assert!(e.contains("1 error"), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_its_place() {
    let text = variant(
        "binary = \"notify\"",
        "binary = \"notify\"\nhealth_path = \"/x\"",
    );
    let e = errors(&text);
    assert!(
        e.contains(&format!("infra.toml:{}:", line_of(&text, "health_path"))),
        "{e}"
    );
    assert!(e.contains("unknown field `health_path`"), "{e}");
    assert!(e.contains("check the spelling"), "{e}");
}

#[test]
fn unknown_need_names_service_and_suggests() {
    let text = variant("needs = [\"store\"]", "needs = [\"stroe\"]");
    let e = errors(&text);
    assert!(
        e.contains("services.notify.needs: unknown component `stroe`"),
        "{e}"
    );
    assert!(e.contains("did you mean `store`?"), "{e}");
    assert!(
        e.contains(&format!("infra.toml:{}:", line_of(&text, "stroe"))),
        "{e}"
    );
}

#[test]
fn cycle_is_named() {
    let text = variant(
        "needs = [\"postgres\"]",
        "needs = [\"postgres\", \"notify\"]",
    );
    let e = errors(&text);
    assert!(e.contains("dependency cycle:"), "{e}");
    for n in ["migrate", "notify", "store"] {
        assert!(e.contains(n), "cycle names {n}: {e}");
    }
    assert!(e.contains(" -> "), "{e}");
}

#[test]
fn self_need_is_a_cycle() {
    let e = errors(&variant("needs = [\"store\"]", "needs = [\"notify\"]"));
    assert!(e.contains("`notify` needs itself"), "{e}");
}

#[test]
fn host_port_used_twice_names_both_owners() {
    // notify's PostgreSQL port changed to store's.
    let text = variant("postgres = 15440", "postgres = 15433");
    let e = errors(&text);
    // Reported at the later place in the file, naming the earlier owner and its line.
    assert!(e.contains(&format!(
        "infra.toml:{}:12: host port 15433 of consumers.notify.integration.postgres is also used by \
         consumers.store.integration.postgres at line {}, column 12",
        line_of(&text, "[consumers.notify.integration]") + 1,
        line_of(GOOD, "postgres = 15433")
    )), "{e}");
}

#[test]
fn host_port_collision_across_tiers() {
    let e = errors(&variant("host_port = 28121", "host_port = 16379"));
    assert!(e.contains("host port 16379 of consumers.notify.e2e.store.host_port is also used by consumers.store.integration.redis"), "{e}");
}

#[test]
fn ports_out_of_range() {
    let e = errors(&variant("port = 6379", "port = 70000"));
    assert!(
        e.contains("infra.redis.port: port 70000 is outside 1-65535"),
        "{e}"
    );
    let e = errors(&variant("redis = 16385", "redis = 0"));
    assert!(
        e.contains("consumers.notify.integration.redis: port 0 is outside 1-65535"),
        "{e}"
    );
    let e = errors(&variant("node_port = 30086", "node_port = 8080"));
    assert!(
        e.contains("8080 is outside Kubernetes' NodePort range 30000-32767"),
        "{e}"
    );
}

#[test]
fn missing_dockerfile_is_named() {
    let e = errors(&variant(
        "services/notify/Dockerfile",
        "services/notify/missing.Dockerfile",
    ));
    assert!(
        e.contains("services.notify.dockerfile: services/notify/missing.Dockerfile does not exist"),
        "{e}"
    );
}

#[test]
fn several_errors_are_all_reported() {
    let text = variant("postgres = 15440", "postgres = 15433")
        .replace("port = 6379", "port = 99999")
        .replace("needs = [\"store\"]", "needs = [\"store\", \"nope\"]");
    let e = errors(&text);
    assert!(e.contains("3 errors"), "{e}");
    // Sorted by position in the file.
    let p = e.find("99999").unwrap();
    let n = e.find("`nope`").unwrap();
    let h = e.find("host port 15433").unwrap();
    assert!(p < n && n < h, "{e}");
}

#[test]
fn unknown_image_for_infra() {
    let e = errors(&variant("image = \"redis\"", "image = \"rediss\""));
    assert!(
        e.contains("infra.redis.image: no [images.rediss] (did you mean `redis`?)"),
        "{e}"
    );
}

#[test]
fn job_must_run_a_service_image() {
    let e = errors(&variant("service = \"store\"", "service = \"postgres\""));
    assert!(
        e.contains("jobs.migrate.service: `postgres` is not a service"),
        "{e}"
    );
}

#[test]
fn consumer_must_be_a_service() {
    let e = errors(&format!(
        "{GOOD}\n[consumers.redis.integration]\npostgres = 15999\n"
    ));
    assert!(
        e.contains("consumers.redis: `redis` is not a service"),
        "{e}"
    );
}

#[test]
fn integration_stack_needs_host_ports() {
    let e = errors(&variant("store = 18096\n", ""));
    assert!(
        e.contains("consumers.notify.integration: no host port for `store`"),
        "{e}"
    );
}

#[test]
fn ports_of_components_outside_the_stack() {
    let e = errors(&format!("{GOOD}\n[consumers.store.e2e]\nstore = {{ node_port = 30081, host_port = 28100 }}\nnotify = {{ node_port = 30082, host_port = 28101 }}\n"));
    assert!(
        e.contains("consumers.store.e2e.notify: `notify` is not part of store's E2E stack"),
        "{e}"
    );
    let e = errors(&variant(
        "\"store.metrics\" = 19096",
        "\"store.metric\" = 19096",
    ));
    assert!(
        e.contains("`store` has no port called `metric` (did you mean `metrics`?)"),
        "{e}"
    );
}

#[test]
fn node_ports_unique_within_a_cluster() {
    let e = errors(&variant("node_port = 30081", "node_port = 30086"));
    assert!(
        e.contains("NodePort 30086 is also used by consumers.notify.e2e.notify"),
        "{e}"
    );
}

#[test]
fn templates_name_reachable_components() {
    let e = errors(&variant(
        "DATABASE_URL = \"{postgres.url}\"",
        "DATABASE_URL = \"{notify.url}\"",
    ));
    assert!(e.contains("services.store.env.DATABASE_URL: `{notify.url}` names `notify`, which is not among what this component needs"), "{e}");
    let e = errors(&variant(
        "STORE_URL = \"{store.url}\"",
        "STORE_URL = \"{store.uri}\"",
    ));
    assert!(e.contains("unknown placeholder `{store.uri}`"), "{e}");
    let e = errors(&variant("{store.metrics.url}", "{store.admin.url}"));
    assert!(e.contains("`store` has no port called `admin`"), "{e}");
}

#[test]
fn component_names_are_checked() {
    let text = GOOD.replace("[services.notify]", "[services.Notify]");
    let e = errors(&text);
    assert!(
        e.contains("component name `Notify` must be lowercase"),
        "{e}"
    );
}

#[test]
fn duplicate_component_names_across_tables() {
    let e = errors(&format!("{GOOD}\n[jobs.redis]\nservice = \"store\"\n"));
    assert!(
        e.contains("`redis` is defined in [jobs] and also in [infra]"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_bad_ready_kinds() {
    let e = errors(&variant("port = 6379", "port = \"6379\""));
    assert!(e.contains("invalid type"), "{e}");
    let e = errors(&variant(
        "ready = { kind = \"redis\" }",
        "ready = { kind = \"ping\" }",
    ));
    assert!(e.contains("unknown variant `ping`"), "{e}");
    let e = errors(&variant(
        "path = \"/readyz\" }\nneeds = [\"migrate\"",
        "path = \"readyz\" }\nneeds = [\"migrate\"",
    ));
    assert!(
        e.contains("services.store.ready.path `readyz` must start with /"),
        "{e}"
    );
}

#[test]
fn missing_postgres_table_and_bad_timeout() {
    let text = GOOD.replace(
        "[postgres]\nuser = \"u\"\npassword = \"p\"\ndatabase = \"d\"\n",
        "",
    );
    assert!(errors(&text).contains("missing [postgres] table"));
    let e = errors(&variant(
        "args = [\"migrate\"]",
        "args = [\"migrate\"]\ntimeout = \"soon\"",
    ));
    assert!(
        e.contains("jobs.migrate.timeout: `soon` is not a duration"),
        "{e}"
    );
}

#[test]
fn garbage_never_panics() {
    let cases = [
        "",
        "[",
        "]]]",
        "x = ",
        "[services]\nfoo = 1",
        "[consumers.a]\nintegration = 3",
        "[infra.a]\nport = -1",
        "\u{0}\u{1}",
        "[postgres]\nuser = []",
        "[consumers.x.e2e]\ny = { node_port = 1 }",
        "[[services]]",
    ];
    for c in cases {
        let _ = parse_str(c);
    }
    // An empty file lacks [postgres] but parses.
    assert!(errors("").contains("missing [postgres]"));
}

#[test]
fn image_env_override() {
    let c = parse_str(GOOD).unwrap();
    let img = &c.images["postgres"];
    assert_eq!(img.resolve(&|_| None), "docker.io/library/postgres:15");
    assert_eq!(
        img.resolve(&|k| (k == "XTASK_IMAGE_POSTGRES").then(|| "localhost/pg:1".into())),
        "localhost/pg:1"
    );
    assert_eq!(
        img.resolve(&|_| Some("  ".into())),
        "docker.io/library/postgres:15"
    );
}

#[test]
fn durations_and_line_columns() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
    assert_eq!(
        parse_duration("1500ms").unwrap(),
        Duration::from_millis(1500)
    );
    assert!(parse_duration("3w")
        .unwrap_err()
        .to_string()
        .contains("unknown unit"));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
}

#[test]
fn overrides_change_env_and_timeouts_only_as_asked() {
    let mut c = parse_str(GOOD).unwrap();
    c.apply_overrides(&[
        "store.env.DATABASE_URL=postgres://u:wrong@{postgres.url}".into(),
        "store.timeout=15s".into(),
    ])
    .unwrap();
    assert_eq!(
        c.components["store"].env["DATABASE_URL"],
        "postgres://u:wrong@{postgres.url}"
    );
    assert_eq!(c.components["store"].timeout, Duration::from_secs(15));
    for (bad, want) in [
        (
            "stroe.timeout=1s",
            "unknown component `stroe` (did you mean `store`?)",
        ),
        ("store.env.X", "expected <component>.env.<VAR>=<value>"),
        ("store.port=1", "expected <component>.env.<VAR>=<value>"),
        ("store.timeout=soon", "not a duration"),
        ("store.env.X={nope}", "unknown placeholder `{nope}`"),
    ] {
        let e = format!("{:#}", c.apply_overrides(&[bad.to_string()]).unwrap_err());
        assert!(e.contains(want), "{bad}: {e}");
    }
}
