//! Black-box tests of a deployed Notification (and the DataStorage it audits to):
//! `NOTIFICATION_URL`, `DATASTORAGE_URL`. Run by `cargo xtask e2e notification`.

use serde_json::{json, Value};
use std::time::Duration;
use svc_common::testing::{field_names, get_text, http, required_env, wait_for_audit};
use uuid::Uuid;

mod support;
use support::send;

const HOW: &str = "`cargo xtask e2e notification`";

async fn wait_ready(base: &str) {
    svc_common::testing::wait_ready(base, Duration::from_secs(60)).await;
}

async fn wait_final(base: &str, id: &str) -> Value {
    support::wait_final(base, id, Duration::from_secs(60)).await
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
    assert_eq!(
        field_names(&body),
        vec!["channel", "recipients", "subject", "body"]
    );
    let res = http()
        .get(format!("{base}/api/v1/notifications/{}", Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert!(get_text(&format!("{base}/metrics"))
        .await
        .contains("notifications_accepted_total"));
}
