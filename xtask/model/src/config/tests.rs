//! Tests of `infra.toml` validation: a small valid fixture, and malformed variants of it whose
//! every message (file, line, column, names) is asserted. `tests/new_keys.rs` covers the keys
//! of format v2, `tests/stacks.rs` resolved stacks, `--set` and the acceptance tests of issue
//! 12, `tests/defects.rs` the defects of issue 9 and inputs that must never panic.

mod defects;
mod new_keys;
mod stacks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::Diagnostics;
use super::*;

/// A small but complete file: two infra, two services, a job, two consumers.
pub const GOOD: &str = r#"
[images.postgres]
ref = "docker.io/library/postgres:15"
env = "XTASK_IMAGE_POSTGRES"
standin = "postgres"

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
ports = { postgres = 15433, redis = 16379 }

[consumers.notify.integration.ports]
postgres = 15440
redis = 16385
store = 18096
"store.metrics" = 19096

[consumers.notify.e2e.ports]
notify = { node_port = 30086, host_port = 28120 }
store = { node_port = 30081, host_port = 28121 }
"#;

/// What a path is in tests: folders end in `dir` or `/`; anything with `missing` is absent.
pub fn fake_fs(p: &Path) -> Option<PathKind> {
    let s = p.to_string_lossy();
    if s.contains("missing") {
        None
    } else if s.ends_with("dir") || s.ends_with('/') {
        Some(PathKind::Dir)
    } else {
        Some(PathKind::File)
    }
}

pub fn parse_str(text: &str) -> std::result::Result<Config, Diagnostics> {
    parse(Path::new("infra.toml"), Path::new("/repo"), text, &fake_fs)
}

