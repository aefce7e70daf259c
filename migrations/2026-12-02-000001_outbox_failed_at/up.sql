-- A webhook call that failed its last allowed attempt is marked failed, and no longer claimed.
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
DROP INDEX outbox_due_idx;
CREATE INDEX outbox_due_idx ON outbox (available_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
