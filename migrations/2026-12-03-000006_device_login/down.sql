DROP TABLE refresh_tokens;
DROP TABLE device_logins;
