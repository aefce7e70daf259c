-- Signing in from a browser: an identity provider (OpenID Connect) or a mailed single-use link,
-- then a server-side session behind an opaque cookie.

-- The groups the identity provider last said a person belongs to (its groups claim, refreshed at
-- every sign-in through it). They count like a membership's own groups for `approver_group`, so
-- a group change at the provider changes who may approve.
ALTER TABLE users ADD COLUMN idp_groups text[] NOT NULL DEFAULT '{}';

-- Browser sessions. The cookie holds a random secret; only its SHA-256 is kept. `signed_in_at`
-- is when the person proved who they are (approvals may demand a recent one); `last_seen_at`
-- (refreshed at most once a minute) drives the idle timeout, `expires_at` is the absolute one.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    user_id uuid NOT NULL REFERENCES users (id),
    method text NOT NULL CHECK (method IN ('oidc', 'email')),
    -- The value every state-changing request of this session must echo (form field or header).
    csrf_token text NOT NULL,
    signed_in_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    user_agent text
);
CREATE INDEX sessions_user_idx ON sessions (user_id, signed_in_at);

-- Mailed sign-in links: single use, short-lived, and bound to the browser that asked (the hash
-- of a random value kept in that browser's cookie), so a link opened elsewhere (a mail scanner,
-- a forwarded mail) signs nobody in and is not used up.
CREATE TABLE sign_in_links (
    id uuid PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    email text NOT NULL,
    browser_sha256 bytea NOT NULL CHECK (length(browser_sha256) = 32),
    next_path text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
-- Recent links of an address (the request rate limit).
CREATE INDEX sign_in_links_email_idx ON sign_in_links (email, created_at);

-- How an approver proved who they were now includes a signed-in session of either kind.
ALTER TABLE approvals DROP CONSTRAINT approvals_auth_method_check,
    ADD CONSTRAINT approvals_auth_method_check
        CHECK (auth_method IN ('email_link', 'api_token', 'session_oidc', 'session_email'));

-- Whether deciding on this project's promotions needs a signed-in session of the approver
-- (`session`) or the mailed link alone is enough (`link`); NULL follows the server's setting.
ALTER TABLE projects ADD COLUMN approval_sign_in text CHECK (approval_sign_in IN ('link', 'session'));
