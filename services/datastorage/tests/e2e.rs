//! Black-box tests of a deployed DataStorage: `DATASTORAGE_URL` and `DATASTORAGE_METRICS_URL`
//! point at it. Run by `cargo xtask e2e datastorage`.

use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{field_names, get_json, get_text, http, post_json, required_env};
use uuid::Uuid;

const HOW: &str = "`cargo xtask e2e datastorage`";

fn event(corr: &str, ts: &str) -> Value {
    json!({
        "event_type": "e2e.check",
        "event_category": "e2e",
        "event_action": "check",
        "event_outcome": "success",
        "correlation_id": corr,
        "event_timestamp": ts,
        "event_data": {"ts": ts},
    })
}

async fn wait_ready(base: &str) {
    svc_common::testing::wait_ready(base, Duration::from_secs(60)).await;
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e datastorage`"]
async fn health_readiness_and_metrics() {
    let base = required_env("DATASTORAGE_URL", HOW);
    let metrics_base = required_env("DATASTORAGE_METRICS_URL", HOW);
    wait_ready(&base).await;
    assert_eq!(get_json(&format!("{base}/healthz")).await.0, 200);
    let (_, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert_eq!(body["checks"]["redis"]["ok"], true);
    let text = get_text(&format!("{metrics_base}/metrics")).await;
    for name in [
        "datastorage_events_written_total",
        "datastorage_dlq_depth",
        "http_requests_total",
    ] {
        assert!(
            text.contains(name),
            "{name} missing from {metrics_base}/metrics:\n{text}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e datastorage`"]
async fn events_round_trip_newest_first() {
    let base = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let corr = format!("e2e-ds-{}", Uuid::new_v4());
    let events = format!("{base}/api/v1/audit/events");
    let (status, _) = post_json(&events, &event(&corr, "2024-06-01T00:00:01Z")).await;
    assert_eq!(status, 201);
    let batch = json!([
        event(&corr, "2024-06-01T00:00:03Z"),
        event(&corr, "2024-06-01T00:00:02Z")
    ]);
    let (status, body) = post_json(&format!("{events}/batch"), &batch).await;
    assert_eq!(status, 201);
    assert_eq!(body["count"], 2);

    let (_, body) = get_json(&format!("{events}?correlation_id={corr}&limit=2")).await;
    let times: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_timestamp"].as_str())
        .collect();
    assert_eq!(times, vec!["2024-06-01T00:00:03Z", "2024-06-01T00:00:02Z"]);
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e datastorage`"]
async fn bad_requests_get_json_errors() {
    let base = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let (status, body) = post_json(
        &format!("{base}/api/v1/audit/events"),
        &json!({"event_type": "x", "event_outcome": "maybe", "event_data": "no"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        field_names(&body),
        vec![
            "event_category",
            "event_action",
            "correlation_id",
            "event_outcome",
            "event_data"
        ]
    );

    let (status, _) = get_json(&format!("{base}/api/v1/audit/events?limit=abc")).await;
    assert_eq!(status, 400);
    let (status, body) = get_json(&format!("{base}/no/such/route")).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    let res = http()
        .delete(format!("{base}/api/v1/audit/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let res = http()
        .post(format!("{base}/api/v1/audit/events"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
}
