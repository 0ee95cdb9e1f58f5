-- Routing policies set through the gateway API (config-file policies stay in the config file).
-- policy: the JSON document as accepted (TEXT holding JSON); updated_at: INTEGER microseconds (UTC).
CREATE TABLE IF NOT EXISTS route_policies (
    name       TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The auto:* dispatch log reads requests that carry a route decision, newest first.
CREATE INDEX IF NOT EXISTS idx_requests_route_ts ON requests (ts DESC, request_id DESC)
    WHERE route IS NOT NULL;
