//! Malformed files for every key of format v2 (add, drop, override, own_ports, test, optional,
//! tiers, mounts, command, build_context, build_args, standin) and for names and their limits.
//! Each fault gives exactly one error, at its place.

use super::*;

/// An E2E-only component (a monitoring stand-in).
const PROM: &str = "\n[infra.prom]\nimage = \"redis\"\nport = 9090\nready = { kind = \"tcp\" }\ntiers = [\"e2e\"]\n";

/// `GOOD` plus tables at the end.
fn with(extra: &str) -> String {
    format!("{GOOD}\n{extra}")
}

/// `GOOD` with keys added to `[consumers.store.integration]`.
fn store_tier(keys: &str) -> String {
    let ports = "ports = { postgres = 15433, redis = 16379 }";
    variant(ports, &format!("{ports}\n{keys}"))
}

/// `GOOD` with keys added to a component's table (after `anchor`, a line of it).
fn component_keys(anchor: &str, keys: &str) -> String {
    variant(anchor, &format!("{anchor}\n{keys}"))
}

/// `GOOD` where store can run without Redis.
fn redis_optional() -> String {
    variant(
        "needs = [\"migrate\", \"redis\"]",
        "needs = [\"migrate\", \"redis\"]\noptional = [\"redis\"]",
    )
}

#[test]
fn add() {
    one_error(
        &store_tier("add = [\"notfy\"]"),
        "consumers.store.integration.add: unknown component `notfy` (did you mean `notify`?)",
    );
    one_error(
        &with(&format!("{PROM}\n")).replace(
            "ports = { postgres = 15433, redis = 16379 }",
            "ports = { postgres = 15433, redis = 16379 }\nadd = [\"prom\"]",
        ),
        "consumers.store.integration.add: `prom` runs in e2e only (its `tiers`), not in integration",
    );
    one_error(
        &store_tier("add = [\"redis\", \"redis\"]"),
        "consumers.store.integration.add: `redis` is listed twice",
    );
    one_error(
        &store_tier("add = \"redis\""),
        "invalid type: string \"redis\", expected a sequence",
    );
    // An added component comes with what it needs, and needs a host port like any other.
    let text = with(&format!("{PROM}\n[consumers.store.e2e]\nadd = [\"prom\"]\n[consumers.store.e2e.ports]\nstore = {{ node_port = 30081, host_port = 28100 }}\n"));
    let c = parse_str(&text).unwrap();
    let s = c.stack("store", TierName::E2e).unwrap();
    assert!(s.get("prom").is_some(), "{:?}", s.names());
}

#[test]
fn drop() {
    one_error(
        &store_tier("drop = [\"rediss\"]"),
        "consumers.store.integration.drop: unknown component `rediss` (did you mean `redis`?)",
    );
    one_error(
        &store_tier("drop = [\"redis\"]"),
        "consumers.store.integration.drop: `redis` is not an optional need of anything in store's integration stack",
    );
    // Optional for store, but notify needs it for sure: it stays in notify's E2E stack.
    let text = redis_optional().replace("needs = [\"store\"]", "needs = [\"store\", \"redis\"]")
        + "\n[consumers.notify.e2e]\ndrop = [\"redis\"]\n";
    one_error(
        &text,
        "consumers.notify.e2e.drop: `notify` needs `redis` (not optionally), so it stays in the stack",
    );
    one_error(
        &(redis_optional() + "\n[consumers.notify.e2e]\nadd = [\"redis\"]\ndrop = [\"redis\"]\n"),
        "consumers.notify.e2e.drop: `redis` is the consumer itself or in `add`",
    );
    one_error(
        &(redis_optional() + "\n[consumers.notify.e2e]\ndrop = [\"redis\", \"redis\"]\n"),
        "consumers.notify.e2e.drop: `redis` is listed twice",
    );
    // Dropped: its host port must go too.
    one_error(
        &(redis_optional() + "\n[consumers.notify.integration]\ndrop = [\"redis\"]\n"),
        "consumers.notify.integration.ports.redis: `redis` is not part of notify's integration stack",
    );
}

