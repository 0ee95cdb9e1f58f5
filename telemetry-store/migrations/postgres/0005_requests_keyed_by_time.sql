-- Cheaper telemetry inserts, part 2 (issue 4): `requests` is keyed by (ts, request_id) instead of
-- request_id alone, and the key's index replaces idx_requests_ts (one index fewer to maintain
-- per gateway request; Postgres scans it backwards for newest-first pages).
-- A retried flush carries the same (ts, request_id), so re-ingestion stays idempotent; two
-- different requests that reused one client-chosen x-request-id are no longer collapsed.
ALTER TABLE requests DROP CONSTRAINT IF EXISTS requests_pkey;
ALTER TABLE requests ADD PRIMARY KEY (ts, request_id);
DROP INDEX IF EXISTS idx_requests_ts;
