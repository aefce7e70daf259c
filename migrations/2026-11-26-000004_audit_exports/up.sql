-- Compliance exports of the audit log: the auditor role, signed checkpoints of the chain head,
-- and the record of archives written to the artifact store.

-- A server-wide, read-only role: auditors may export the audit log of every project and read
-- every compliance report, and change nothing.
ALTER TABLE users ADD COLUMN is_auditor boolean NOT NULL DEFAULT false;

-- Time-range exports turn `from`/`to` into a seq window; this keeps that lookup off a full scan.
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- The chain head (seq, hash) signed by the server's audit key (`jws`, EdDSA), periodically and on
-- every export. Anyone holding an earlier checkpoint can prove that a later log still contains
-- that entry unchanged, so a removed tail cannot go unnoticed. Append-only, like the log.
CREATE TABLE audit_checkpoints (
    id          uuid PRIMARY KEY,
    seq         bigint NOT NULL CHECK (seq >= 0),
    hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    signed_at   timestamptz NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('periodic', 'export', 'archive')),
    actor       text NOT NULL,
    key_id      text NOT NULL,
    jws         text NOT NULL
);
CREATE INDEX audit_checkpoints_seq_idx ON audit_checkpoints (seq, signed_at);

-- Verified exports of old entries, written to the artifact store (content addressed by sha256).
-- The server never deletes audit rows: an archive is a copy, not a move.
CREATE TABLE audit_archives (
    id           uuid PRIMARY KEY,
    before       timestamptz NOT NULL,
    first_seq    bigint,
    last_seq     bigint,
    entry_count  bigint NOT NULL CHECK (entry_count >= 0),
    sha256       text NOT NULL REFERENCES artifact_objects (sha256),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    manifest     text NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER audit_checkpoints_immutable
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();
CREATE TRIGGER audit_archives_immutable
    BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();
