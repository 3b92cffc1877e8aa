//! Tests of the plan: fixtures from the repository's own infra.toml.

use super::*;
use crate::plan::stack::tests::{facts, repo_config};

#[test]
fn jobs_run_the_image_of_their_service_even_outside_the_stack() {
    let p = plan_for("datastorage");
    assert!(p.nodes.iter().any(|n| n.id == "image:datastorage"));
    // The consumer's own image: its service tag (as on E2E runs).
    assert_eq!(
        container(&p, "migrations").image,
        "localhost/datastorage:datastorage-alice-abc1234-1734278400"
    );
}

fn plan_args(consumer: &str, args: &[String]) -> Plan {
    plan_with(consumer, args, &crate::plan::NO_SNAPSHOTS)
}

fn plan_with(
    consumer: &str,
    args: &[String],
    snapshots: &std::collections::BTreeMap<String, crate::plan::Snapshot>,
) -> Plan {
    let env = |k: &str| {
        (k == "XTASK_IMAGE_POSTGRES")
            .then(|| "localhost/xtask-standin/postgres:15-bookworm".to_string())
    };
    let (config, facts) = (repo_config(), facts());
    let run = Run {
        config: &config,
        consumer,
        facts: &facts,
        runs_dir: std::path::Path::new("/repo/target/xtask/runs"),
        pid: 42,
        env: &env,
        snapshots,
    };
    plan(&run, args).unwrap()
}

#[test]
fn a_warm_stack_starts_postgres_from_the_cached_data_image_while_the_run_names_it() {
    let (data, snapshots) = crate::plan::stack::tests::postgres_data_hit();
    let p = plan_with("notification", &[], &snapshots);
    // Not behind the tag: the container holds the image from its start.
    assert_eq!(container(&p, "postgres").image, data);
    assert_eq!(node(&p, "postgres").deps, ["network"]);
    let Step::NameData { source, reference } = &node(&p, "data:postgres").action else {
        panic!("data:postgres does not name the data image");
    };
    assert_eq!(source, data);
    assert!(
        reference.contains("postgres-data:notification-"),
        "{reference}"
    );
    assert!(node(&p, "data:postgres").deps.is_empty());
    // The migrations are verified by the key, and DataStorage waits for that.
    assert!(matches!(
        node(&p, "migrations").action,
        Step::Verified { .. }
    ));
    assert!(node(&p, "datastorage")
        .deps
        .contains(&"migrations".to_string()));
    assert!(p.nodes.iter().all(|n| !n.id.starts_with("snapshot:")));
}

fn plan_for(consumer: &str) -> Plan {
    plan_args(consumer, &[])
}

fn node<'a>(p: &'a Plan, id: &str) -> &'a Node<Step> {
    p.nodes
        .iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("no task {id}"))
}

fn container(p: &Plan, id: &str) -> ContainerSpec {
    match &node(p, id).action {
        Step::Container { spec, .. } => spec.clone(),
        other => panic!("{id} is {other:?}"),
    }
}

#[test]
fn redis_does_not_wait_for_postgres() {
    let p = plan_for("notification");
    assert_eq!(node(&p, "redis").deps, ["network"]);
    assert_eq!(node(&p, "postgres").deps, ["network"]);
    assert_eq!(
        node(&p, "migrations").deps,
        ["network", "postgres", "image:datastorage"]
    );
    assert_eq!(
        node(&p, "datastorage").deps,
        ["network", "migrations", "redis", "image:datastorage"]
    );
    assert_eq!(node(&p, "image:datastorage").deps, ["compile"]);
    assert_eq!(node(&p, "compile-tests").deps, ["compile"]);
}

#[test]
fn one_tag_per_run_everywhere() {
    let p = plan_for("gateway");
    let reference = "localhost/datastorage:gateway-1884d074";
    match &node(&p, "image:datastorage").action {
        Step::Image(b) => assert_eq!(b.spec().reference, reference),
        _ => unreachable!(),
    }
    assert_eq!(container(&p, "datastorage").image, reference);
    assert_eq!(
        container(&p, "migrations").image,
        reference,
        "the job runs the same image"
    );
    assert_eq!(
        container(&p, "notification").image,
        "localhost/notification:gateway-1884d074"
    );
    assert_eq!(
        container(&p, "postgres").image,
        "localhost/xtask-standin/postgres:15-bookworm",
        "env override"
    );
    assert_eq!(
        container(&p, "redis").image,
        "docker.io/library/redis:7-bookworm"
    );
}

#[test]
fn containers_reach_each_other_by_name_and_internal_port() {
    let p = plan_for("notification");
    let ds = container(&p, "datastorage");
    assert_eq!(ds.name, "notification_datastorage_test");
    assert_eq!(ds.network, "notification_test_network");
    assert_eq!(ds.env["REDIS_URL"], "redis://notification_redis_test:6379");
    assert_eq!(ds.publish, vec![(18096, 8080), (19096, 9090)]);
    let pg = container(&p, "postgres");
    assert_eq!(pg.env["POSTGRES_DB"], "action_history");
    assert_eq!(pg.publish, vec![(15440, 5432)]);
    let job = container(&p, "migrations");
    assert!(matches!(
        node(&p, "migrations").action,
        Step::Container { job: true, .. }
    ));
    assert!(matches!(
        node(&p, "datastorage").action,
        Step::Container { job: false, .. }
    ));
    assert_eq!(job.args, ["migrate"]);
    assert!(job.publish.is_empty());
    assert_eq!(p.tests.env["DATASTORAGE_URL"], "http://localhost:18096");
    assert_eq!(p.tests.env["XTASK_RUN_ID"], "1884d074a1b2");
}

