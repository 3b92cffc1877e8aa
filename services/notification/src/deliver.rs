//! Delivery of a notification over its channel, with bounded retries and exponential backoff.
//!
//! A notification is `sent` when every recipient has succeeded; recipients that succeeded are
//! not retried. After `DELIVERY_MAX_ATTEMPTS` rounds with failures left it is `failed`.
//! - console: one structured log line per recipient (target `notification::console`).
//! - file: one JSON line appended to `NOTIFICATION_FILE_DIR/<recipient, sanitised>.log`.
//! - webhook: `POST` of a JSON document to each recipient URL; any 2xx is success.

use crate::model::{Channel, NewNotification};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use svc_common::backoff::Backoff;
use svc_common::http::error_chain;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Longest file name stem produced by [`sanitize_recipient`].
pub const MAX_FILE_STEM: usize = 200;

/// A recipient turned into a safe file name stem: only `A-Z a-z 0-9 . _ @ + -` are kept (others
/// become `_`), no leading dot, at most [`MAX_FILE_STEM`] characters, never empty.
pub fn sanitize_recipient(r: &str) -> String {
    let mut s: String = r
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_FILE_STEM)
        .collect();
    if s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// The file of a recipient.
pub fn recipient_file(dir: &Path, recipient: &str) -> PathBuf {
    dir.join(format!("{}.log", sanitize_recipient(recipient)))
}

/// The final result of delivering one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// True when every recipient succeeded.
    pub sent: bool,
    /// Rounds made.
    pub attempts: u32,
    /// Error of the last failed round.
    pub last_error: Option<String>,
}

/// Sends notifications.
#[derive(Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    file_dir: PathBuf,
    max_attempts: u32,
    backoff: Backoff,
}

impl Deliverer {
    /// A deliverer; webhooks time out after 5 s.
    pub fn new(file_dir: PathBuf, max_attempts: u32, backoff_initial: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Deliverer {
            http,
            file_dir,
            max_attempts: max_attempts.max(1),
            backoff: Backoff::new(backoff_initial, Duration::from_secs(30)),
        }
    }

    /// Delivers with retries. `progress(attempts, last_error)` is called after each round.
    pub async fn deliver(
        &self,
        id: Uuid,
        n: &NewNotification,
        correlation_id: &str,
        mut progress: impl FnMut(u32, Option<&str>),
    ) -> Outcome {
        let mut pending: Vec<&str> = n.recipients.iter().map(String::as_str).collect();
        let mut last_error = None;
        for attempt in 1..=self.max_attempts {
            let mut failed = Vec::new();
            let mut errors = Vec::new();
            for r in pending {
                if let Err(e) = self.send_one(id, n, correlation_id, r).await {
                    errors.push(e);
                    failed.push(r);
                }
            }
            pending = failed;
            if pending.is_empty() {
                progress(attempt, None);
                return Outcome {
                    sent: true,
                    attempts: attempt,
                    last_error,
                };
            }
            let error = errors.join("; ");
            tracing::warn!(%id, attempt, max_attempts = self.max_attempts, error = %error, "notification delivery attempt failed");
            progress(attempt, Some(&error));
            last_error = Some(error);
            if attempt < self.max_attempts {
                tokio::time::sleep(self.backoff.delay(attempt - 1)).await;
            }
        }
        Outcome {
            sent: false,
            attempts: self.max_attempts,
            last_error,
        }
    }

    async fn send_one(
        &self,
        id: Uuid,
        n: &NewNotification,
        correlation_id: &str,
        recipient: &str,
    ) -> Result<(), String> {
        match n.channel {
            Channel::Console => {
                tracing::info!(
                    target: "notification::console",
                    %id,
                    recipient,
                    subject = %n.subject,
                    body = %n.body,
                    correlation_id,
                    "notification"
                );
                Ok(())
            }
            Channel::File => {
                let line = json!({
                    "id": id,
                    "timestamp": chrono::Utc::now().to_rfc3339(),
                    "recipient": recipient,
                    "subject": n.subject,
                    "body": n.body,
                    "correlation_id": correlation_id,
                });
                let path = recipient_file(&self.file_dir, recipient);
                append_line(&self.file_dir, &path, &line.to_string())
                    .await
                    .map_err(|e| format!("cannot append to {}: {e}", path.display()))
            }
            Channel::Webhook => {
                let payload = json!({
                    "id": id,
                    "recipient": recipient,
                    "subject": n.subject,
                    "body": n.body,
                    "correlation_id": correlation_id,
                });
                match self.http.post(recipient).json(&payload).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("webhook {recipient} answered {}", r.status())),
                    Err(e) => Err(format!("webhook {recipient} failed: {}", error_chain(&e))),
                }
            }
        }
    }
}