/// The rendered errors of a file that must fail.
pub fn errors(text: &str) -> String {
    match parse_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// `GOOD` with `from` replaced by `to` (which must occur once).
pub fn variant(from: &str, to: &str) -> String {
    assert_eq!(
        GOOD.matches(from).count(),
        1,
        "fixture must contain `{from}` once"
    );
    GOOD.replacen(from, to, 1)
}

pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

/// `text` with component `from` renamed `to` wherever it is the component (or its image's)
/// name: not in `kind = "redis"`, `standin = "redis"`, URL schemes (`redis://`), image
/// references (`library/redis:7`) or variable names (`REDIS_URL`).
pub fn rename(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let (before, after) = (&rest[..i], &rest[i + from.len()..]);
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let whole = !before.ends_with(word) && !after.starts_with(word);
        let not_a_name = after.starts_with(':')
            || before.ends_with('/')
            || before.ends_with("kind = \"")
            || before.ends_with("standin = \"");
        out.push_str(before);
        out.push_str(if whole && !not_a_name { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Asserts the file has exactly one error, containing `want`.
pub fn one_error(text: &str, want: &str) {
    let e = errors(text);
    assert!(e.contains("has 1 error:"), "expected one error:\n{e}");
    assert!(e.contains(want), "expected `{want}` in:\n{e}");
}

#[test]
fn the_fixture_is_valid_and_modelled() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.components.len(), 5);
    let store = &c.components["store"];
    assert_eq!(store.port, Some(8080));
    assert_eq!(store.extra_ports["metrics"], 9090);
    assert_eq!(store.manifest, PathBuf::from("manifests/store.yaml"));
    assert_eq!(store.tiers, Tiers::BOTH);
    assert!(matches!(&store.source, Source::Rust(r) if r.package == "store"));
    let migrate = &c.components["migrate"];
    assert_eq!(migrate.ready, Ready::Exit);
    assert_eq!(migrate.timeout, Duration::from_secs(120));
    assert_eq!(migrate.args, ["migrate"]);
    assert_eq!(c.images["postgres"].standin.as_deref(), Some("postgres"));
    let notify = &c.consumers["notify"];
    let integration = notify.integration.as_ref().unwrap();
    assert_eq!(integration.ports[&PortRef::parse("store.metrics")], 19096);
    assert_eq!(
        integration.test,
        TestCmd::Cargo {
            package: "notify".into(),
            target: "integration".into()
        }
    );
    let e2e = notify.e2e.as_ref().unwrap();
    assert_eq!(
        e2e.ports[&PortRef::parse("notify")],
        NodePort {
            node_port: 30086,
            host_port: 28120
        }
    );
    assert!(c.consumers["store"].e2e.is_none());
}

#[test]
fn the_repository_file_is_valid() {
    let file = crate::repo_root().join("infra.toml");
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
fn the_shape_of_format_v1_gets_advice() {
    let e = errors(&variant(
        "[consumers.notify.integration.ports]",
        "[consumers.notify.integration]",
    ));
    assert!(e.contains("unknown field `postgres`"), "{e}");
    assert!(e.contains("a tier's ports go in `ports = {"), "{e}");
    let e = errors(&format!(
        "{GOOD}\n[consumers.store]\nintegration_test = \"it\"\n"
    ));
    assert!(
        e.contains("`test = \"...\"` in [consumers.<name>.<tier>]"),
        "{e}"
    );
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
    assert_eq!(e.matches("dependency cycle").count(), 1, "found once: {e}");
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
    // Reported at the later place in the file, naming the earlier owner and its place.
    let later = line_of(&text, "[consumers.notify.integration.ports]") + 1;
    let first = line_of(GOOD, "ports = { postgres = 15433");
    let col = GOOD.lines().nth(first - 1).unwrap().find("15433").unwrap() + 1;
    let want = format!(
        "infra.toml:{later}:12: host port 15433 of consumers.notify.integration.ports.postgres is \
         also used by consumers.store.integration.ports.postgres at line {first}, column {col}"
    );
    assert!(e.contains(&want), "{want}\n{e}");
}

#[test]
fn host_port_collision_across_tiers() {
    let e = errors(&variant("host_port = 28121", "host_port = 16379"));
    assert!(e.contains("host port 16379 of consumers.notify.e2e.ports.store.host_port is also used by consumers.store.integration.ports.redis"), "{e}");
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
        e.contains("consumers.notify.integration.ports.redis: port 0 is outside 1-65535"),
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

/// A consumer need not be a service, but then cargo has no package to test.
#[test]
fn a_consumer_that_is_not_a_rust_service_needs_an_argv_test() {
    let e = errors(&format!(
        "{GOOD}\n[consumers.redis.integration]\nports = {{ postgres = 15999 }}\n"
    ));
    assert!(
        e.contains("consumers.redis.integration: `redis` is not a Rust service of this workspace"),
        "{e}"
    );
    assert!(e.contains("test = [\"program\", \"arg\"]"), "{e}");
    let ok =
        format!("{GOOD}\n[consumers.redis.integration]\ntest = [\"scripts/smoke\", \"--fast\"]\n");
    let c = parse_str(&ok).unwrap();
    let t = c.consumers["redis"].integration.as_ref().unwrap();
    assert_eq!(
        t.test,
        TestCmd::Argv(vec!["scripts/smoke".into(), "--fast".into()])
    );
}

#[test]
fn integration_stack_needs_host_ports() {
    let text = variant("store = 18096\n", "");
    let e = errors(&text);
    let at = line_of(&text, "[consumers.notify.integration.ports]");
    assert!(
        e.contains(&format!(
            "infra.toml:{at}:19: consumers.notify.integration: no host port for `store`"
        )),
        "{e}"
    );
}

#[test]
fn ports_of_components_outside_the_stack() {
    let e = errors(&format!("{GOOD}\n[consumers.store.e2e.ports]\nstore = {{ node_port = 30081, host_port = 28100 }}\nnotify = {{ node_port = 30082, host_port = 28101 }}\n"));
    assert!(
        e.contains("consumers.store.e2e.ports.notify: `notify` is not part of store's e2e stack"),
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
        e.contains("NodePort 30086 is also used by consumers.notify.e2e.ports.notify"),
        "{e}"
    );
}

#[test]
fn the_consumer_needs_a_node_port_for_itself() {
    one_error(
        &variant("notify = { node_port = 30086, host_port = 28120 }\n", ""),
        "consumers.notify.e2e: no NodePort for `notify` itself",
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
    let e = errors(&variant("{store.metrics.url}", "{migrate.url}"));
    assert!(
        e.contains("`migrate` is not among") || e.contains("is a job"),
        "{e}"
    );
}

#[test]
fn component_names_are_checked() {
    let text = GOOD.replace("[services.notify]", "[services.Notify]");
    let e = errors(&text);
    assert!(
        e.contains("component name `Notify` must be lowercase letters, digits and inner hyphens"),
        "{e}"
    );
    for bad in ["notify-", "1notify", "no_tify", "-notify"] {
        let e = errors(&GOOD.replace("[services.notify]", &format!("[services.{bad}]")));
        assert!(
            e.contains(&format!("component name `{bad}` must be")),
            "{bad}: {e}"
        );
    }
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
fn required_keys_are_named_at_the_component() {
    let text = variant("port = 6379\n", "");
    one_error(&text, "infra.redis: `port` is missing");
    let at = line_of(&text, "[infra.redis]");
    assert!(errors(&text).contains(&format!("infra.toml:{at}:8:")));
    one_error(
        &variant("ready = { kind = \"redis\" }\n", ""),
        "infra.redis: `ready` is missing",
    );
    one_error(
        &variant("image = \"redis\"\n", ""),
        "infra.redis: `image` is missing",
    );
    one_error(
        &variant("service = \"store\"\n", ""),
        "jobs.migrate: `service` is missing",
    );
}

#[test]
fn keys_of_another_table_are_refused() {
    one_error(
        &variant("args = [\"migrate\"]", "args = [\"migrate\"]\nport = 1"),
        "jobs.migrate: `port` is not a key of a job",
    );
    one_error(
        &variant("image = \"redis\"", "image = \"redis\"\npackage = \"r\""),
        "infra.redis: `package` belongs in [services.*], not [infra.*]",
    );
    one_error(
        &variant(
            "binary = \"notify\"",
            "binary = \"notify\"\nimage = \"redis\"",
        ),
        "services.notify: `image` belongs in [infra.*], not [services.*]",
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
    one_error(
        &variant(
            "args = [\"migrate\"]",
            "args = [\"migrate\"]\ntimeout = \"300000000000000d\"",
        ),
        "jobs.migrate.timeout: `300000000000000d` is too large",
    );
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
