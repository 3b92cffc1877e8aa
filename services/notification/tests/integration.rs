//! Integration tests of Notification: the service runs in-process; DataStorage (with its
//! PostgreSQL and Redis) is real. Environment: `DATASTORAGE_URL`, `DATASTORAGE_METRICS_URL`,
//! `POSTGRES_URL`, `REDIS_URL`. Run by `cargo xtask integration notification`.

use notification::{Config, Running};
use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{
    audit_events, closed_addr, env_map, eventually, get_json, get_text, host_port,
    postgres_audit_event_types, required_env, via_proxy, wait_for_audit, TcpProxy,
};
use uuid::Uuid;

mod support;
use support::send;

const HOW: &str = "`cargo xtask integration notification`";

fn env(name: &str) -> String {
    required_env(name, HOW)
}

async fn start(
    datastorage_url: &str,
    extra: &[(&str, &str)],
) -> (Running, String, std::path::PathBuf) {
    svc_common::logging::init_for_tests();
    let dir = std::env::temp_dir().join(format!("notification-it-{}", Uuid::new_v4()));
    let map = env_map(
        &[
            ("DATASTORAGE_URL", datastorage_url),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("NOTIFICATION_FILE_DIR", &dir.to_string_lossy()),
            ("AUDIT_FLUSH_INTERVAL_MS", "50"),
            ("DELIVERY_BACKOFF_MS", "20"),
        ],
        extra,
    );
    let config = Config::from_map(&map).expect("valid test configuration");
    let running = notification::start(config)
        .await
        .expect("notification starts");
    let base = format!("http://{}", running.addr());
    (running, base, dir)
}

async fn wait_final(base: &str, id: &str) -> Value {
    support::wait_final(base, id, Duration::from_secs(30)).await
}

#[tokio::test]
#[ignore = "needs DataStorage, PostgreSQL and Redis: run by `cargo xtask integration notification`"]
async fn file_and_console_notifications_are_sent_and_audited() {
    let ds = env("DATASTORAGE_URL");
    let (running, base, dir) = start(&ds, &[]).await;
    let (status, _) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "DataStorage reachable");

    let corr = format!("it-notif-file-{}", Uuid::new_v4());
    let (status, body) = send(&base, json!({"channel": "file", "recipients": ["ops/team", "sre"], "subject": "disk", "body": "full", "correlation_id": corr})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let id = body["id"].as_str().unwrap().to_string();
    let rec = wait_final(&base, &id).await;
    assert_eq!(rec["status"], "sent", "{rec}");
    assert!(rec["attempts"].as_u64().unwrap() >= 1);
    assert_eq!(rec["channel"], "file");
    assert_eq!(rec["correlation_id"], corr.as_str());
    let line =
        std::fs::read_to_string(dir.join("ops_team.log")).expect("file channel wrote ops_team.log");
    let line: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(line["correlation_id"], corr.as_str());
    assert!(dir.join("sre.log").exists());

    let events = wait_for_audit(
        &ds,
        &corr,
        "notification.message.sent",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events[0]["resource_id"], id.as_str());
    assert_eq!(events[0]["event_category"], "notification");
    assert_eq!(events[0]["event_outcome"], "success");

    // Without a correlation id the notification id is used.
    let (status, body) = send(
        &base,
        json!({"channel": "console", "recipients": ["oncall"], "subject": "s", "body": "b"}),
    )
    .await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["correlation_id"], id.as_str());
    assert_eq!(wait_final(&base, &id).await["status"], "sent");
    let events = wait_for_audit(
        &ds,
        &id,
        "notification.message.sent",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events[0]["event_data"]["channel"], "console");

    // The row really is in PostgreSQL, and DataStorage counted it.
    let rows = postgres_audit_event_types(&env("POSTGRES_URL"), &corr).await;
    assert_eq!(rows.len(), 1);
    let metrics = get_text(&format!("{}/metrics", env("DATASTORAGE_METRICS_URL"))).await;
    let written = svc_common::metrics::parse_value(
        &metrics,
        "datastorage_events_written_total",
        "{path=\"direct\"}",
    )
    .unwrap_or(0.0)
        + svc_common::metrics::parse_value(
            &metrics,
            "datastorage_events_written_total",
            "{path=\"dlq_replay\"}",
        )
        .unwrap_or(0.0);
    assert!(written >= 2.0, "{metrics}");

    running.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
