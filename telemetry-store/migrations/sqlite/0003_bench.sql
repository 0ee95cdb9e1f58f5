-- Speed benchmarks (issue 7). Owned by the bench engine; generic rows, rich stats as JSON TEXT.
-- Timestamps are INTEGER microseconds (UTC), booleans INTEGER 0/1.

CREATE TABLE IF NOT EXISTS bench_suites (
    hash       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_bench_suites_name ON bench_suites (name, created_at DESC);

CREATE TABLE IF NOT EXISTS bench_runs (
    id                          TEXT PRIMARY KEY,
    suite                       TEXT NOT NULL,
    suite_hash                  TEXT NOT NULL,
    status                      TEXT NOT NULL,
    started_at                  INTEGER NOT NULL,
    finished_at                 INTEGER,
    polluted                    INTEGER NOT NULL DEFAULT 0,
    pollution_reasons           TEXT NOT NULL DEFAULT '[]',
    concurrent_foreign_requests INTEGER NOT NULL DEFAULT 0,
    error                       TEXT,
    summary                     TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX IF NOT EXISTS idx_bench_runs_started ON bench_runs (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_bench_runs_suite ON bench_runs (suite, started_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS bench_run_targets (
    run_id   TEXT NOT NULL,
    pos      INTEGER NOT NULL,
    target   TEXT NOT NULL,
    provider TEXT NOT NULL,
    model    TEXT NOT NULL,
    load_ms  REAL,
    PRIMARY KEY (run_id, target)
);
CREATE INDEX IF NOT EXISTS idx_bench_run_targets_target ON bench_run_targets (target, run_id);
CREATE INDEX IF NOT EXISTS idx_bench_run_targets_pm ON bench_run_targets (provider, model, run_id);

CREATE TABLE IF NOT EXISTS bench_cells (
    run_id      TEXT NOT NULL,
    target      TEXT NOT NULL,
    cell_key    TEXT NOT NULL,
    gen_tps     REAL,
    ttft_p50_ms REAL,
    stats       TEXT NOT NULL,
    PRIMARY KEY (run_id, target, cell_key)
);

CREATE TABLE IF NOT EXISTS bench_samples (
    run_id        TEXT NOT NULL,
    target        TEXT NOT NULL,
    cell_key      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    ok            INTEGER NOT NULL,
    ttft_ms       REAL,
    e2e_ms        REAL,
    output_tokens INTEGER,
    data          TEXT NOT NULL,
    PRIMARY KEY (run_id, target, cell_key, seq)
);

CREATE TABLE IF NOT EXISTS bench_baselines (
    provider TEXT NOT NULL,
    model    TEXT NOT NULL,
    suite    TEXT NOT NULL,
    cell_key TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    set_at   INTEGER NOT NULL,
    PRIMARY KEY (provider, model, suite, cell_key)
);