#[test]
fn override_() {
    let o = |keys: &str| {
        with(&format!(
            "[consumers.notify.integration.override.store]\n{keys}\n"
        ))
    };
    one_error(
        &with("[consumers.notify.integration.override.stroe]\ntimeout = \"1s\"\n"),
        "consumers.notify.integration.override.stroe: unknown component `stroe` (did you mean `store`?)",
    );
    one_error(
        &with("[consumers.store.integration.override.notify]\ntimeout = \"1s\"\n"),
        "consumers.store.integration.override.notify: `notify` is not part of store's integration stack (postgres, migrate, redis)",
    );
    one_error(
        &o("image = \"x\""),
        "unknown field `image`, expected one of `env`, `timeout`, `port`, `extra_ports`",
    );
    one_error(
        &o("timeout = \"soon\""),
        "consumers.notify.integration.override.store.timeout: `soon` is not a duration",
    );
    one_error(
        &o("port = 0"),
        "consumers.notify.integration.override.store.port: port 0 is outside 1-65535",
    );
    one_error(
        &o("extra_ports = { metric = 9191 }"),
        "consumers.notify.integration.override.store.extra_ports: `store` has no port called `metric` (did you mean `metrics`?)",
    );
    one_error(
        &with("[consumers.notify.integration.override.migrate]\nport = 1\n"),
        "consumers.notify.integration.override.migrate: `migrate` is a job; jobs have no ports",
    );
    one_error(
        &o("env = { X = \"{notify.url}\" }"),
        "consumers.notify.integration.override.store.env.X: `{notify.url}` names `notify`, which is not among what this component needs",
    );
    one_error(&o("env = { \"x-y\" = \"1\" }"), "consumers.notify.integration.override.store.env: `x-y` is not an environment variable name");
    // A template may not name what this consumer dropped.
    let text = redis_optional().replace("redis = 16385\n", "")
        + "\n[consumers.notify.integration]\ndrop = [\"redis\"]\n"
        + "[consumers.notify.integration.override.store]\nenv = { R = \"{redis.url}\" }\n";
    one_error(
        &text,
        "consumers.notify.integration.override.store.env.R: `{redis.url}` names `redis`, which is not among",
    );
}

#[test]
fn own_ports() {
    let text = with("[consumers.notify.integration]\nown_ports = { api = 18150 }\n");
    let c = parse_str(&text).unwrap();
    assert_eq!(
        c.consumers["notify"]
            .integration
            .as_ref()
            .unwrap()
            .own_ports["api"],
        18150
    );
    one_error(
        &with("[consumers.notify.integration]\nown_ports = { api = 15433 }\n"),
        "host port 15433 of consumers.notify.integration.own_ports.api is also used by consumers.store.integration.ports.postgres",
    );
    one_error(
        &with("[consumers.notify.e2e]\nown_ports = { api = 18150 }\n"),
        "consumers.notify.e2e.own_ports: in e2e the consumer runs in the cluster",
    );
    one_error(
        &with("[consumers.notify.integration]\nown_ports = { API = 18150 }\n"),
        "port name `API` must be at most 15 lowercase letters",
    );
    one_error(
        &with("[consumers.notify.integration]\nown_ports = { api = 0 }\n"),
        "consumers.notify.integration.own_ports.api: port 0 is outside 1-65535",
    );
}

#[test]
fn test() {
    one_error(
        &store_tier("test = 3"),
        "invalid type: integer `3`, expected a cargo test target name or an argv array of strings",
    );
    one_error(
        &store_tier("test = []"),
        "consumers.store.integration.test: the argv is empty",
    );
    one_error(
        &store_tier("test = [\"\"]"),
        "consumers.store.integration.test: the argv is empty",
    );
    one_error(
        &store_tier("test = \"a b\""),
        "consumers.store.integration.test: `a b` is not a test target name",
    );
    let c = parse_str(&store_tier("test = \"smoke\"")).unwrap();
    let t = &c.consumers["store"].integration.as_ref().unwrap().test;
    assert_eq!(
        *t,
        TestCmd::Cargo {
            package: "store".into(),
            target: "smoke".into()
        }
    );
    let c = parse_str(&store_tier(
        "test = [\"cargo\", \"run\", \"--bin\", \"smoke\"]",
    ))
    .unwrap();
    let t = &c.consumers["store"].integration.as_ref().unwrap().test;
    assert!(matches!(t, TestCmd::Argv(a) if a[3] == "smoke"));
}

