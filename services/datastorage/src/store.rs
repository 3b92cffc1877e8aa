//! Durable writes and queries: PostgreSQL first, the Redis dead-letter queue (DLQ) when
//! PostgreSQL fails. A write is acknowledged only when one of them holds the events. Without
//! `REDIS_URL` there is no DLQ: a write PostgreSQL refuses is not acknowledged.

use crate::config::Config;
use crate::migrate::pg_error;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use std::time::Duration;
use svc_common::audit::{AuditEvent, AuditOutcome};
use svc_common::metrics::{Counter, Gauge, Registry};
use svc_common::redis_conn::LazyRedis;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Timeout of one database or Redis operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of the readiness checks.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Why nothing can be queued when `REDIS_URL` is not set.
pub const DLQ_DISABLED: &str = "the dead-letter queue is disabled (REDIS_URL is not set)";

/// Why a PostgreSQL write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgWriteError {
    /// Human-readable reason.
    pub message: String,
    /// True when PostgreSQL refused the data itself (SQLSTATE class 22 or 23): retrying the
    /// same rows will not help.
    pub data_error: bool,
}

/// The outcome of an acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// In PostgreSQL (`inserted` new rows; the rest were already there).
    Stored {
        /// Rows inserted.
        inserted: u64,
    },
    /// In the Redis dead-letter queue, to be written later.
    Queued {
        /// Queue length after the push.
        depth: i64,
    },
}

/// Filters of `GET /api/v1/audit/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// Metrics of the store.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Rows inserted into PostgreSQL (direct writes).
    pub written_direct: Counter,
    /// Rows inserted into PostgreSQL from the DLQ.
    pub written_replay: Counter,
    /// Events pushed to the DLQ.
    pub queued: Counter,
    /// DLQ length.
    pub dlq_depth: Gauge,
    /// DLQ entries PostgreSQL refused for good, moved to the poison list.
    pub poisoned: Counter,
    /// Failed PostgreSQL writes.
    pub pg_failures: Counter,
    /// Failed DLQ pushes.
    pub redis_failures: Counter,
}

impl StoreMetrics {
    fn new(registry: &Registry) -> Self {
        let written = |path: &str| {
            registry.counter(
                "datastorage_events_written_total",
                "Audit events inserted into PostgreSQL, by path (direct, dlq_replay).",
                &[("path", path)],
            )
        };
        let failures = |target: &str| {
            registry.counter(
                "datastorage_write_failures_total",
                "Failed writes, by target (postgres, redis).",
                &[("target", target)],
            )
        };
        StoreMetrics {
            written_direct: written("direct"),
            written_replay: written("dlq_replay"),
            queued: registry.counter(
                "datastorage_events_queued_total",
                "Audit events pushed to the Redis dead-letter queue because PostgreSQL failed.",
                &[],
            ),
            dlq_depth: registry.gauge(
                "datastorage_dlq_depth",
                "Audit events waiting in the Redis dead-letter queue.",
                &[],
            ),
            poisoned: registry.counter(
                "datastorage_dlq_poison_total",
                "Dead-letter entries PostgreSQL refused for good, moved to the poison list.",
                &[],
            ),
            pg_failures: failures("postgres"),
            redis_failures: failures("redis"),
        }
    }
}

/// PostgreSQL pool, Redis handle (when `REDIS_URL` is set) and metrics.
pub struct Store {
    pool: Pool,
    redis: Option<LazyRedis>,
    dlq_key: String,
    /// Metrics, shared with the DLQ worker.
    pub metrics: StoreMetrics,
}

const COLUMNS: &str = "event_id, event_timestamp, event_type, event_category, event_action, \
    event_outcome, actor_type, actor_id, resource_type, resource_id, correlation_id, namespace, \
    severity, event_data";

