//! Black-box tests of a deployed Gateway (configured with `NOTIFICATION_URL` inside the
//! cluster): `GATEWAY_URL`, `DATASTORAGE_URL`, `NOTIFICATION_URL`. Run by `cargo xtask e2e gateway`.

use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{
    audit_events, eventually, field_names, http, post_json, required_env, wait_for_audit,
};
use uuid::Uuid;

const HOW: &str = "`cargo xtask e2e gateway`";

async fn wait_ready(base: &str) {
    svc_common::testing::wait_ready(base, Duration::from_secs(60)).await;
}

fn signal(fingerprint: &str, severity: &str) -> Value {
    json!({"fingerprint": fingerprint, "alertname": "E2eAlert", "severity": severity, "namespace": "e2e", "labels": {"suite": "e2e"}})
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    post_json(&format!("{base}/api/v1/signals"), body).await
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e gateway`"]
async fn signals_are_deduplicated_and_audited() {
    let base = required_env("GATEWAY_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let fp = format!("e2e-fp-{}", Uuid::new_v4());
    let (status, first) = post(&base, &signal(&fp, "warning")).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["count"], 1);
    for n in 2..=3 {
        let (_, body) = post(&base, &signal(&fp, "warning")).await;
        assert_eq!(body["status"], "deduplicated");
        assert_eq!(body["count"], n);
        assert_eq!(body["correlation_id"], first["correlation_id"]);
    }
    let corr = first["correlation_id"].as_str().unwrap();
    wait_for_audit(
        &ds,
        corr,
        "gateway.signal.received",
        Duration::from_secs(60),
    )
    .await;
    let dups = eventually(
        "two deduplicated audit events",
        Duration::from_secs(60),
        || async {
            let events = audit_events(&ds, corr, "gateway.signal.deduplicated").await;
            (events.len() == 2).then_some(events)
        },
    )
    .await;
    assert_eq!(dups[0]["resource_id"], fp.as_str());
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e gateway`"]
async fn critical_signals_reach_notification() {
    let base = required_env("GATEWAY_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    let notification = required_env("NOTIFICATION_URL", HOW);
    wait_ready(&base).await;
    let res = http()
        .get(format!("{notification}/healthz"))
        .send()
        .await
        .expect("Notification answers");
    assert!(res.status().is_success());
    let fp = format!("e2e-fp-crit-{}", Uuid::new_v4());
    let (status, body) = post(&base, &signal(&fp, "critical")).await;
    assert_eq!(status, 202, "{body}");
    let corr = body["correlation_id"].as_str().unwrap();
    let sent = wait_for_audit(
        &ds,
        corr,
        "notification.message.sent",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(sent[0]["event_data"]["recipients"], json!(["oncall"]));
    let fwd = wait_for_audit(
        &ds,
        corr,
        "gateway.signal.forwarded",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(fwd[0]["event_outcome"], "success");
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e gateway`"]
async fn bad_signals_are_refused() {
    let base = required_env("GATEWAY_URL", HOW);
    wait_ready(&base).await;
    let (status, body) = post(
        &base,
        &json!({"fingerprint": "x", "severity": "apocalyptic"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        field_names(&body),
        vec!["alertname", "namespace", "severity"]
    );
    let res = http()
        .get(format!("{base}/api/v1/signals"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
}
