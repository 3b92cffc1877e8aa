//! Black-box tests of a deployed Notification (and the DataStorage it audits to):
//! `NOTIFICATION_URL`, `DATASTORAGE_URL`. Run by `cargo xtask e2e notification`.

use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{eventually, http, required_env, wait_for_audit};
use uuid::Uuid;

const HOW: &str = "`cargo xtask e2e notification`";

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

async fn send(base: &str, body: Value) -> (u16, Value) {
    let res = http()
        .post(format!("{base}/api/v1/notifications"))
        .json(&body)
        .send()
        .await
        .expect("POST answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn wait_final(base: &str, id: &str) -> Value {
    eventually(
        &format!("notification {id} to finish"),
        Duration::from_secs(60),
        || async {
            let v: Value = http()
                .get(format!("{base}/api/v1/notifications/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "sent" || v["status"] == "failed").then_some(v)
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e notification`"]
async fn console_and_file_notifications_are_sent_and_audited() {
    let base = required_env("NOTIFICATION_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    for channel in ["console", "file"] {
        let corr = format!("e2e-notif-{channel}-{}", Uuid::new_v4());
        let (status, body) = send(&base, json!({"channel": channel, "recipients": ["oncall"], "subject": "e2e", "body": "hello", "correlation_id": corr})).await;
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let rec = wait_final(&base, &id).await;
        assert_eq!(rec["status"], "sent", "{rec}");
        assert!(rec["attempts"].as_u64().unwrap() >= 1);
        let events = wait_for_audit(
            &ds,
            &corr,
            "notification.message.sent",
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(events[0]["resource_id"], id.as_str());
    }
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e notification`"]
async fn unreachable_webhook_fails_and_is_audited() {
    let base = required_env("NOTIFICATION_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let corr = format!("e2e-notif-hook-{}", Uuid::new_v4());
    // Port 9 (discard) on the pod's own loopback: nothing listens there.
    let (status, body) = send(&base, json!({"channel": "webhook", "recipients": ["http://127.0.0.1:9/hook"], "subject": "e2e", "body": "x", "correlation_id": corr})).await;
    assert_eq!(status, 202, "{body}");
    let rec = wait_final(&base, body["id"].as_str().unwrap()).await;
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(rec["last_error"].is_string());
    wait_for_audit(
        &ds,
        &corr,
        "notification.message.failed",
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e notification`"]
async fn bad_requests_and_unknown_ids() {
    let base = required_env("NOTIFICATION_URL", HOW);
    wait_ready(&base).await;
    let (status, body) = send(&base, json!({"channel": "sms", "recipients": []})).await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["channel", "recipients", "subject", "body"]);
    let res = http()
        .get(format!("{base}/api/v1/notifications/{}", Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let res = http().get(format!("{base}/metrics")).send().await.unwrap();
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("notifications_accepted_total"));
}
