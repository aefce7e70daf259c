DROP TRIGGER model_versions_no_delete ON model_versions;
DROP TRIGGER model_versions_identity_fixed ON model_versions;
DROP FUNCTION model_version_identity_fixed();
DROP TRIGGER run_artifacts_no_truncate ON run_artifacts;
DROP TRIGGER model_version_files_no_truncate ON model_version_files;
