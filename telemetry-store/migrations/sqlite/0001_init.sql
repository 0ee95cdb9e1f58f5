-- boocontrol telemetry store, SQLite flavour.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC): compact, totally ordered, index friendly.
-- JSON payloads are TEXT holding JSON.

CREATE TABLE IF NOT EXISTS hosts (
    provider_id TEXT PRIMARY KEY,
    os          TEXT,
    gpu_label   TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS requests (
    request_id        TEXT PRIMARY KEY,
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
    route             TEXT
) WITHOUT ROWID;
-- feed (unfiltered, newest first) and time-range aggregates
CREATE INDEX IF NOT EXISTS idx_requests_ts ON requests (ts DESC, request_id DESC);
-- feed filtered by source / provider / model / status
CREATE INDEX IF NOT EXISTS idx_requests_source_ts ON requests (source, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_provider_ts ON requests (provider_id, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_model_ts ON requests (model, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_status_ts ON requests (status, ts DESC, request_id DESC);

CREATE TABLE IF NOT EXISTS host_activity (
    provider_id       TEXT NOT NULL,
    upstream_id       INTEGER NOT NULL,
    ts                INTEGER NOT NULL,
    model             TEXT NOT NULL,
    path              TEXT,
    status            INTEGER,
    duration_ms       REAL,
    prompt_tokens     INTEGER,
    cached_tokens     INTEGER,
    completion_tokens INTEGER,
    prompt_tps        REAL,
    gen_tps           REAL,
    has_capture       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider_id, upstream_id, ts)
);
CREATE INDEX IF NOT EXISTS idx_host_activity_ts ON host_activity (ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_provider_ts ON host_activity (provider_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_model_ts ON host_activity (model, ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_status_ts ON host_activity (status, ts DESC);

CREATE TABLE IF NOT EXISTS perf_samples (
    provider_id TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    gpu         TEXT NOT NULL,
    sys         TEXT NOT NULL,
    PRIMARY KEY (provider_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_perf_samples_provider_ts ON perf_samples (provider_id, ts DESC);

CREATE TABLE IF NOT EXISTS perf_rollup_5m (
    provider_id TEXT NOT NULL,
    bucket      INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    gpu_agg     TEXT NOT NULL,
    sys_agg     TEXT NOT NULL,
    PRIMARY KEY (provider_id, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS model_events (
    provider_id TEXT NOT NULL,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    detail      TEXT,
    UNIQUE (provider_id, model, state, ts)
);
CREATE INDEX IF NOT EXISTS idx_model_events_provider_ts ON model_events (provider_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_model_events_provider_model_ts ON model_events (provider_id, model, ts DESC);

CREATE TABLE IF NOT EXISTS settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS captures (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id     TEXT NOT NULL,
    provider_id    TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    body           TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    original_bytes INTEGER NOT NULL,
    truncated      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_captures_ts ON captures (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_captures_request ON captures (request_id);

CREATE TABLE IF NOT EXISTS retention_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    summary     TEXT NOT NULL
);
