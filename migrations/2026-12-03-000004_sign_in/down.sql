ALTER TABLE projects DROP COLUMN approval_sign_in;
-- The older schema has no session methods: decisions keep the channel they came through.
UPDATE approvals SET auth_method = CASE via WHEN 'api' THEN 'api_token' ELSE 'email_link' END
    WHERE auth_method IN ('session_oidc', 'session_email');
ALTER TABLE approvals DROP CONSTRAINT approvals_auth_method_check,
    ADD CONSTRAINT approvals_auth_method_check CHECK (auth_method IN ('email_link', 'api_token'));
DROP TABLE sign_in_links;
DROP TABLE sessions;
ALTER TABLE users DROP COLUMN idp_groups;