#[ignore = "needs DataStorage, PostgreSQL and Redis: run by `cargo xtask integration notification`"]
async fn webhooks_are_delivered_or_fail_after_max_attempts() {
    let ds = env("DATASTORAGE_URL");
    let (running, base, _dir) = start(&ds, &[("DELIVERY_MAX_ATTEMPTS", "3")]).await;

    // A live receiver.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let corr = format!("it-notif-hook-{}", Uuid::new_v4());
    let (status, body) = send(&base, json!({"channel": "webhook", "recipients": [hook], "subject": "s", "body": "b", "correlation_id": corr})).await;
    assert_eq!(status, 202);
    let rec = wait_final(&base, body["id"].as_str().unwrap()).await;
    assert_eq!(rec["status"], "sent", "{rec}");
    let got = rx.recv().await.unwrap();
    assert_eq!(got["correlation_id"], corr.as_str());

    // A dead port.
    let dead = format!("http://{}/hook", closed_addr().await);
    let corr = format!("it-notif-dead-{}", Uuid::new_v4());
    let (status, body) = send(&base, json!({"channel": "webhook", "recipients": [dead], "subject": "s", "body": "b", "correlation_id": corr})).await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_string();
    let rec = wait_final(&base, &id).await;
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(rec["attempts"], 3);
    assert!(rec["last_error"].as_str().unwrap().contains(&dead), "{rec}");
    let events = wait_for_audit(
        &ds,
        &corr,
        "notification.message.failed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events[0]["event_outcome"], "failure");
    assert_eq!(events[0]["event_data"]["attempts"], 3);
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs DataStorage, PostgreSQL and Redis: run by `cargo xtask integration notification`"]
async fn audit_events_wait_while_datastorage_is_down() {
    let ds = env("DATASTORAGE_URL");
    let proxy = TcpProxy::start(&host_port(&ds)).await.unwrap();
    let (running, base, _dir) = start(&via_proxy(&ds, &proxy), &[]).await;
    proxy.cut();
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["unavailable"], json!(["datastorage"]));

    let mut corrs = Vec::new();
    for _ in 0..3 {
        let corr = format!("it-notif-down-{}", Uuid::new_v4());
        let (status, body) = send(&base, json!({"channel": "console", "recipients": ["oncall"], "subject": "s", "body": "b", "correlation_id": corr})).await;
        assert_eq!(status, 202);
        assert_eq!(
            wait_final(&base, body["id"].as_str().unwrap()).await["status"],
            "sent"
        );
        corrs.push(corr);
    }
    // Held in the buffer, not in DataStorage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(running.audit_pending(), 3);
    assert!(audit_events(&ds, &corrs[0], "notification.message.sent")
        .await
        .is_empty());

    proxy.restore();
    for corr in &corrs {
        wait_for_audit(
            &ds,
            corr,
            "notification.message.sent",
            Duration::from_secs(30),
        )
        .await;
    }
    eventually(
        "the audit buffer to empty",
        Duration::from_secs(10),
        || async { (running.audit_pending() == 0).then_some(()) },
    )
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs DataStorage, PostgreSQL and Redis: run by `cargo xtask integration notification`"]
async fn shutdown_flushes_buffered_audit_events() {
    let ds = env("DATASTORAGE_URL");
    // A long flush interval: only the shutdown flush can deliver the event in time.
    let (running, base, _dir) = start(&ds, &[("AUDIT_FLUSH_INTERVAL_MS", "600000")]).await;
    let corr = format!("it-notif-flush-{}", Uuid::new_v4());
    let (status, body) = send(&base, json!({"channel": "console", "recipients": ["a"], "subject": "s", "body": "b", "correlation_id": corr})).await;
    assert_eq!(status, 202);
    wait_final(&base, body["id"].as_str().unwrap()).await;
    running.shutdown().await.unwrap();
    let events = audit_events(&ds, &corr, "notification.message.sent").await;
    assert_eq!(events.len(), 1, "flushed on shutdown");
}
