//! A Redis handle that connects on first use and keeps trying on later uses, so a service can
//! start while Redis is still down. Once connected, `ConnectionManager` reconnects by itself.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;
use tokio::sync::Mutex;

/// A lazily connected, shared Redis connection.
pub struct LazyRedis {
    client: redis::Client,
    url_for_logs: String,
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
}

impl LazyRedis {
    /// A handle for `url` (`redis://host:port[/db]`); nothing is connected yet. Operations
    /// (connect, each command) time out after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<LazyRedis, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(LazyRedis {
            client,
            url_for_logs: redact(url),
            timeout,
            conn: Mutex::new(None),
        })
    }

    /// A connection, connecting first if needed. The error says why Redis is unreachable.
    pub async fn get(&self) -> Result<ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let attempt = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => {
                tracing::info!(redis = %self.url_for_logs, "connected to Redis");
                *guard = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(format!(
                "cannot connect to Redis at {}: {e}",
                self.url_for_logs
            )),
            Err(_) => Err(format!(
                "cannot connect to Redis at {}: no answer within {} ms",
                self.url_for_logs,
                (self.timeout * 2).as_millis()
            )),
        }
    }

    /// Runs one command with the timeout; errors name Redis and what failed.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        let mut conn = self.get().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Redis {what} failed: {e}")),
            Err(_) => Err(format!(
                "Redis {what}: no answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        let pong: String = self.run("PING", &redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("Redis PING answered {pong:?}"))
        }
    }

    /// The URL with any password hidden, for logs.
    pub fn url_for_logs(&self) -> &str {
        &self.url_for_logs
    }
}

/// Hides the password of a URL: `redis://:secret@h:1` -> `redis://:***@h:1`.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_hang() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = LazyRedis::new(&format!("redis://{addr}"), Duration::from_millis(300)).unwrap();
        let err = r.ping().await.unwrap_err();
        assert!(err.contains("cannot connect to Redis"), "{err}");
    }

    #[test]
    fn bad_url_is_refused() {
        assert!(LazyRedis::new("http://x", Duration::from_secs(1)).is_err());
    }
}
