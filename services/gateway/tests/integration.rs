//! Integration tests of Gateway: the service runs in-process; Redis, DataStorage and
//! Notification are real. Environment: `REDIS_URL`, `DATASTORAGE_URL`, `NOTIFICATION_URL`,
//! `POSTGRES_URL`, `DATASTORAGE_METRICS_URL`. Run by `cargo xtask integration gateway`.

use gateway::{Config, Running};
use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{
    audit_events, env_map, eventually, get_json, get_text, host_port, post_json,
    postgres_audit_event_types, required_env, via_proxy, wait_for_audit, TcpProxy,
};
use uuid::Uuid;

const HOW: &str = "`cargo xtask integration gateway`";

fn env(name: &str) -> String {
    required_env(name, HOW)
}

async fn start(extra: &[(&str, &str)]) -> (Running, String) {
    svc_common::logging::init_for_tests();
    let map = env_map(
        &[
            ("REDIS_URL", &env("REDIS_URL")),
            ("DATASTORAGE_URL", &env("DATASTORAGE_URL")),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("AUDIT_FLUSH_INTERVAL_MS", "50"),
        ],
        extra,
    );
    let running = gateway::start(Config::from_map(&map).expect("valid test configuration"))
        .await
        .expect("gateway starts");
    let base = format!("http://{}", running.addr());
    (running, base)
}

fn signal(fingerprint: &str, severity: &str) -> Value {
    json!({
        "fingerprint": fingerprint,
        "alertname": "HighLatency",
        "severity": severity,
        "namespace": "it",
        "labels": {"service": "api", "test": "integration"},
    })
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    post_json(&format!("{base}/api/v1/signals"), body).await
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn repeated_signals_are_counted_and_deduplicated() {
    let (running, base) = start(&[]).await;
    let fp = format!("it-fp-seq-{}", Uuid::new_v4());
    let mut corr = None;
    for n in 1..=5 {
        let (status, body) = post(&base, &signal(&fp, "warning")).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["count"], n);
        assert_eq!(body["fingerprint"], fp.as_str());
        assert_eq!(
            body["status"],
            if n == 1 { "accepted" } else { "deduplicated" }
        );
        let c = body["correlation_id"].as_str().unwrap().to_string();
        assert_eq!(
            corr.get_or_insert_with(|| c.clone()),
            &c,
            "one correlation id per window"
        );
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn concurrent_signals_have_exactly_one_accepted() {
    let (running, base) = start(&[]).await;
    let fp = format!("it-fp-conc-{}", Uuid::new_v4());
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (base, body) = (base.clone(), signal(&fp, "info"));
        tasks.push(tokio::spawn(async move { post(&base, &body).await }));
    }
    let mut counts = Vec::new();
    let mut accepted = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 202, "{body}");
        if body["status"] == "accepted" {
            accepted += 1;
        }
        counts.push(body["count"].as_i64().unwrap());
    }
    counts.sort();
    assert_eq!(accepted, 1);
    assert_eq!(counts, (1..=25).collect::<Vec<i64>>());
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn the_window_expires() {
    let (running, base) = start(&[("DEDUP_WINDOW_SECONDS", "1")]).await;
    let fp = format!("it-fp-window-{}", Uuid::new_v4());
    let (_, first) = post(&base, &signal(&fp, "info")).await;
    assert_eq!(first["status"], "accepted");
    let (_, second) = post(&base, &signal(&fp, "info")).await;
    assert_eq!(second["status"], "deduplicated");
    let again = eventually(
        "the 1 s window to expire",
        Duration::from_secs(5),
        || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (_, body) = post(&base, &signal(&fp, "info")).await;
            (body["status"] == "accepted").then_some(body)
        },
    )
    .await;
    assert_eq!(again["count"], 1);
    assert_ne!(
        again["correlation_id"], first["correlation_id"],
        "a new window has a new correlation id"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn signals_are_audited() {
    let ds = env("DATASTORAGE_URL");
    let (running, base) = start(&[]).await;
    let fp = format!("it-fp-audit-{}", Uuid::new_v4());
    let (_, first) = post(&base, &signal(&fp, "warning")).await;
    let (_, _second) = post(&base, &signal(&fp, "warning")).await;
    let corr = first["correlation_id"].as_str().unwrap();
    let received = wait_for_audit(
        &ds,
        corr,
        "gateway.signal.received",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(received[0]["resource_id"], fp.as_str());
    assert_eq!(received[0]["namespace"], "it");
    assert_eq!(received[0]["severity"], "warning");
    assert_eq!(received[0]["event_data"]["labels"]["service"], "api");
    let dedup = wait_for_audit(
        &ds,
        corr,
        "gateway.signal.deduplicated",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dedup[0]["event_data"]["count"], 2);

    // Straight from PostgreSQL too.
    let rows = postgres_audit_event_types(&env("POSTGRES_URL"), corr).await;
    assert_eq!(rows.len(), 2);
    let metrics = get_text(&format!("{}/metrics", env("DATASTORAGE_METRICS_URL"))).await;
    assert!(
        metrics.contains("datastorage_events_written_total"),
        "{metrics}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn critical_signals_are_forwarded_to_notification() {
    let ds = env("DATASTORAGE_URL");
    let notification = env("NOTIFICATION_URL");
    let (running, base) = start(&[("NOTIFICATION_URL", notification.as_str())]).await;
    let fp = format!("it-fp-crit-{}", Uuid::new_v4());
    let (status, body) = post(&base, &signal(&fp, "critical")).await;
    assert_eq!(status, 202, "{body}");
    let corr = body["correlation_id"].as_str().unwrap().to_string();
    // Notification delivered it and audited with the same correlation id.
    let sent = wait_for_audit(
        &ds,
        &corr,
        "notification.message.sent",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sent[0]["event_data"]["recipients"], json!(["oncall"]));
    assert_eq!(
        sent[0]["event_data"]["subject"],
        "[critical] HighLatency in it"
    );
    let forwarded = wait_for_audit(
        &ds,
        &corr,
        "gateway.signal.forwarded",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(forwarded[0]["event_outcome"], "success");

    // A duplicate is not forwarded again.
    let (_, dup) = post(&base, &signal(&fp, "critical")).await;
    assert_eq!(dup["status"], "deduplicated");
    wait_for_audit(
        &ds,
        &corr,
        "gateway.signal.deduplicated",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        audit_events(&ds, &corr, "notification.message.sent")
            .await
            .len(),
        1
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis, DataStorage and Notification: run by `cargo xtask integration gateway`"]
async fn redis_outage_is_503_then_recovers() {
    let redis = env("REDIS_URL");
    let proxy = TcpProxy::start(&host_port(&redis)).await.unwrap();
    let (running, base) = start(&[("REDIS_URL", via_proxy(&redis, &proxy).as_str())]).await;
    let fp = format!("it-fp-outage-{}", Uuid::new_v4());
    let (status, _) = post(&base, &signal(&fp, "info")).await;
    assert_eq!(status, 202);

    proxy.cut();
    let (status, body) = post(&base, &signal(&fp, "info")).await;
    assert_eq!(status, 503, "{body}");
    let (status, ready) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(ready["unavailable"], json!(["redis"]), "{ready}");

    proxy.restore();
    let body = eventually(
        "Gateway to reach Redis again",
        Duration::from_secs(20),
        || async {
            let (status, body) = post(&base, &signal(&fp, "info")).await;
            (status == 202).then_some(body)
        },
    )
    .await;
    assert_eq!(body["count"], 2, "the refused signal was not counted");
    running.shutdown().await.unwrap();
}
