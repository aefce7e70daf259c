DROP TABLE pending_uploads;
DROP TRIGGER run_artifacts_immutable ON run_artifacts;
DROP TRIGGER model_version_files_immutable ON model_version_files;
DROP FUNCTION refuse_change_of_immutable();
ALTER TABLE model_versions DROP COLUMN manifest_sha256;
DROP TABLE model_version_files;
DROP TABLE run_artifacts;
DROP TABLE artifact_objects;
