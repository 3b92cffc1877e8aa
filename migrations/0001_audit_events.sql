-- Audit events written by DataStorage. event_id is the primary key so that retried writes
-- (dead-letter queue replays, client retries) are idempotent: INSERT ... ON CONFLICT DO NOTHING.
CREATE TABLE audit_events (
    event_id        UUID PRIMARY KEY,
    event_timestamp TIMESTAMPTZ NOT NULL,
    event_type      TEXT NOT NULL,
    event_category  TEXT NOT NULL,
    event_action    TEXT NOT NULL,
    event_outcome   TEXT NOT NULL CHECK (event_outcome IN ('success', 'failure', 'pending')),
    actor_type      TEXT,
    actor_id        TEXT,
    resource_type   TEXT,
    resource_id     TEXT,
    correlation_id  TEXT NOT NULL,
    namespace       TEXT,
    severity        TEXT,
    event_data      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(event_data) = 'object'),
    -- Insertion order, to break ties between events with the same timestamp.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    stored_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Queries: newest first by correlation id, optionally filtered by type.
CREATE INDEX audit_events_correlation_idx ON audit_events (correlation_id, event_timestamp DESC, seq DESC);
-- Queries: newest first by event type.
CREATE INDEX audit_events_type_time_idx ON audit_events (event_type, event_timestamp DESC, seq DESC);
-- Queries without filters: newest first.
CREATE INDEX audit_events_time_idx ON audit_events (event_timestamp DESC, seq DESC);
