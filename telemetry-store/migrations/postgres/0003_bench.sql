-- Speed benchmarks (issue 7). Owned by the bench engine; generic rows, rich stats as JSONB.
-- Schema-neutral: tables are created in the connection's search_path.

CREATE TABLE IF NOT EXISTS bench_suites (
    hash       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_bench_suites_name ON bench_suites (name, created_at DESC);

CREATE TABLE IF NOT EXISTS bench_runs (
    id                          TEXT PRIMARY KEY,
    suite                       TEXT NOT NULL,
    suite_hash                  TEXT NOT NULL,
    status                      TEXT NOT NULL,
    started_at                  TIMESTAMPTZ NOT NULL,
    finished_at                 TIMESTAMPTZ,
    polluted                    BOOLEAN NOT NULL DEFAULT false,
    pollution_reasons           JSONB NOT NULL DEFAULT '[]',
    concurrent_foreign_requests BIGINT NOT NULL DEFAULT 0,
    error                       TEXT,
    summary                     JSONB NOT NULL DEFAULT 'null'
);
CREATE INDEX IF NOT EXISTS idx_bench_runs_started ON bench_runs (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_bench_runs_suite ON bench_runs (suite, started_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS bench_run_targets (
    run_id   TEXT NOT NULL,
    pos      BIGINT NOT NULL,
    target   TEXT NOT NULL,
    provider TEXT NOT NULL,
    model    TEXT NOT NULL,
    load_ms  DOUBLE PRECISION,
    PRIMARY KEY (run_id, target)
);
CREATE INDEX IF NOT EXISTS idx_bench_run_targets_target ON bench_run_targets (target, run_id);
CREATE INDEX IF NOT EXISTS idx_bench_run_targets_pm ON bench_run_targets (provider, model, run_id);

CREATE TABLE IF NOT EXISTS bench_cells (
    run_id      TEXT NOT NULL,
    target      TEXT NOT NULL,
    cell_key    TEXT NOT NULL,
    gen_tps     DOUBLE PRECISION,
    ttft_p50_ms DOUBLE PRECISION,
    stats       JSONB NOT NULL,
    PRIMARY KEY (run_id, target, cell_key)
);

CREATE TABLE IF NOT EXISTS bench_samples (
    run_id        TEXT NOT NULL,
    target        TEXT NOT NULL,
    cell_key      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    ok            BOOLEAN NOT NULL,
    ttft_ms       DOUBLE PRECISION,
    e2e_ms        DOUBLE PRECISION,
    output_tokens BIGINT,
    data          JSONB NOT NULL,
    PRIMARY KEY (run_id, target, cell_key, seq)
);

CREATE TABLE IF NOT EXISTS bench_baselines (
    provider TEXT NOT NULL,
    model    TEXT NOT NULL,
    suite    TEXT NOT NULL,
    cell_key TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    set_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, model, suite, cell_key)
);
