-- Model version files and run artifacts are immutable down to TRUNCATE, and a registered model
-- version keeps its source run, artifact path and manifest digest forever (its stage changes by
-- promotion, nothing else does).
CREATE TRIGGER model_version_files_no_truncate
    BEFORE TRUNCATE ON model_version_files
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_immutable();
CREATE TRIGGER run_artifacts_no_truncate
    BEFORE TRUNCATE ON run_artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_immutable();

CREATE FUNCTION model_version_identity_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.manifest_sha256 IS DISTINCT FROM OLD.manifest_sha256
       OR NEW.run_id IS DISTINCT FROM OLD.run_id
       OR NEW.artifact_path IS DISTINCT FROM OLD.artifact_path
       OR NEW.model_id IS DISTINCT FROM OLD.model_id
       OR NEW.version IS DISTINCT FROM OLD.version THEN
        RAISE EXCEPTION 'a registered model version is immutable (only its stage changes)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER model_versions_identity_fixed
    BEFORE UPDATE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION model_version_identity_fixed();
CREATE TRIGGER model_versions_no_delete
    BEFORE DELETE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();
