ALTER TABLE approvals DROP COLUMN auth_method;