impl Store {
    /// Builds the pool and the Redis handle (if any); connects nothing yet.
    pub fn new(config: &Config, registry: &Registry) -> anyhow::Result<Store> {
        let mut pg: tokio_postgres::Config = config
            .database_url
            .parse()
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        pg.connect_timeout(Duration::from_secs(3))
            .application_name("datastorage")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(3)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the PostgreSQL pool: {e}"))?;
        let redis = match &config.redis_url {
            Some(url) => Some(
                LazyRedis::new(url, Duration::from_secs(2))
                    .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
            ),
            None => None,
        };
        Ok(Store {
            pool,
            redis,
            dlq_key: config.dlq_key.clone(),
            metrics: StoreMetrics::new(registry),
        })
    }

    /// The Redis list holding the dead-letter queue.
    pub fn dlq_key(&self) -> &str {
        &self.dlq_key
    }

    /// The Redis handle; `None` when the dead-letter queue is disabled (no `REDIS_URL`).
    pub fn redis(&self) -> Option<&LazyRedis> {
        self.redis.as_ref()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool.get().await.map_err(|e| {
            format!(
                "cannot get a PostgreSQL connection: {}",
                svc_common::http::error_chain(&e)
            )
        })
    }

    /// Writes `events` durably: PostgreSQL, else the DLQ. `Err` when neither holds them.
    pub async fn write(&self, events: &[AuditEvent]) -> Result<WriteOutcome, String> {
        let pg_err = match self.insert(events).await {
            Ok(inserted) => {
                self.metrics.written_direct.inc_by(inserted);
                return Ok(WriteOutcome::Stored { inserted });
            }
            Err(e) => e,
        };
        self.metrics.pg_failures.inc();
        if self.redis.is_none() {
            tracing::error!(error = %pg_err.message, events = events.len(), "PostgreSQL write failed and the dead-letter queue is disabled; nothing was stored");
            return Err(format!(
                "PostgreSQL write failed ({}) and {DLQ_DISABLED}",
                pg_err.message
            ));
        }
        tracing::warn!(error = %pg_err.message, events = events.len(), "PostgreSQL write failed; queueing in the dead-letter queue");
        match self.dlq_push(events).await {
            Ok(depth) => {
                self.metrics.queued.inc_by(events.len() as u64);
                self.metrics.dlq_depth.set(depth);
                Ok(WriteOutcome::Queued { depth })
            }
            Err(redis_err) => {
                self.metrics.redis_failures.inc();
                tracing::error!(pg_error = %pg_err.message, redis_error = %redis_err, events = events.len(), "cannot store events: PostgreSQL and Redis both failed");
                Err(format!("PostgreSQL write failed ({}) and the dead-letter queue is unavailable ({redis_err})", pg_err.message))
            }
        }
    }

