//! The LLM client: one OpenAI-style `POST {LLM_URL}/v1/chat/completions` per investigation,
//! and `GET {LLM_URL}/health` for readiness.

use crate::model::NewInvestigation;
use serde_json::{json, Value};
use std::time::Duration;
use svc_common::http::{error_chain, Check};

/// What the LLM is told before every investigation.
pub const SYSTEM_PROMPT: &str = "You are HolmesGPT, a Kubernetes troubleshooting assistant. \
    Given an alert, name the most likely root cause and the next step to confirm it, briefly.";

/// Longest part of an error body quoted in a message.
const QUOTE_CHARS: usize = 300;

/// The LLM's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// `choices[0].message.content`.
    pub content: String,
    /// The model that answered (`model` of the answer, else the one asked for).
    pub model: String,
}

/// An OpenAI-style chat completions API.
#[derive(Debug, Clone)]
pub struct Llm {
    http: reqwest::Client,
    url: String,
    model: String,
}

impl Llm {
    /// A client of the API at `url` asking for `model`; each request times out after `timeout`.
    pub fn new(url: &str, model: &str, timeout: Duration) -> anyhow::Result<Llm> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the LLM HTTP client: {e}"))?;
        Ok(Llm {
            http,
            url: url.trim_end_matches('/').to_string(),
            model: model.to_string(),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks for an analysis of `inv`. The error says what the LLM did or did not answer.
    pub async fn analyse(&self, inv: &NewInvestigation) -> Result<Analysis, String> {
        let endpoint = format!("{}/v1/chat/completions", self.url);
        let res = self
            .http
            .post(&endpoint)
            .json(&request(&self.model, inv))
            .send()
            .await
            .map_err(|e| format!("POST {endpoint} failed: {}", error_chain(&e)))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| format!("POST {endpoint}: cannot read the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "POST {endpoint} answered {status}: {}",
                quote(&text)
            ));
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "POST {endpoint} answered {status} with something that is not JSON ({e}): {}",
                quote(&text)
            )
        })?;
        parse_answer(&body, &self.model).map_err(|e| format!("POST {endpoint}: {e}"))
    }

    /// `GET {url}/health` answers 2xx.
    pub async fn check(&self) -> Check {
        let url = format!("{}/health", self.url);
        let error = match self
            .http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("GET {url} answered {}", r.status())),
            Err(e) => Some(format!("GET {url} failed: {}", error_chain(&e))),
        };
        Check { name: "llm", error }
    }
}

/// The chat completions request for `inv`.
pub fn request(model: &str, inv: &NewInvestigation) -> Value {
    let user = format!(
        "Alert {} in namespace {}.\n{}",
        inv.alertname, inv.namespace, inv.description
    );
    json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
    })
}

/// Reads `choices[0].message.content` (non-empty) and `model` from an answer.
pub fn parse_answer(body: &Value, asked: &str) -> Result<Analysis, String> {
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            format!(
                "the answer has no choices[0].message.content: {}",
                quote(&body.to_string())
            )
        })?;
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or(asked);
    Ok(Analysis {
        content: content.to_string(),
        model: model.to_string(),
    })
}

/// At most [`QUOTE_CHARS`] characters of `text`, on one line.
fn quote(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > QUOTE_CHARS {
        let cut: String = one_line.chars().take(QUOTE_CHARS).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> NewInvestigation {
        NewInvestigation {
            alertname: "KubePodOOMKilled".into(),
            namespace: "shop".into(),
            description: "container api was OOMKilled".into(),
            correlation_id: None,
        }
    }

    #[test]
    fn the_request_names_the_model_and_the_alert() {
        let r = request("m-1", &inv());
        assert_eq!(r["model"], "m-1");
        assert_eq!(r["messages"][0]["role"], "system");
        assert_eq!(r["messages"][1]["role"], "user");
        let user = r["messages"][1]["content"].as_str().unwrap();
        assert!(user.starts_with("Alert KubePodOOMKilled in namespace shop."));
        assert!(user.contains("OOMKilled"));
    }

    #[test]
    fn answers_are_read_or_refused_with_a_reason() {
        let a = parse_answer(
            &json!({"model": "mock", "choices": [{"message": {"role": "assistant", "content": " raise the limit "}}]}),
            "asked",
        )
        .unwrap();
        assert_eq!(a.content, "raise the limit");
        assert_eq!(a.model, "mock");
        let a = parse_answer(
            &json!({"choices": [{"message": {"content": "x"}}]}),
            "asked",
        )
        .unwrap();
        assert_eq!(a.model, "asked");
        for bad in [
            json!({}),
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": "  "}}]}),
        ] {
            let e = parse_answer(&bad, "asked").unwrap_err();
            assert!(e.contains("choices[0].message.content"), "{e}");
        }
        assert_eq!(quote(&"a ".repeat(400)).chars().count(), QUOTE_CHARS + 3);
        assert_eq!(quote("x\n  y"), "x y");
    }
}