#[test]
fn optional() {
    one_error(
        &component_keys(
            "needs = [\"migrate\", \"redis\"]",
            "optional = [\"postgres\"]",
        ),
        "services.store.optional: `postgres` is not in `needs`",
    );
    one_error(
        &component_keys("needs = [\"migrate\", \"redis\"]", "optional = \"redis\""),
        "invalid type: string \"redis\", expected a sequence",
    );
    let c = parse_str(&redis_optional()).unwrap();
    assert!(c.components["store"].optional.contains("redis"));
}

#[test]
fn tiers() {
    one_error(
        &component_keys("ready = { kind = \"redis\" }", "tiers = [\"staging\"]"),
        "infra.redis.tiers: `staging` is not a tier; use \"integration\" and/or \"e2e\"",
    );
    one_error(
        &component_keys("ready = { kind = \"redis\" }", "tiers = []"),
        "infra.redis.tiers is empty",
    );
    one_error(
        &component_keys("ready = { kind = \"redis\" }", "tiers = [\"e2e\", \"e2e\"]"),
        "infra.redis.tiers: `e2e` is listed twice",
    );
    // Needed for sure by a component that may run in integration: reported at that need.
    let text = with(PROM).replace(
        "needs = [\"migrate\", \"redis\"]",
        "needs = [\"migrate\", \"redis\", \"prom\"]",
    );
    one_error(
        &text,
        "services.store.needs: `store` may run in both tiers but `prom` runs in e2e only",
    );
    // Needed optionally: each integration stack that keeps it is refused.
    let text = with(PROM).replace(
        "needs = [\"migrate\", \"redis\"]",
        "needs = [\"migrate\", \"redis\", \"prom\"]\noptional = [\"prom\"]",
    );
    let e = errors(&text);
    assert!(e.contains("2 errors"), "{e}");
    assert!(e.contains("consumers.notify.integration: `prom` runs in e2e only (its `tiers`), yet `store` brings it into this stack as an optional need: add `drop = [\"prom\"]`"), "{e}");
    assert!(e.contains("consumers.store.integration: `prom` runs in e2e only (its `tiers`), yet `store` brings it"), "{e}");
    let fixed = text.replace(
        "ports = { postgres = 15433, redis = 16379 }",
        "ports = { postgres = 15433, redis = 16379 }\ndrop = [\"prom\"]",
    ) + "\n[consumers.notify.integration]\ndrop = [\"prom\"]\n";
    let c = parse_str(&fixed).unwrap();
    assert!(c
        .stack("notify", TierName::Integration)
        .unwrap()
        .get("prom")
        .is_none());
    assert!(c
        .stack("notify", TierName::E2e)
        .unwrap()
        .get("prom")
        .is_some());
    // A consumer that may not run in E2E has no E2E stack.
    one_error(
        &component_keys("binary = \"notify\"", "tiers = [\"integration\"]"),
        "consumers.notify.e2e: `notify` runs in integration only (its `tiers`), so it has no e2e stack",
    );
}

#[test]
fn mounts() {
    let m = |v: &str| component_keys("binary = \"notify\"", &format!("mounts = {{ {v} }}"));
    one_error(
        &m("\"etc/x.yaml\" = \"config/x.yaml\""),
        "services.notify.mounts: `etc/x.yaml` must be an absolute path inside the container",
    );
    one_error(
        &m("\"/etc/../x\" = \"config/x.yaml\""),
        "services.notify.mounts: `/etc/../x` must be an absolute path",
    );
    one_error(
        &m("\"/etc/x.yaml\" = \"config/missing.yaml\""),
        "services.notify.mounts.\"/etc/x.yaml\": config/missing.yaml does not exist (paths are relative to /repo)",
    );
    one_error(
        &m("\"/etc/x.yaml\" = \"../x.yaml\""),
        "`../x.yaml` must be a path inside the repository",
    );
    one_error(
        &m("\"/etc/x.yaml\" = \"/etc/passwd\""),
        "`/etc/passwd` must be a path inside the repository",
    );
    one_error(
        &m("\"/etc/x.yaml\" = 3"),
        "invalid type: integer `3`, expected a string",
    );
    let c = parse_str(&m("\"/etc/notify/config.yaml\" = \"config/notify.yaml\", \"/srv/templates\" = \"config/templatesdir\"")).unwrap();
    let mounts = &c.components["notify"].mounts;
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].target, "/etc/notify/config.yaml");
    assert!(!mounts[0].dir);
    assert_eq!(mounts[1].source, PathBuf::from("config/templatesdir"));
    assert!(mounts[1].dir);
    // Jobs may mount too.
    parse_str(&component_keys(
        "args = [\"migrate\"]",
        "mounts = { \"/m\" = \"migrations/dir\" }",
    ))
    .unwrap();
}

