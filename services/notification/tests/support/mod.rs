//! Calls to a Notification service shared by the integration and the end-to-end tests.

use serde_json::Value;
use std::time::Duration;
use svc_common::testing::{eventually, http, post_json};

/// `POST {base}/api/v1/notifications`: the status and the answer.
pub async fn send(base: &str, body: Value) -> (u16, Value) {
    post_json(&format!("{base}/api/v1/notifications"), &body).await
}

/// Waits until notification `id` is `sent` or `failed`, and returns its record.
pub async fn wait_final(base: &str, id: &str, timeout: Duration) -> Value {
    eventually(
        &format!("notification {id} to be sent or failed"),
        timeout,
        || async {
            let res = http()
                .get(format!("{base}/api/v1/notifications/{id}"))
                .send()
                .await
                .ok()?;
            let v: Value = res.json().await.ok()?;
            (v["status"] == "sent" || v["status"] == "failed").then_some(v)
        },
    )
    .await
}
