-- Who granted each membership (its role and groups) and when, for separation of duties: an
-- approval counts only if the approver's eligibility was not granted or last changed by the
-- requester. Rows from before this migration have no known granter (NULL).
ALTER TABLE memberships
    ADD COLUMN granted_by uuid NULL REFERENCES users (id),
    ADD COLUMN granted_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX memberships_granted_by_idx ON memberships (granted_by);
