//! Calls to a HolmesGPT-API service and to the mock LLM's canned answers, shared by the
//! integration and the end-to-end tests.

use serde_json::{json, Value};
use svc_common::testing::post_json;

/// `POST {base}/api/v1/investigations`: the status and the answer.
pub async fn investigate(base: &str, body: Value) -> (u16, Value) {
    post_json(&format!("{base}/api/v1/investigations"), &body).await
}

/// An investigation of an OOMKilled pod, which the mock LLM answers with its `OOMKilled` rule.
pub fn oom_killed(correlation_id: &str) -> Value {
    json!({
        "alertname": "KubePodOOMKilled",
        "namespace": "shop",
        "description": "container api in pod api-7d9 was OOMKilled 3 times in 10 minutes",
        "correlation_id": correlation_id,
    })
}

/// The canned answer of the mock LLM's first rule containing `word`, read from the very file
/// infra.toml mounts into the mock (`mocks/responses.json`).
pub fn canned_answer(word: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../mocks/responses.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    v["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["contains"] == word))
        .and_then(|r| r["content"].as_str())
        .unwrap_or_else(|| panic!("{path} has no rule for {word:?} with a content"))
        .to_string()
}
