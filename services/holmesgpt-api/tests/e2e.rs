//! Black-box tests of a deployed HolmesGPT-API, the DataStorage it audits to and the E2E-only
//! metrics probe watching DataStorage: `HOLMESGPT_API_URL`, `DATASTORAGE_URL`,
//! `METRICS_PROBE_URL`. Run by `cargo xtask e2e holmesgpt-api` (one test at a time: they share
//! the probe's counters).

use serde_json::json;
use std::time::Duration;
use svc_common::testing::{
    eventually, field_names, get_json, get_text, required_env, wait_for_audit,
};
use uuid::Uuid;

mod support;
use support::{canned_answer, investigate, oom_killed};

const HOW: &str = "`cargo xtask e2e holmesgpt-api`";

async fn wait_ready(base: &str) {
    svc_common::testing::wait_ready(base, Duration::from_secs(60)).await;
}

/// DataStorage's events written directly to PostgreSQL, as the probe last saw them.
async fn probe_written(probe: &str) -> Option<f64> {
    let (status, body) = get_json(&format!(
        "{probe}/api/v1/samples?prefix=datastorage_events_written_total"
    ))
    .await;
    if status != 200 {
        return None;
    }
    body["samples"]["datastorage_events_written_total{path=\"direct\"}"].as_f64()
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e holmesgpt-api`"]
async fn investigations_are_answered_audited_and_seen_by_the_metrics_probe() {
    let base = required_env("HOLMESGPT_API_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    let probe = required_env("METRICS_PROBE_URL", HOW);
    wait_ready(&base).await;
    let before = eventually(
        "the metrics probe to have scraped DataStorage",
        Duration::from_secs(60),
        || probe_written(&probe),
    )
    .await;

    let corr = format!("e2e-hapi-{}", Uuid::new_v4());
    let (status, body) = investigate(&base, oom_killed(&corr)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["analysis"], canned_answer("OOMKilled").as_str());
    assert_eq!(body["model"], "mock-gpt", "LLM_MODEL from infra.toml");
    let id = body["id"].as_str().unwrap().to_string();
    let events = wait_for_audit(
        &ds,
        &corr,
        "holmesgpt.investigation.completed",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(events[0]["resource_id"], id.as_str());

    // The probe (E2E only) scrapes DataStorage's metrics port inside the cluster.
    eventually(
        "the metrics probe to see DataStorage's write",
        Duration::from_secs(30),
        || async { probe_written(&probe).await.filter(|n| *n > before) },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e holmesgpt-api`"]
async fn llm_errors_are_502_and_audited() {
    let base = required_env("HOLMESGPT_API_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let corr = format!("e2e-hapi-fail-{}", Uuid::new_v4());
    let (status, body) = investigate(
        &base,
        json!({"alertname": "a", "namespace": "n", "description": "simulate-llm-error", "correlation_id": corr}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let (status, rec) = get_json(&format!(
        "{base}/api/v1/investigations/{}",
        body["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(rec["status"], "failed");
    wait_for_audit(
        &ds,
        &corr,
        "holmesgpt.investigation.failed",
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a deployed stack: run by `cargo xtask e2e holmesgpt-api`"]
async fn bad_requests_and_this_consumers_datastorage() {
    let base = required_env("HOLMESGPT_API_URL", HOW);
    let ds = required_env("DATASTORAGE_URL", HOW);
    wait_ready(&base).await;
    let (status, body) = investigate(&base, json!({"namespace": "UPPER"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        field_names(&body),
        vec!["alertname", "namespace", "description"]
    );
    let (status, _) = get_json(&format!("{base}/api/v1/investigations/{}", Uuid::new_v4())).await;
    assert_eq!(status, 404);
    assert!(get_text(&format!("{base}/metrics"))
        .await
        .contains("http_requests_total"));
    // This consumer's DataStorage: no Redis, and a query limit of 50.
    let (status, body) = get_json(&format!("{ds}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["checks"].get("redis").is_none(), "{body}");
    let (status, _) = get_json(&format!("{ds}/api/v1/audit/events?limit=51")).await;
    assert_eq!(status, 400);
}
