-- Invitations: a project admin invites an address that has no account yet; the invitee joins
-- (with the role and groups of the invitation, granted by the inviter) when their account comes
-- to be — by signing in, or when a server admin creates it. Adding an unknown address as a
-- member no longer creates a user as a side effect.
CREATE TABLE invitations (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id),
    email text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    role text NOT NULL CHECK (role IN ('viewer', 'contributor', 'approver', 'admin')),
    groups text[] NOT NULL DEFAULT '{}',
    invited_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    revoked_at timestamptz
);
-- One open invitation per project and address (inviting again updates it).
CREATE UNIQUE INDEX invitations_open_idx ON invitations (project_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
-- The open invitations of an address, looked up when its account is created.
CREATE INDEX invitations_email_idx ON invitations (email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