#[test]
fn command_and_args() {
    one_error(
        &component_keys("image = \"redis\"", "command = []"),
        "infra.redis.command is empty; leave it out to keep the image's entrypoint",
    );
    one_error(
        &component_keys("image = \"redis\"", "command = \"redis-server\""),
        "invalid type: string \"redis-server\", expected a sequence",
    );
    let c = parse_str(&component_keys(
        "image = \"redis\"",
        "command = [\"redis-server\"]\nargs = [\"--save\", \"\"]",
    ))
    .unwrap();
    assert_eq!(c.components["redis"].command, ["redis-server"]);
    assert_eq!(c.components["redis"].args, ["--save", ""]);
}

/// A self-building Dockerfile component: no package, no binary.
const MOCK: &str = "\n[services.mock-llm]\ndockerfile = \"mocks/mock-llm/Dockerfile\"\nport = 8080\nready = { kind = \"http\", path = \"/health\" }\n";

#[test]
fn build_context() {
    let c = parse_str(&with(MOCK)).unwrap();
    assert_eq!(
        c.components["mock-llm"].source,
        Source::Dockerfile {
            dockerfile: "mocks/mock-llm/Dockerfile".into(),
            context: "mocks/mock-llm".into()
        },
        "the default context is the Dockerfile's folder"
    );
    let c = parse_str(&with(&format!(
        "{MOCK}build_context = \"mocks/shareddir\"\n"
    )))
    .unwrap();
    assert!(
        matches!(&c.components["mock-llm"].source, Source::Dockerfile { context, .. } if context == Path::new("mocks/shareddir"))
    );
    one_error(
        &with(&format!("{MOCK}build_context = \"mocks/missingdir\"\n")),
        "services.mock-llm.build_context: mocks/missingdir does not exist",
    );
    one_error(
        &with(&format!("{MOCK}build_context = \"mocks/file.txt\"\n")),
        "services.mock-llm.build_context: mocks/file.txt is a file; name a folder",
    );
    one_error(
        &with(&format!("{MOCK}build_context = \"..\"\n")),
        "services.mock-llm.build_context: `..` must be a path inside the repository",
    );
    one_error(
        &component_keys("binary = \"notify\"", "build_context = \"servicesdir\""),
        "services.notify.build_context: a Rust service's build context is assembled by cargo xtask",
    );
    one_error(
        &with(&format!("{MOCK}package = \"mock\"\n")),
        "services.mock-llm: a Rust service needs both `package` and `binary`",
    );
    one_error(
        &with(&format!("{MOCK}context = [\"x\"]\n")),
        "services.mock-llm.context: extra context paths are for Rust services",
    );
    one_error(
        &with(&format!("{MOCK}dockerfile = \"x\"\n")),
        "duplicate key",
    );
}

