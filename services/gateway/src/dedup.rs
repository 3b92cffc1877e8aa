//! Atomic deduplication in Redis.
//!
//! One Lua script per signal (Redis runs scripts atomically, so concurrent requests for the
//! same fingerprint are serialised): `HINCRBY count`; on the first signal of a window it also
//! stores the signal's correlation id and sets the key to expire after the window. The window is
//! fixed from the first signal (it does not slide). Later signals in the window get the count
//! and the first signal's correlation id, so the whole burst shares one correlation id.

use std::time::Duration;
use svc_common::redis_conn::LazyRedis;

const SCRIPT: &str = r"
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local corr = redis.call('HGET', KEYS[1], 'correlation_id')
if not corr then
  corr = ARGV[2]
  redis.call('HSET', KEYS[1], 'correlation_id', corr)
end
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {count, corr}
";

/// The deduplication store.
pub struct Dedup {
    redis: LazyRedis,
    script: redis::Script,
    window: Duration,
}

impl Dedup {
    /// A store over `redis` with a window.
    pub fn new(redis: LazyRedis, window: Duration) -> Self {
        Dedup {
            redis,
            script: redis::Script::new(SCRIPT),
            window,
        }
    }

    /// The Redis handle (readiness).
    pub fn redis(&self) -> &LazyRedis {
        &self.redis
    }

    /// Counts one more signal for `key`. Returns the count within the window (1 = first) and
    /// the window's correlation id (`new_correlation_id` when first).
    pub async fn hit(&self, key: &str, new_correlation_id: &str) -> Result<(i64, String), String> {
        let mut conn = self.redis.get().await?;
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.script.key(key);
        invocation.arg(window_ms).arg(new_correlation_id);
        match tokio::time::timeout(
            Duration::from_secs(3),
            invocation.invoke_async::<(i64, String)>(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Redis deduplication script failed: {e}")),
            Err(_) => Err("Redis deduplication script: no answer within 3000 ms".to_string()),
        }
    }
}
