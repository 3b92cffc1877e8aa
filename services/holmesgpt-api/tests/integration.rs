//! Integration tests of HolmesGPT-API: the service runs in-process (one test on its own host
//! port, `HOLMESGPT_API_API_PORT`, the others on `127.0.0.1:0`); the mock LLM (Python, in a
//! container) and DataStorage with PostgreSQL are real, and this consumer's stack has no Redis.
//! Environment: `MOCK_LLM_URL`, `DATASTORAGE_URL`, `DATASTORAGE_METRICS_URL`, `POSTGRES_URL`,
//! `HOLMESGPT_API_API_PORT`. Run by `cargo xtask integration holmesgpt-api`.

use holmesgpt_api::{Config, Running};
use serde_json::json;
use std::time::Duration;
use svc_common::testing::{
    closed_addr, env_map, field_names, get_json, get_text, post_json, postgres_audit_event_types,
    required_env, wait_for_audit,
};
use uuid::Uuid;

mod support;
use support::{canned_answer, investigate, oom_killed};

const HOW: &str = "`cargo xtask integration holmesgpt-api`";

fn env(name: &str) -> String {
    required_env(name, HOW)
}

async fn start(listen: &str, llm_url: &str) -> (Running, String) {
    svc_common::logging::init_for_tests();
    let map = env_map(
        &[
            ("LLM_URL", llm_url),
            ("LLM_MODEL", "it-model"),
            ("LLM_TIMEOUT_MS", "5000"),
            ("DATASTORAGE_URL", &env("DATASTORAGE_URL")),
            ("LISTEN_ADDR", listen),
            ("AUDIT_FLUSH_INTERVAL_MS", "50"),
        ],
        &[],
    );
    let config = Config::from_map(&map).expect("valid test configuration");
    let running = holmesgpt_api::start(config)
        .await
        .expect("holmesgpt-api starts");
    let base = format!("http://{}", running.addr());
    (running, base)
}

