//! Integration tests of DataStorage against real PostgreSQL and Redis; the service runs
//! in-process on `127.0.0.1:0`. Environment: `POSTGRES_URL` (migrations already applied) and
//! `REDIS_URL` (one test runs DataStorage without Redis). Run by
//! `cargo xtask integration datastorage`.

use datastorage::{Config, Running};
use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{
    env_map, eventually, field_names, get_json, get_text, http, post_json, via_proxy, TcpProxy,
};
use uuid::Uuid;

const HOW: &str = "`cargo xtask integration datastorage`";

fn required_env(name: &str) -> String {
    svc_common::testing::required_env(name, HOW)
}

fn config(database_url: &str, extra: &[(&str, &str)]) -> Config {
    // Each test gets its own dead-letter list so parallel tests do not drain each other's.
    let dlq_key = format!("datastorage:dlq:test:{}", Uuid::new_v4());
    let map = env_map(
        &[
            ("DATABASE_URL", database_url),
            ("REDIS_URL", &required_env("REDIS_URL")),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("DLQ_REDIS_KEY", &dlq_key),
        ],
        extra,
    );
    Config::from_map(&map).expect("test configuration is valid")
}

async fn start(database_url: &str, extra: &[(&str, &str)]) -> (Running, String) {
    svc_common::logging::init_for_tests();
    let running = datastorage::start(config(database_url, extra))
        .await
        .expect("datastorage starts");
    let base = format!("http://{}", running.addr());
    (running, base)
}

fn event(correlation_id: &str, event_type: &str, ts: &str) -> Value {
    json!({
        "event_type": event_type,
        "event_category": "test",
        "event_action": "check",
        "event_outcome": "success",
        "correlation_id": correlation_id,
        "event_timestamp": ts,
        "event_data": {"ts": ts},
    })
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    post_json(&format!("{base}{path}"), body).await
}

async fn query(base: &str, q: &str) -> (u16, Value) {
    get_json(&format!("{base}/api/v1/audit/events?{q}")).await
}

