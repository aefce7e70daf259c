DROP INDEX outbox_due_idx;
CREATE INDEX outbox_due_idx ON outbox (available_at) WHERE delivered_at IS NULL;
ALTER TABLE outbox DROP COLUMN failed_at;
