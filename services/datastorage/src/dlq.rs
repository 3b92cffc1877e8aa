//! The dead-letter queue worker: moves events from the Redis list into PostgreSQL. It runs
//! only when `REDIS_URL` is set.
//!
//! Each round reads up to [`CHUNK`] entries from the head (`LRANGE`), inserts them (idempotent:
//! `ON CONFLICT (event_id) DO NOTHING`), and only then removes exactly those entries (`LREM`
//! by value). A crash in between leaves them in Redis and they are inserted again later, which
//! is harmless; several DataStorage replicas can run the worker at the same time.
//!
//! Entries that are not valid events, or that PostgreSQL refuses for good (SQLSTATE class 22 or
//! 23), are moved to `<key>:poison` and counted in `datastorage_dlq_poison_total`, so one bad
//! entry cannot block the queue.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditEvent;
use tokio::sync::watch;

/// Entries handled per round.
pub const CHUNK: isize = 100;

/// Runs until `stop` becomes true, draining the queue every `interval`.
pub async fn run(store: Arc<Store>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        match drain(&store).await {
            Ok(0) => failing = false,
            Ok(n) => {
                tracing::info!(events = n, "dead-letter queue drained into PostgreSQL");
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "dead-letter queue replay failed; will retry");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Moves everything currently queued into PostgreSQL. Returns the number of events written;
/// an error when the queue is disabled (no `REDIS_URL`).
pub async fn drain(store: &Store) -> Result<usize, String> {
    let redis = store
        .redis()
        .ok_or_else(|| crate::store::DLQ_DISABLED.to_string())?;
    let key = store.dlq_key().to_string();
    let mut total = 0usize;
    loop {
        let entries: Vec<String> = redis
            .run(
                "LRANGE",
                redis::cmd("LRANGE").arg(&key).arg(0).arg(CHUNK - 1),
            )
            .await?;
        if entries.is_empty() {
            store.metrics.dlq_depth.set(0);
            return Ok(total);
        }
        let mut good: Vec<(String, AuditEvent)> = Vec::new();
        let mut poison: Vec<String> = Vec::new();
        for entry in entries {
            match serde_json::from_str::<AuditEvent>(&entry) {
                Ok(ev) => good.push((entry, ev)),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable dead-letter entry moved to the poison list");
                    poison.push(entry);
                }
            }
        }
        let events: Vec<AuditEvent> = good.iter().map(|(_, e)| e.clone()).collect();
        let mut done: Vec<String> = Vec::new();
        if !events.is_empty() {
            match store.insert(&events).await {
                Ok(inserted) => {
                    store.metrics.written_replay.inc_by(inserted);
                    done.extend(good.into_iter().map(|(raw, _)| raw));
                }
                Err(e) if e.data_error => {
                    // Find the culprit(s) one by one; the rest go in.
                    for (raw, ev) in good {
                        match store.insert(std::slice::from_ref(&ev)).await {
                            Ok(inserted) => {
                                store.metrics.written_replay.inc_by(inserted);
                                done.push(raw);
                            }
                            Err(e) if e.data_error => {
                                tracing::error!(event_id = %ev.event_id, error = %e.message, "PostgreSQL refuses a dead-letter event; moved to the poison list");
                                poison.push(raw);
                            }
                            Err(e) => return Err(e.message),
                        }
                    }
                }
                Err(e) => return Err(e.message),
            }
        }
        total += done.len();
        let mut pipe = redis::pipe();
        for raw in &poison {
            pipe.cmd("RPUSH")
                .arg(format!("{key}:poison"))
                .arg(raw)
                .ignore();
        }
        for raw in done.iter().chain(poison.iter()) {
            pipe.cmd("LREM").arg(&key).arg(1).arg(raw).ignore();
        }
        pipe.cmd("LLEN").arg(&key);
        let mut conn = redis.get().await?;
        let (depth,): (i64,) =
            tokio::time::timeout(crate::store::OP_TIMEOUT, pipe.query_async(&mut conn))
                .await
                .map_err(|_| "Redis LREM: no answer in time".to_string())?
                .map_err(|e| format!("Redis LREM failed: {e}"))?;
        store.metrics.poisoned.inc_by(poison.len() as u64);
        store.metrics.dlq_depth.set(depth);
    }
}
