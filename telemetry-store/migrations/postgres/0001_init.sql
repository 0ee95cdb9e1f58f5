-- boocontrol telemetry store, Postgres flavour.

CREATE TABLE IF NOT EXISTS hosts (
    provider_id TEXT PRIMARY KEY,
    os          TEXT,
    gpu_label   TEXT,
    enabled     BOOLEAN NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS requests (
    request_id        TEXT PRIMARY KEY,
    ts                TIMESTAMPTZ NOT NULL,
    provider_id       TEXT NOT NULL,
    model             TEXT NOT NULL,
    wire_model        TEXT,
    source            TEXT,
    path              TEXT NOT NULL,
    status            INTEGER NOT NULL,
    error_class       TEXT,
    ttft_ms           DOUBLE PRECISION,
    duration_ms       DOUBLE PRECISION NOT NULL,
    prompt_tokens     BIGINT,
    cached_tokens     BIGINT,
    completion_tokens BIGINT,
    prompt_tps        DOUBLE PRECISION,
    gen_tps           DOUBLE PRECISION,
    bytes_in          BIGINT NOT NULL,
    bytes_out         BIGINT NOT NULL,
    stream            BOOLEAN NOT NULL,
    route             JSONB
);
CREATE INDEX IF NOT EXISTS idx_requests_ts ON requests (ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_source_ts ON requests (source, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_provider_ts ON requests (provider_id, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_model_ts ON requests (model, ts DESC, request_id DESC);
CREATE INDEX IF NOT EXISTS idx_requests_status_ts ON requests (status, ts DESC, request_id DESC);

CREATE TABLE IF NOT EXISTS host_activity (
    provider_id       TEXT NOT NULL,
    upstream_id       BIGINT NOT NULL,
    ts                TIMESTAMPTZ NOT NULL,
    model             TEXT NOT NULL,
    path              TEXT,
    status            INTEGER,
    duration_ms       DOUBLE PRECISION,
    prompt_tokens     BIGINT,
    cached_tokens     BIGINT,
    completion_tokens BIGINT,
    prompt_tps        DOUBLE PRECISION,
    gen_tps           DOUBLE PRECISION,
    has_capture       BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (provider_id, upstream_id, ts)
);
CREATE INDEX IF NOT EXISTS idx_host_activity_ts ON host_activity (ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_provider_ts ON host_activity (provider_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_model_ts ON host_activity (model, ts DESC);
CREATE INDEX IF NOT EXISTS idx_host_activity_status_ts ON host_activity (status, ts DESC);

CREATE TABLE IF NOT EXISTS perf_samples (
    provider_id TEXT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    gpu         JSONB NOT NULL,
    sys         JSONB NOT NULL,
    UNIQUE (provider_id, ts)
);
CREATE INDEX IF NOT EXISTS idx_perf_samples_provider_ts ON perf_samples (provider_id, ts DESC);

CREATE TABLE IF NOT EXISTS perf_rollup_5m (
    provider_id TEXT NOT NULL,
    bucket      TIMESTAMPTZ NOT NULL,
    samples     BIGINT NOT NULL,
    gpu_agg     JSONB NOT NULL,
    sys_agg     JSONB NOT NULL,
    UNIQUE (provider_id, bucket)
);

CREATE TABLE IF NOT EXISTS model_events (
    provider_id TEXT NOT NULL,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    detail      JSONB,
    UNIQUE (provider_id, model, state, ts)
);
CREATE INDEX IF NOT EXISTS idx_model_events_provider_ts ON model_events (provider_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_model_events_provider_model_ts ON model_events (provider_id, model, ts DESC);

CREATE TABLE IF NOT EXISTS settings (
    key        TEXT PRIMARY KEY,
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS captures (
    id             BIGSERIAL PRIMARY KEY,
    request_id     TEXT NOT NULL,
    provider_id    TEXT NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    body           TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    original_bytes BIGINT NOT NULL,
    truncated      BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_captures_ts ON captures (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_captures_request ON captures (request_id);

CREATE TABLE IF NOT EXISTS retention_runs (
    id          BIGSERIAL PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    summary     TEXT NOT NULL
);