#[test]
fn build_args() {
    let c = parse_str(&with(&format!(
        "{MOCK}build_args = {{ GREETING = \"hi\", http_proxy = \"\" }}\n"
    )))
    .unwrap();
    assert_eq!(c.components["mock-llm"].build_args["GREETING"], "hi");
    let c = parse_str(&component_keys(
        "binary = \"notify\"",
        "build_args = { FEATURES = \"x\" }",
    ))
    .unwrap();
    assert_eq!(c.components["notify"].build_args["FEATURES"], "x");
    one_error(
        &with(&format!("{MOCK}build_args = {{ 1X = \"a\" }}\n")),
        "services.mock-llm.build_args: `1X` is not a build argument name",
    );
    one_error(
        &component_keys("binary = \"notify\"", "build_args = { BASE_IMAGE = \"x\" }"),
        "services.notify.build_args: `BASE_IMAGE` is set by cargo xtask itself",
    );
    one_error(
        &component_keys("image = \"redis\"", "build_args = { A = \"b\" }"),
        "infra.redis: `build_args` belongs in [services.*], not [infra.*]",
    );
    one_error(
        &with(&format!("{MOCK}build_args = {{ A = 1 }}\n")),
        "invalid type: integer `1`, expected a string",
    );
}

#[test]
fn standin() {
    one_error(
        &variant("standin = \"postgres\"", "standin = \"postgress\""),
        "images.postgres.standin: `postgress` is not a stand-in recipe (did you mean `postgres`?); known: postgres, redis, runtime, registry",
    );
    one_error(
        &variant("env = \"XTASK_IMAGE_POSTGRES\"", "env = \"xtask_image\""),
        "images.postgres.env: `xtask_image` is not an environment variable name",
    );
}

#[test]
fn hyphenated_names_everywhere() {
    let text = rename(GOOD, "redis", "redis-cache")
        .replace("[images.redis-cache]", "[images.redis-img]")
        .replace("image = \"redis-cache\"", "image = \"redis-img\"");
    let text = rename(&text, "migrate", "db-migrate")
        .replace("args = [\"db-migrate\"]", "args = [\"migrate\"]");
    let text = rename(&text, "metrics", "grpc-web");
    let c = parse_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.components.contains_key("redis-cache"));
    assert!(c.images.contains_key("redis-img"));
    let s = c.stack("notify", TierName::Integration).unwrap();
    assert_eq!(
        s.names(),
        ["postgres", "db-migrate", "redis-cache", "store"]
    );
    let ports = &c.consumers["notify"].integration.as_ref().unwrap().ports;
    assert_eq!(ports[&PortRef::parse("redis-cache")], 16385);
    assert_eq!(
        PortRef::parse("store.grpc-web").env_var(),
        "STORE_GRPC_WEB_URL"
    );
    // Underscores are not DNS: refused.
    let e = errors(&rename(GOOD, "redis", "redis_cache"));
    assert!(e.contains("component name `redis_cache` must be"), "{e}");
}

#[test]
fn derived_name_limits() {
    // The container name `{consumer}_{component}_test` is resolved through DNS.
    let consumer = "c".repeat(32);
    let component = "r".repeat(30);
    let text = rename(GOOD, "redis", &component).replacen(
        "[consumers.store.integration]",
        &format!("[consumers.{consumer}.integration]\ntest = [\"t\"]\nadd = [\"{component}\"]\nports = {{ {component} = 17000 }}\n\n[consumers.store.integration]"),
        1,
    );
    one_error(
        &text,
        "the container name `cccccccccccccccccccc...` is 68 characters; other containers reach it by that name through DNS, whose labels hold at most 63",
    );
    // Port names are Kubernetes port names.
    one_error(
        &variant(
            "extra_ports = { metrics = 9090 }",
            "extra_ports = { metrics-and-more = 9090 }",
        )
        .replace("store.metrics", "store.metrics-and-more"),
        "port name `metrics-and-more` must be at most 15",
    );
    one_error(
        &variant(
            "extra_ports = { metrics = 9090 }",
            "extra_ports = { metrics = 9090, main = 9091 }",
        ),
        "port name `main` is taken by the main port",
    );
    // Tests find ports by `{COMPONENT}[_{PORT}]_URL`: two ports may not share one.
    let text = with("[services.store-metrics]\ndockerfile = \"d/Dockerfile\"\nport = 1\nready = { kind = \"tcp\" }\n");
    one_error(
        &text,
        "tests would find both `store-metrics` and `store.metrics`",
    );
    // Env keys are variable names.
    one_error(
        &variant("DATABASE_URL =", "database_url ="),
        "services.store.env: `database_url` is not an environment variable name",
    );
}