fn timestamps(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["event_timestamp"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    svc_common::metrics::parse_value(&text, name, "")
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn events_are_stored_and_queried_newest_first() {
    let (running, base) = start(&required_env("POSTGRES_URL"), &[]).await;
    let corr = format!("it-query-{}", Uuid::new_v4());
    let times = [
        "2024-01-01T00:00:01Z",
        "2024-01-01T00:00:03Z",
        "2024-01-01T00:00:02Z",
        "2024-01-01T00:00:05Z",
        "2024-01-01T00:00:04Z",
    ];
    for (i, ts) in times.iter().enumerate() {
        let kind = if i % 2 == 0 { "test.even" } else { "test.odd" };
        let (status, body) = post(&base, "/api/v1/audit/events", &event(&corr, kind, ts)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "stored");
        assert!(Uuid::parse_str(body["event_id"].as_str().unwrap()).is_ok());
    }
    let (status, body) = query(&base, &format!("correlation_id={corr}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 5);
    assert_eq!(
        timestamps(&body),
        vec![
            "2024-01-01T00:00:05Z",
            "2024-01-01T00:00:04Z",
            "2024-01-01T00:00:03Z",
            "2024-01-01T00:00:02Z",
            "2024-01-01T00:00:01Z"
        ]
    );
    assert_eq!(
        body["events"][0]["event_data"],
        json!({"ts": "2024-01-01T00:00:05Z"})
    );

    let (_, body) = query(&base, &format!("correlation_id={corr}&limit=2")).await;
    assert_eq!(
        timestamps(&body),
        vec!["2024-01-01T00:00:05Z", "2024-01-01T00:00:04Z"]
    );

    let (_, body) = query(&base, &format!("correlation_id={corr}&event_type=test.odd")).await;
    assert_eq!(
        timestamps(&body),
        vec!["2024-01-01T00:00:05Z", "2024-01-01T00:00:03Z"]
    );
    assert!(body["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["event_type"] == "test.odd"));

    let (status, body) = query(&base, &format!("correlation_id={corr}&limit=100000")).await;
    assert_eq!(status, 400);
    assert_eq!(body["fields"][0]["field"], "limit");

    let (_, body) = query(&base, &format!("correlation_id=nobody-{}", Uuid::new_v4())).await;
    assert_eq!(body["count"], 0);
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn batches_are_stored_all_together_and_idempotently() {
    let (running, base) = start(&required_env("POSTGRES_URL"), &[]).await;
    let corr = format!("it-batch-{}", Uuid::new_v4());
    let mut events: Vec<Value> = (1..=3)
        .map(|i| event(&corr, "test.batch", &format!("2024-02-01T00:00:0{i}Z")))
        .collect();
    for e in &mut events {
        e["event_id"] = json!(Uuid::new_v4().to_string());
    }
    let (status, body) = post(&base, "/api/v1/audit/events/batch", &json!(events)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["count"], 3);
    assert_eq!(body["event_ids"][0], events[0]["event_id"]);

    // The same events again (a client retry): accepted, not duplicated.
    let (status, _) = post(&base, "/api/v1/audit/events/batch", &json!(events)).await;
    assert_eq!(status, 201);
    let (_, body) = query(&base, &format!("correlation_id={corr}")).await;
    assert_eq!(body["count"], 3);

    // One bad event refuses the whole batch, naming it.
    let mut bad = events.clone();
    bad[1]["event_outcome"] = json!("meh");
    bad[2] = json!({"event_type": "x"});
    let (status, body) = post(&base, "/api/v1/audit/events/batch", &json!(bad)).await;
    assert_eq!(status, 400);
    let fields = field_names(&body);
    assert!(fields.contains(&"events[1].event_outcome"), "{body}");
    assert!(fields.contains(&"events[2].correlation_id"), "{body}");

    let text = get_text(&format!("http://{}/metrics", running.metrics_addr())).await;
    assert!(
        text.contains("datastorage_events_written_total{path=\"direct\"} 3"),
        "{text}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn readiness_health_and_error_bodies() {
    let (running, base) = start(&required_env("POSTGRES_URL"), &[]).await;
    assert_eq!(get_json(&format!("{base}/readyz")).await.0, 200);
    assert_eq!(get_json(&format!("{base}/healthz")).await.0, 200);
    let (status, body) = get_json(&format!("{base}/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no such route");
    let res = http()
        .put(format!("{base}/api/v1/audit/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let big = "x".repeat((1 << 20) + 10);
    let res = http()
        .post(format!("{base}/api/v1/audit/events"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    running.shutdown().await.unwrap();
}

/// The database URL with another database name.
fn with_database(url: &str, db: &str) -> String {
    let mut u = reqwest::Url::parse(url).expect("POSTGRES_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&required_env("POSTGRES_URL"), tokio_postgres::NoTls)
            .await
            .expect("connect to POSTGRES_URL");
    tokio::spawn(conn);
    client
}

fn copy_migrations() -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let dst = std::env::temp_dir().join(format!("ds-it-migrations-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn migrate_is_idempotent_serialised_and_refuses_edited_files() {
    svc_common::logging::init_for_tests();
    let admin = admin_client().await;
    let db = format!("ds_migrate_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("CREATE DATABASE (needs CREATEDB)");
    let url = with_database(&required_env("POSTGRES_URL"), &db);
    let dir = copy_migrations();

    let (url2, dir2) = (url.clone(), dir.clone());
    let outcome = async move {
        let (url, dir) = (url2, dir2);
        // Two migrators at once: the advisory lock makes one wait; each file is applied once.
        let (a, b) = tokio::join!(
            datastorage::migrate::run(&url, &dir),
            datastorage::migrate::run(&url, &dir)
        );
        let (a, b) = (a.expect("first migrator"), b.expect("second migrator"));
        let total = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(a.applied.len() + b.applied.len(), total, "{a} / {b}");
        let again = datastorage::migrate::run(&url, &dir)
            .await
            .expect("third run");
        assert!(again.applied.is_empty());
        assert!(again.to_string().contains("nothing to do"), "{again}");

        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), total);
        let name: String = rows[0].get(1);
        let sum: String = rows[0].get(2);
        assert_eq!(name, "0001_audit_events.sql");
        assert_eq!(
            sum,
            datastorage::migrate::checksum(&std::fs::read(dir.join(&name)).unwrap())
        );
        drop(client);

        // Edit an applied file: refused, naming the file and both checksums.
        let file = dir.join("0001_audit_events.sql");
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("\n-- edited\n");
        std::fs::write(&file, &text).unwrap();
        let err = datastorage::migrate::run(&url, &dir)
            .await
            .expect_err("edited migration is refused")
            .to_string();
        assert!(err.contains("0001_audit_events.sql was edited"), "{err}");
        assert!(err.contains(&sum), "{err}");
        assert!(
            err.contains(&datastorage::migrate::checksum(text.as_bytes())),
            "{err}"
        );

        // A gap is refused before touching the database.
        std::fs::write(dir.join("0005_later.sql"), "SELECT 1;").unwrap();
        let err = datastorage::migrate::run(&url, &dir)
            .await
            .expect_err("gap is refused")
            .to_string();
        assert!(err.contains("is missing"), "{err}");
    };
    let result = tokio::spawn(outcome).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn pg_host_port(url: &str) -> String {
    let u = reqwest::Url::parse(url).expect("POSTGRES_URL is a URL");
    format!(
        "{}:{}",
        u.host_str().unwrap_or("localhost"),
        u.port().unwrap_or(5432)
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn dead_letter_queue_holds_events_while_postgres_is_cut() {
    let pg = required_env("POSTGRES_URL");
    let proxy = TcpProxy::start(&pg_host_port(&pg)).await.unwrap();
    let (running, base) = start(&via_proxy(&pg, &proxy), &[("DLQ_RETRY_INTERVAL_MS", "200")]).await;
    let corr = format!("it-dlq-{}", Uuid::new_v4());

    let (status, _) = post(
        &base,
        "/api/v1/audit/events",
        &event(&corr, "test.dlq", "2024-03-01T00:00:00Z"),
    )
    .await;
    assert_eq!(
        status, 201,
        "PostgreSQL reachable through the proxy at first"
    );

    proxy.cut();
    for i in 1..=3 {
        let (status, body) = post(
            &base,
            "/api/v1/audit/events",
            &event(&corr, "test.dlq", &format!("2024-03-01T00:00:0{i}Z")),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "queued");
    }
    let batch = json!([
        event(&corr, "test.dlq", "2024-03-01T00:00:08Z"),
        event(&corr, "test.dlq", "2024-03-01T00:00:09Z")
    ]);
    let (status, body) = post(&base, "/api/v1/audit/events/batch", &batch).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["count"], 2);

    let depth = metric(&base, "datastorage_dlq_depth").await.unwrap_or(0.0);
    assert!(depth >= 5.0, "dead-letter depth while cut: {depth}");
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["unavailable"], json!(["postgres"]), "{body}");
    let (status, _) = query(&base, &format!("correlation_id={corr}")).await;
    assert_eq!(status, 503, "queries need PostgreSQL");

    proxy.restore();
    eventually(
        "the queued events are replayed into PostgreSQL",
        Duration::from_secs(20),
        || async {
            let (status, body) = query(&base, &format!("correlation_id={corr}")).await;
            (status == 200 && body["count"] == 6).then_some(())
        },
    )
    .await;
    eventually(
        "the dead-letter depth returns to 0",
        Duration::from_secs(10),
        || async { (metric(&base, "datastorage_dlq_depth").await == Some(0.0)).then_some(()) },
    )
    .await;
    let replayed = svc_common::metrics::parse_value(
        &get_text(&format!("{base}/metrics")).await,
        "datastorage_events_written_total",
        "{path=\"dlq_replay\"}",
    );
    assert_eq!(replayed, Some(5.0));
    assert_eq!(get_json(&format!("{base}/readyz")).await.0, 200);
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: run by `cargo xtask integration datastorage`"]
async fn queued_events_survive_a_restart() {
    let pg = required_env("POSTGRES_URL");
    let proxy = TcpProxy::start(&pg_host_port(&pg)).await.unwrap();
    proxy.cut();
    let dlq_key = format!("datastorage:dlq:test:{}", Uuid::new_v4());
    let extra = [
        ("DLQ_RETRY_INTERVAL_MS", "200"),
        ("DLQ_REDIS_KEY", dlq_key.as_str()),
    ];
    let (first, base) = start(&via_proxy(&pg, &proxy), &extra).await;
    let corr = format!("it-restart-{}", Uuid::new_v4());
    let (status, body) = post(
        &base,
        "/api/v1/audit/events",
        &event(&corr, "test.restart", "2024-04-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    first.shutdown().await.unwrap();

    // A new instance with a working database finds the event in Redis and stores it.
    let (second, base) = start(&pg, &extra).await;
    eventually(
        "the event queued by the first instance is stored by the second",
        Duration::from_secs(20),
        || async {
            let (status, body) = query(&base, &format!("correlation_id={corr}")).await;
            (status == 200 && body["count"] == 1).then_some(())
        },
    )
    .await;
    second.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by `cargo xtask integration datastorage`"]
async fn without_redis_writes_are_stored_or_refused_never_queued() {
    svc_common::logging::init_for_tests();
    let pg = required_env("POSTGRES_URL");
    let proxy = TcpProxy::start(&pg_host_port(&pg)).await.unwrap();
    // No REDIS_URL: no dead-letter queue (a consumer that drops Redis runs DataStorage so).
    let map = env_map(
        &[
            ("DATABASE_URL", &via_proxy(&pg, &proxy)),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ],
        &[],
    );
    let running = datastorage::start(Config::from_map(&map).expect("valid without REDIS_URL"))
        .await
        .expect("datastorage starts without Redis");
    let base = format!("http://{}", running.addr());
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["checks"].get("redis").is_none(), "{body}");

    let corr = format!("it-noredis-{}", Uuid::new_v4());
    let (status, body) = post(
        &base,
        "/api/v1/audit/events",
        &event(&corr, "test.noredis", "2024-05-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    proxy.cut();
    let (status, body) = post(
        &base,
        "/api/v1/audit/events",
        &event(&corr, "test.noredis", "2024-05-01T00:00:01Z"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the dead-letter queue is disabled"),
        "{body}"
    );
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["unavailable"], json!(["postgres"]), "{body}");

    proxy.restore();
    eventually("PostgreSQL is back", Duration::from_secs(20), || async {
        (get_json(&format!("{base}/readyz")).await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = query(&base, &format!("correlation_id={corr}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1, "only the acknowledged event: {body}");
    assert_eq!(metric(&base, "datastorage_dlq_depth").await, Some(0.0));
    running.shutdown().await.unwrap();
}
