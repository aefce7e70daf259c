-- Personal access tokens and project service accounts.
--
-- A service account is a user of its own kind, owned by one project (never a person: it cannot
-- sign in, hold a role above CONTRIBUTOR, or approve), so everything that records who acted
-- (created_by, the audit log) keeps naming a user.
ALTER TABLE users
    ADD COLUMN service_project_id uuid REFERENCES projects (id),
    DROP CONSTRAINT users_email_check,
    -- People have an email address; service accounts `service:<project>/<name>`, never one.
    ADD CONSTRAINT users_email_check CHECK (
        email = lower(email) AND CASE WHEN service_project_id IS NULL
            THEN email LIKE '%_@_%'
            ELSE email LIKE 'service:%/%' AND email NOT LIKE '%@%' END);

-- Opaque bearer tokens (`cst_…`): the secret is shown once and only its SHA-256 is kept (the
-- secret is 256 random bits, so a fast hash is as strong as a slow one). `project_id` limits a
-- token to one project (always set for a service account's tokens); `read_only` refuses every
-- change. `last_used_at` is updated by authentication, at most once a minute per token.
CREATE TABLE access_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    user_id uuid NOT NULL REFERENCES users (id),
    project_id uuid REFERENCES projects (id),
    read_only boolean NOT NULL,
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz
);
-- A person's (or service account's) tokens, as they list them.
CREATE INDEX access_tokens_user_idx ON access_tokens (user_id, created_at);
