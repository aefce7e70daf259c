DROP INDEX memberships_granted_by_idx;
ALTER TABLE memberships DROP COLUMN granted_at, DROP COLUMN granted_by;