    /// Inserts `events` in one statement; existing event ids are skipped. Returns rows inserted.
    pub async fn insert(&self, events: &[AuditEvent]) -> Result<u64, PgWriteError> {
        let fut = async {
            let client = self.client().await.map_err(|message| PgWriteError {
                message,
                data_error: false,
            })?;
            let mut ids = Vec::with_capacity(events.len());
            let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(events.len());
            let mut text: [Vec<Option<&str>>; 11] = Default::default();
            let mut data = Vec::with_capacity(events.len());
            for e in events {
                ids.push(e.event_id);
                times.push(e.event_timestamp);
                let cols = [
                    Some(e.event_type.as_str()),
                    Some(e.event_category.as_str()),
                    Some(e.event_action.as_str()),
                    Some(e.event_outcome.as_str()),
                    e.actor_type.as_deref(),
                    e.actor_id.as_deref(),
                    e.resource_type.as_deref(),
                    e.resource_id.as_deref(),
                    Some(e.correlation_id.as_str()),
                    e.namespace.as_deref(),
                    e.severity.as_deref(),
                ];
                for (col, v) in text.iter_mut().zip(cols) {
                    col.push(v);
                }
                data.push(Value::Object(e.event_data.clone()));
            }
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids, &times];
            for col in &text {
                params.push(col);
            }
            params.push(&data);
            let sql = format!(
                "INSERT INTO audit_events ({COLUMNS}) \
                 SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                 $13::text[], $14::jsonb[]) \
                 ON CONFLICT (event_id) DO NOTHING"
            );
            client
                .execute(&sql, &params)
                .await
                .map_err(|e| PgWriteError {
                    message: format!("PostgreSQL insert failed: {}", pg_error(&e)),
                    data_error: e
                        .code()
                        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
                })
        };
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(PgWriteError {
                message: format!(
                    "PostgreSQL insert: no answer within {} ms",
                    OP_TIMEOUT.as_millis()
                ),
                data_error: false,
            }),
        }
    }

    /// Appends `events` to the DLQ in one `RPUSH`; returns the new length. An error when the
    /// DLQ is disabled.
    pub async fn dlq_push(&self, events: &[AuditEvent]) -> Result<i64, String> {
        let Some(redis) = &self.redis else {
            return Err(DLQ_DISABLED.to_string());
        };
        let mut entries = Vec::with_capacity(events.len());
        for e in events {
            entries.push(
                serde_json::to_string(e).map_err(|e| format!("cannot serialise an event: {e}"))?,
            );
        }
        redis
            .run("RPUSH", redis::cmd("RPUSH").arg(&self.dlq_key).arg(entries))
            .await
    }

    /// Newest events first, filtered.
    pub async fn query(&self, q: &Query) -> Result<Vec<AuditEvent>, String> {
        let fut = async {
            let client = self.client().await?;
            let mut conditions = Vec::new();
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            if let Some(c) = &q.correlation_id {
                params.push(c);
                conditions.push(format!("correlation_id = ${}", params.len()));
            }
            if let Some(t) = &q.event_type {
                params.push(t);
                conditions.push(format!("event_type = ${}", params.len()));
            }
            let limit = i64::from(q.limit);
            params.push(&limit);
            let where_clause = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_events {where_clause} \
                 ORDER BY event_timestamp DESC, seq DESC LIMIT ${}",
                params.len()
            );
            let rows = client
                .query(&sql, &params)
                .await
                .map_err(|e| format!("PostgreSQL query failed: {}", pg_error(&e)))?;
            rows.iter().map(row_to_event).collect()
        };
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "PostgreSQL query: no answer within {} ms",
                OP_TIMEOUT.as_millis()
            )),
        }
    }

    /// A real query with a short timeout: PostgreSQL answers and the schema is migrated.
    pub async fn check_postgres(&self) -> Result<(), String> {
        let fut = async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT to_regclass('audit_events') IS NOT NULL", &[])
                .await
                .map_err(|e| format!("query failed: {}", pg_error(&e)))?;
            let migrated: bool = row
                .try_get(0)
                .map_err(|e| format!("unexpected answer: {e}"))?;
            if migrated {
                Ok(())
            } else {
                Err(
                    "connected, but table audit_events is missing: run `datastorage migrate`"
                        .to_string(),
                )
            }
        };
        match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        }
    }

    /// `PING` with a short timeout; `None` when there is no Redis to ask.
    pub async fn check_redis(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        Some(
            match tokio::time::timeout(CHECK_TIMEOUT, redis.ping()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            },
        )
    }
}

fn row_to_event(row: &tokio_postgres::Row) -> Result<AuditEvent, String> {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<T, String> {
        row.try_get(i)
            .map_err(|e| format!("unexpected audit_events column {i}: {e}"))
    }
    let outcome: String = col(row, 5)?;
    let event_outcome = outcome
        .parse::<AuditOutcome>()
        .map_err(|e| format!("stored event has a bad outcome: {e}"))?;
    let event_data = match col::<Value>(row, 13)? {
        Value::Object(m) => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".to_string(), other);
            m
        }
    };
    let event_id: Uuid = col(row, 0)?;
    Ok(AuditEvent {
        event_id,
        event_timestamp: col(row, 1)?,
        event_type: col(row, 2)?,
        event_category: col(row, 3)?,
        event_action: col(row, 4)?,
        event_outcome,
        actor_type: col(row, 6)?,
        actor_id: col(row, 7)?,
        resource_type: col(row, 8)?,
        resource_id: col(row, 9)?,
        correlation_id: col(row, 10)?,
        namespace: col(row, 11)?,
        severity: col(row, 12)?,
        event_data,
    })
}