#[tokio::test]
#[ignore = "needs the mock LLM and DataStorage: run by `cargo xtask integration holmesgpt-api`"]
async fn investigations_are_answered_by_the_mock_llm_and_audited() {
    // The API on the port infra.toml gives it (`own_ports`), as the real system's tests expect.
    let port = env("HOLMESGPT_API_API_PORT");
    let (running, base) = start(&format!("127.0.0.1:{port}"), &env("MOCK_LLM_URL")).await;
    assert_eq!(running.addr().port().to_string(), port);
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "LLM and DataStorage reachable: {body}");
    assert_eq!(body["checks"]["llm"]["ok"], true);

    let corr = format!("it-hapi-{}", Uuid::new_v4());
    let (status, body) = investigate(&base, oom_killed(&corr)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["analysis"], canned_answer("OOMKilled").as_str());
    assert_eq!(
        body["model"], "it-model",
        "the mock answers as the model asked for"
    );
    assert_eq!(body["correlation_id"], corr.as_str());
    let id = body["id"].as_str().unwrap().to_string();

    let (status, rec) = get_json(&format!("{base}/api/v1/investigations/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["alertname"], "KubePodOOMKilled");
    assert_eq!(rec["namespace"], "shop");

    let ds = env("DATASTORAGE_URL");
    let events = wait_for_audit(
        &ds,
        &corr,
        "holmesgpt.investigation.completed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events[0]["resource_id"], id.as_str());
    assert_eq!(events[0]["event_category"], "holmesgpt");
    assert_eq!(events[0]["event_outcome"], "success");
    assert_eq!(events[0]["namespace"], "shop");
    assert_eq!(events[0]["event_data"]["model"], "it-model");
    // Stored in PostgreSQL (this stack has no Redis to queue it in).
    let rows = postgres_audit_event_types(&env("POSTGRES_URL"), &corr).await;
    assert_eq!(rows, ["holmesgpt.investigation.completed"]);

    // Without a correlation id the investigation id is used; the default answer for the rest.
    let (status, body) = investigate(
        &base,
        json!({"alertname": "KubeNodeNotReady", "namespace": "kube-system", "description": "node-3 is NotReady"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["correlation_id"], body["id"]);
    assert!(
        body["analysis"]
            .as_str()
            .unwrap()
            .starts_with("No known pattern matched"),
        "{body}"
    );
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("holmesgpt_investigations_total{outcome=\"completed\"} 2"),
        "{metrics}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the mock LLM and DataStorage: run by `cargo xtask integration holmesgpt-api`"]
async fn llm_failures_are_502_and_audited_as_failed() {
    let ds = env("DATASTORAGE_URL");
    let (running, base) = start("127.0.0.1:0", &env("MOCK_LLM_URL")).await;
    // The mock answers 500 when asked to (a rule of mocks/responses.json).
    let corr = format!("it-hapi-fail-{}", Uuid::new_v4());
    let (status, body) = investigate(
        &base,
        json!({"alertname": "a", "namespace": "n", "description": "please simulate-llm-error", "correlation_id": corr}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["status"], "failed");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(error.contains("mock LLM failure"), "{error}");
    let events = wait_for_audit(
        &ds,
        &corr,
        "holmesgpt.investigation.failed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(events[0]["event_outcome"], "failure");
    assert_eq!(events[0]["resource_id"], body["id"]);
    running.shutdown().await.unwrap();

    // No LLM at all: not ready, and investigations fail (audited too).
    let dead = format!("http://{}", closed_addr().await);
    let (running, base) = start("127.0.0.1:0", &dead).await;
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["unavailable"], json!(["llm"]), "{body}");
    let corr = format!("it-hapi-nollm-{}", Uuid::new_v4());
    let (status, body) = investigate(&base, oom_killed(&corr)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&dead), "{body}");
    wait_for_audit(
        &ds,
        &corr,
        "holmesgpt.investigation.failed",
        Duration::from_secs(20),
    )
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the mock LLM: run by `cargo xtask integration holmesgpt-api`"]
async fn the_mock_llm_speaks_openai_chat_completions() {
    let llm = env("MOCK_LLM_URL");
    let (status, body) = get_json(&format!("{llm}/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, body) = post_json(
        &format!("{llm}/v1/chat/completions"),
        &json!({"model": "m-1", "messages": [{"role": "system", "content": "OOMKilled"}, {"role": "user", "content": "pod in CrashLoopBackOff"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m-1");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    // Only user messages are matched: the CrashLoopBackOff rule, not the OOMKilled one.
    assert_eq!(
        body["choices"][0]["message"]["content"],
        canned_answer("CrashLoopBackOff").as_str()
    );
    let (status, body) = post_json(
        &format!("{llm}/v1/chat/completions"),
        &json!({"messages": [{"role": "wizard", "content": 1}]}),
    )
    .await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"model\""), "{message}");
    assert!(message.contains("messages[0].role"), "{message}");
    let (status, _) = get_json(&format!("{llm}/v1/nothing")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
#[ignore = "needs DataStorage: run by `cargo xtask integration holmesgpt-api`"]
async fn datastorage_runs_without_redis_and_with_this_consumers_query_limit() {
    let ds = env("DATASTORAGE_URL");
    // `drop = ["redis"]`: no Redis in this stack, and DataStorage does not ask for it.
    assert!(
        std::env::var("REDIS_URL").is_err(),
        "this consumer's stack has no Redis"
    );
    let (status, body) = get_json(&format!("{ds}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert!(body["checks"].get("redis").is_none(), "{body}");
    // `override.datastorage`: QUERY_LIMIT_MAX is 50 here (1000 by default, elsewhere).
    let (status, body) = get_json(&format!("{ds}/api/v1/audit/events?limit=51")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(field_names(&body), vec!["limit"]);
    let message = body["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("from 1 to 50"), "{message}");
    let (status, body) = get_json(&format!("{ds}/api/v1/audit/events?limit=50")).await;
    assert_eq!(status, 200, "{body}");
    let metrics = get_text(&format!("{}/metrics", env("DATASTORAGE_METRICS_URL"))).await;
    assert!(metrics.contains("datastorage_dlq_depth 0"), "{metrics}");
}

#[tokio::test]
#[ignore = "needs the mock LLM and DataStorage: run by `cargo xtask integration holmesgpt-api`"]
async fn bad_requests_name_every_field() {
    let (running, base) = start("127.0.0.1:0", &env("MOCK_LLM_URL")).await;
    let (status, body) = investigate(
        &base,
        json!({"alertname": "", "namespace": "Not_A_Namespace", "correlation_id": 5}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        field_names(&body),
        vec!["alertname", "namespace", "description", "correlation_id"]
    );
    let (status, _) = get_json(&format!("{base}/api/v1/investigations/{}", Uuid::new_v4())).await;
    assert_eq!(status, 404);
    running.shutdown().await.unwrap();
}
