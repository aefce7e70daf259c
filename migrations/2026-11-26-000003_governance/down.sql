DROP TABLE outbox;
DROP TABLE webhooks;
ALTER TABLE deployments DROP COLUMN replaced_version_id, DROP COLUMN promotion_id;
DROP TABLE approval_links;
DROP TABLE approvals;
DROP TABLE promotions;
DROP INDEX model_versions_one_per_stage;
ALTER TABLE models DROP COLUMN higher_is_better, DROP COLUMN primary_metric;
DROP TABLE project_stages;
