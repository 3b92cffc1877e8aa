//! Black-box tests of a deployed DataStorage: `DATASTORAGE_URL` and `DATASTORAGE_METRICS_URL`
//! point at it. Run by `cargo xtask e2e datastorage`.

use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{eventually, http, required_env};
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
    eventually(
        &format!("{base}/readyz to answer 200"),
        Duration::from_secs(60),
        || async {
            let res = http().get(format!("{base}/readyz")).send().await.ok()?;
            res.status().is_success().then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e datastorage`"]
async fn health_readiness_and_metrics() {
    let base = required_env("DATASTORAGE_URL", HOW);
    let metrics_base = required_env("DATASTORAGE_METRICS_URL", HOW);
    wait_ready(&base).await;
    let res = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = http()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert_eq!(body["checks"]["redis"]["ok"], true);
    let text = http()
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let res = http()
        .post(format!("{base}/api/v1/audit/events"))
        .json(&event(&corr, "2024-06-01T00:00:01Z"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let batch = json!([
        event(&corr, "2024-06-01T00:00:03Z"),
        event(&corr, "2024-06-01T00:00:02Z")
    ]);
    let res = http()
        .post(format!("{base}/api/v1/audit/events/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["count"], 2);

    let body: Value = http()
        .get(format!(
            "{base}/api/v1/audit/events?correlation_id={corr}&limit=2"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let res = http()
        .post(format!("{base}/api/v1/audit/events"))
        .json(&json!({"event_type": "x", "event_outcome": "maybe", "event_data": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        vec![
            "event_category",
            "event_action",
            "correlation_id",
            "event_outcome",
            "event_data"
        ]
    );

    let res = http()
        .get(format!("{base}/api/v1/audit/events?limit=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let res = http()
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
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
