-- Cheaper telemetry inserts, part 2 (issue 4): `requests` is keyed by (ts, request_id) instead of
-- request_id alone. The table itself is then the time index, so idx_requests_ts (one more B-tree
-- insert per gateway request) goes: the unfiltered feed, time-range aggregates, retention deletes
-- and MIN(ts) walk the table in key order. Secondary indexes of a WITHOUT ROWID table carry the
-- key columns, so (source|provider_id|model, ts, request_id) entries are as before.
-- A retried flush carries the same (ts, request_id), so re-ingestion stays idempotent; two
-- different requests that reused one client-chosen x-request-id are no longer collapsed.
CREATE TABLE requests_v5 (
    request_id        TEXT NOT NULL,
    ts                INTEGER NOT NULL,
    provider_id       TEXT NOT NULL,
    model             TEXT NOT NULL,
    wire_model        TEXT,
    source            TEXT,
    path              TEXT NOT NULL,
    status            INTEGER NOT NULL,
    error_class       TEXT,
    ttft_ms           REAL,
    duration_ms       REAL NOT NULL,
    prompt_tokens     INTEGER,
    cached_tokens     INTEGER,
    completion_tokens INTEGER,
    prompt_tps        REAL,
    gen_tps           REAL,
    bytes_in          INTEGER NOT NULL,
    bytes_out         INTEGER NOT NULL,
    stream            INTEGER NOT NULL,
    route             TEXT,
    PRIMARY KEY (ts, request_id)
) WITHOUT ROWID;
INSERT INTO requests_v5 (request_id, ts, provider_id, model, wire_model, source, path, status,
                         error_class, ttft_ms, duration_ms, prompt_tokens, cached_tokens,
                         completion_tokens, prompt_tps, gen_tps, bytes_in, bytes_out, stream, route)
    SELECT request_id, ts, provider_id, model, wire_model, source, path, status, error_class,
           ttft_ms, duration_ms, prompt_tokens, cached_tokens, completion_tokens, prompt_tps,
           gen_tps, bytes_in, bytes_out, stream, route
    FROM requests ORDER BY ts, request_id;
DROP TABLE requests;
ALTER TABLE requests_v5 RENAME TO requests;
CREATE INDEX idx_requests_source_ts ON requests (source, ts DESC, request_id DESC);
CREATE INDEX idx_requests_provider_ts ON requests (provider_id, ts DESC, request_id DESC);
CREATE INDEX idx_requests_model_ts ON requests (model, ts DESC, request_id DESC);
CREATE INDEX idx_requests_error_ts ON requests (status, ts DESC, request_id DESC)
    WHERE status >= 400;
CREATE INDEX idx_requests_route_ts ON requests (ts DESC, request_id DESC)
    WHERE route IS NOT NULL;