#[test]
fn everything_carries_the_run_labels() {
    let p = plan_for("notification");
    for n in &p.nodes {
        let labels = match &n.action {
            Step::Container { spec, .. } => &spec.labels,
            Step::Image(b) => &b.spec().labels,
            Step::Network { labels, .. } => labels,
            _ => continue,
        };
        assert_eq!(labels[crate::plan::labels::RUN], "1884d074a1b2", "{}", n.id);
        assert_eq!(labels[crate::plan::labels::OWNER], "alice", "{}", n.id);
        assert_eq!(labels[crate::plan::labels::TIER], "integration", "{}", n.id);
        assert_eq!(labels[crate::plan::labels::PID], "42", "{}", n.id);
    }
}

#[test]
fn readiness_checks_by_kind() {
    let p = plan_for("notification");
    let probe = |id: &str| match &node(&p, id).action {
        Step::Container { probe, .. } => probe.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        probe("postgres"),
        Some(Probe::Postgres {
            port: 15440,
            user: "slm_user".into(),
            database: "action_history".into(),
        })
    );
    assert_eq!(probe("redis"), Some(Probe::Redis { port: 16385 }));
    assert_eq!(
        probe("datastorage"),
        Some(Probe::Http {
            port: 18096,
            path: "/readyz".into()
        })
    );
    assert_eq!(probe("migrations"), None);
}

#[test]
fn datastorage_runs_its_own_tests_in_process() {
    let p = plan_for("datastorage");
    assert!(
        p.nodes.iter().all(|n| n.id != "datastorage"),
        "the consumer is not in its own stack"
    );
    assert!(p.nodes.iter().any(|n| n.id == "migrations"));
    assert_eq!(
        p.tests.env["POSTGRES_URL"],
        "postgres://slm_user:test_password@localhost:15433/action_history"
    );
    let t = plan_args("datastorage", &["dedup".into()]).tests.argv;
    assert_eq!(
        t[1..],
        [
            "test",
            "--package",
            "datastorage",
            "--test",
            "integration",
            "--",
            "--include-ignored",
            "dedup"
        ]
    );
}

/// The fourth consumer of the repository's file: a self-building mock with `args` and
/// `mounts`, Redis dropped, DataStorage overridden for it alone, its own in-process port.
#[test]
fn holmesgpt_api_gets_its_own_datastorage_a_mock_and_no_redis() {
    let p = plan_for("holmesgpt-api");
    assert!(p.nodes.iter().all(|n| n.id != "redis"), "redis is dropped");
    let ds = container(&p, "datastorage");
    assert!(!ds.env.contains_key("REDIS_URL"), "{:?}", ds.env);
    assert_eq!(ds.env["QUERY_LIMIT_MAX"], "50");
    assert_eq!(
        node(&p, "datastorage").deps,
        ["network", "migrations", "image:datastorage"]
    );
    // Elsewhere DataStorage keeps Redis and its default query limit (1000).
    let other = container(&plan_for("notification"), "datastorage");
    assert!(other.env.contains_key("REDIS_URL"));
    assert!(!other.env.contains_key("QUERY_LIMIT_MAX"));

    let llm = container(&p, "mock-llm");
    assert_eq!(llm.name, "holmesgpt-api_mock-llm_test");
    assert_eq!(llm.image, "localhost/mock-llm:holmesgpt-api-1884d074");
    assert_eq!(llm.args, ["--responses", "/etc/mock-llm/responses.json"]);
    assert_eq!(
        llm.mounts,
        [(
            std::path::PathBuf::from("/repo/mocks/responses.json"),
            "/etc/mock-llm/responses.json".to_string()
        )]
    );
    assert_eq!(llm.publish, vec![(18140, 8080)]);
    match &node(&p, "image:mock-llm").action {
        Step::Image(Build::Dockerfile { spec, .. }) => {
            assert_eq!(spec.context, std::path::Path::new("/repo/mocks"));
            assert_eq!(
                spec.build_args["BASE_IMAGE"],
                "docker.io/library/debian:bookworm-slim"
            );
        }
        other => panic!("mock-llm builds itself: {other:?}"),
    }
    assert!(
        node(&p, "image:mock-llm").deps.is_empty(),
        "no cargo for the mock"
    );
    assert!(p.nodes.iter().all(|n| n.id != "metrics-probe"), "E2E only");

    assert_eq!(p.tests.env["HOLMESGPT_API_API_PORT"], "18120");
    assert_eq!(p.tests.env["MOCK_LLM_URL"], "http://localhost:18140");
    assert!(!p.tests.env.contains_key("REDIS_URL"));
    assert!(p.claims.iter().any(|c| c.port == 18120));
    assert_eq!(
        p.tests.argv,
        [
            "cargo",
            "test",
            "--package",
            "holmesgpt-api",
            "--test",
            "integration",
            "--",
            "--include-ignored"
        ]
    );
}
