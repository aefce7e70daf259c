-- How each approver proved who they were when deciding (`AuthMethod`): the mailed single-use
-- link alone, or a bearer token (a server-issued JWT or an access token). Given to promotion
-- policies as `input.approvals[*].auth_method`. Sign-in sessions add their own values.
ALTER TABLE approvals ADD COLUMN auth_method text
    CHECK (auth_method IN ('email_link', 'api_token'));
-- Decisions so far: through the API with a token, otherwise from a mailed link's page.
UPDATE approvals SET auth_method = CASE via WHEN 'api' THEN 'api_token' ELSE 'email_link' END;
ALTER TABLE approvals ALTER COLUMN auth_method SET NOT NULL;
