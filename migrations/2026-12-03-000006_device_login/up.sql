-- Command-line login by the OAuth device flow (RFC 8628): `custody login` shows a short code,
-- a signed-in browser approves it, and the command receives a short-lived access token plus a
-- refresh token. Secrets (device codes, refresh tokens) are stored as SHA-256 only.
CREATE TABLE device_logins (
    id uuid PRIMARY KEY,
    device_code_sha256 bytea NOT NULL UNIQUE CHECK (length(device_code_sha256) = 32),
    -- What the person types or confirms in the browser (8 letters, shown as ABCD-EFGH).
    user_code text NOT NULL UNIQUE CHECK (user_code ~ '^[A-Z]{8}$'),
    client_name text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    last_polled_at timestamptz,
    decided_by uuid REFERENCES users (id),
    decided_at timestamptz,
    approved boolean,
    redeemed_at timestamptz,
    CHECK ((decided_by IS NULL) = (decided_at IS NULL) AND (decided_at IS NULL) = (approved IS NULL))
);

-- Refresh tokens rotate: each works once and is replaced by its successor in the same family;
-- presenting a used one again (a stolen copy) revokes the whole family.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY,
    family_id uuid NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    user_id uuid NOT NULL REFERENCES users (id),
    -- The access token minted with it (revoked when the next one is minted).
    access_token_id uuid NOT NULL REFERENCES access_tokens (id),
    client_name text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
