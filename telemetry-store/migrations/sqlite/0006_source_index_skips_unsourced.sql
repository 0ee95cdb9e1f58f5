-- Cheaper telemetry inserts, part 3 (issue 4): a request without `X-Boo-Source` (plain OpenAI
-- clients: curl, the SDKs, opencode, Open WebUI) no longer gets an entry in the source index,
-- one B-tree insert fewer per such request. The feed only ever filters `source = ?`, which
-- implies `source IS NOT NULL`, so SQLite still seeks this partial index for it; usage by
-- source walks the table's time key as before.
DROP INDEX IF EXISTS idx_requests_source_ts;
CREATE INDEX idx_requests_source_ts ON requests (source, ts DESC, request_id DESC)
    WHERE source IS NOT NULL;
