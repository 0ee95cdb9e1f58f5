-- Cheaper telemetry inserts (issue 4): every index on `requests` is one more B-tree insert per
-- gateway request. The feed's status filter is for finding failures; successes are the bulk of
-- the table and a status < 400 filter walks idx_requests_ts instead. So only failed requests
-- (status >= 400) are indexed by status.
DROP INDEX IF EXISTS idx_requests_status_ts;
CREATE INDEX IF NOT EXISTS idx_requests_error_ts ON requests (status, ts DESC, request_id DESC)
    WHERE status >= 400;