async fn append_line(dir: &Path, path: &Path, line: &str) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    // One write of the whole line: O_APPEND keeps concurrent lines whole.
    f.write_all(format!("{line}\n").as_bytes()).await?;
    f.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_become_safe_file_names() {
        assert_eq!(sanitize_recipient("ops@example.com"), "ops@example.com");
        assert_eq!(sanitize_recipient("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(sanitize_recipient(".hidden"), "_hidden");
        assert_eq!(sanitize_recipient("a b/c\\d:e"), "a_b_c_d_e");
        assert_eq!(sanitize_recipient("ünï"), "_n_");
        assert_eq!(sanitize_recipient(""), "_");
        assert_eq!(sanitize_recipient(&"x".repeat(500)).len(), MAX_FILE_STEM);
        assert_eq!(
            recipient_file(Path::new("/d"), "a/b"),
            PathBuf::from("/d/a_b.log")
        );
    }

    fn note(channel: Channel, recipients: &[&str]) -> NewNotification {
        NewNotification {
            channel,
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            subject: "subj".into(),
            body: "body".into(),
            correlation_id: None,
        }
    }

    #[tokio::test]
    async fn file_channel_appends_json_lines() {
        let dir = std::env::temp_dir().join(format!("notif-unit-{}", Uuid::new_v4()));
        let d = Deliverer::new(dir.clone(), 3, Duration::from_millis(1));
        let id = Uuid::new_v4();
        let mut rounds = Vec::new();
        let out = d
            .deliver(id, &note(Channel::File, &["ops team"]), "corr", |a, e| {
                rounds.push((a, e.map(str::to_string)))
            })
            .await;
        assert_eq!(
            out,
            Outcome {
                sent: true,
                attempts: 1,
                last_error: None
            }
        );
        assert_eq!(rounds, vec![(1, None)]);
        d.deliver(id, &note(Channel::File, &["ops team"]), "corr", |_, _| {})
            .await;
        let text = std::fs::read_to_string(dir.join("ops_team.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["correlation_id"], "corr");
        assert_eq!(lines[0]["subject"], "subj");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn dead_webhook_fails_after_max_attempts() {
        let url = format!("http://{}/hook", svc_common::testing::closed_addr().await);
        let d = Deliverer::new(std::env::temp_dir(), 3, Duration::from_millis(5));
        let mut seen = Vec::new();
        let out = d
            .deliver(
                Uuid::new_v4(),
                &note(Channel::Webhook, &[&url]),
                "c",
                |a, _| seen.push(a),
            )
            .await;
        assert!(!out.sent);
        assert_eq!(out.attempts, 3);
        assert_eq!(seen, vec![1, 2, 3]);
        assert!(out.last_error.unwrap().contains(&url));
    }

    #[tokio::test]
    async fn unwritable_file_dir_fails() {
        let file = std::env::temp_dir().join(format!("notif-not-a-dir-{}", Uuid::new_v4()));
        std::fs::write(&file, "x").unwrap();
        let d = Deliverer::new(file.clone(), 2, Duration::from_millis(1));
        let out = d
            .deliver(Uuid::new_v4(), &note(Channel::File, &["a"]), "c", |_, _| {})
            .await;
        assert!(!out.sent);
        assert!(out.last_error.unwrap().contains("cannot append"));
        std::fs::remove_file(&file).unwrap();
    }

    #[tokio::test]
    async fn console_always_succeeds() {
        let d = Deliverer::new(std::env::temp_dir(), 2, Duration::from_millis(1));
        let out = d
            .deliver(
                Uuid::new_v4(),
                &note(Channel::Console, &["a", "b"]),
                "c",
                |_, _| {},
            )
            .await;
        assert!(out.sent);
    }
}
