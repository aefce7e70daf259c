DROP TABLE access_tokens;
-- Service accounts become users without a way in, under an address that cannot receive mail.
ALTER TABLE users DROP CONSTRAINT users_email_check;
UPDATE users SET email = translate(substr(email, 9), '/', '.') || '@service.invalid'
WHERE service_project_id IS NOT NULL;
ALTER TABLE users
    DROP COLUMN service_project_id,
    ADD CONSTRAINT users_email_check CHECK (email = lower(email) AND email LIKE '%_@_%');
