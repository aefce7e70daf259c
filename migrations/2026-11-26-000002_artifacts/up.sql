-- Artifacts: content-addressed objects, the paths of runs that point at them, the files of model
-- versions (their manifest), and uploads in flight (so objects without rows can be swept).

-- An object known to be durable in the artifact store at sha256/ab/cd/<sha256>. Written only
-- after the object is in the store; never deleted while anything points at it.
CREATE TABLE artifact_objects (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A run's files. Immutable: a path keeps its first content.
CREATE TABLE run_artifacts (
    run_id      uuid NOT NULL REFERENCES runs (id),
    path        text NOT NULL,
    sha256      text NOT NULL REFERENCES artifact_objects (sha256),
    size_bytes  bigint NOT NULL,
    created_by  uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, path)
);

-- A model version's files, fixed at registration; the manifest digest covers them.
CREATE TABLE model_version_files (
    model_version_id  uuid NOT NULL REFERENCES model_versions (id),
    path              text NOT NULL,
    sha256            text NOT NULL REFERENCES artifact_objects (sha256),
    size_bytes        bigint NOT NULL,
    PRIMARY KEY (model_version_id, path)
);

-- sha256 of the canonical empty manifest `[]`, for versions registered before artifacts existed.
ALTER TABLE model_versions
    ADD COLUMN manifest_sha256 text NOT NULL
        DEFAULT '4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945'
        CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$');
ALTER TABLE model_versions ALTER COLUMN manifest_sha256 DROP DEFAULT;

CREATE FUNCTION refuse_change_of_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is immutable: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER model_version_files_immutable
    BEFORE UPDATE OR DELETE ON model_version_files
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();
CREATE TRIGGER run_artifacts_immutable
    BEFORE UPDATE OR DELETE ON run_artifacts
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();

-- An upload in flight. Deleted in the transaction that records the artifact; a row left behind
-- (crash, refused digest, failed transaction) is claimed by the sweeper after a grace period.
CREATE TABLE pending_uploads (
    id               uuid PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES runs (id),
    path             text NOT NULL,
    created_by       uuid NOT NULL REFERENCES users (id),
    started_at       timestamptz NOT NULL DEFAULT now(),
    -- known once the bytes are staged
    sha256           text,
    size_bytes       bigint,
    -- direct (presigned) uploads: what the client announced, and the store's upload id
    expected_sha256  text,
    expected_size    bigint,
    part_count       integer,
    store_upload_id  text
);
CREATE INDEX pending_uploads_started_idx ON pending_uploads (started_at);
