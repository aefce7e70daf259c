-- Labels: key/value tags on models and model versions (runs have had theirs since the start),
-- and aliases: named pointers from a model to one of its versions.
ALTER TABLE models ADD COLUMN tags jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object');
ALTER TABLE model_versions ADD COLUMN tags jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object');

-- A free alias (`candidate`) is moved by any contributor; it names one version of its model.
CREATE TABLE model_aliases (
    model_id uuid NOT NULL REFERENCES models (id),
    alias text NOT NULL CHECK (alias ~ '^[a-z][a-z0-9_-]{0,63}$'),
    model_version_id uuid NOT NULL REFERENCES model_versions (id),
    set_by uuid NOT NULL REFERENCES users (id),
    set_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias)
);
CREATE INDEX model_aliases_version_idx ON model_aliases (model_version_id);

-- A governed alias (`champion`) is declared by a project admin and follows the version that
-- holds a stage: moving it is a promotion into that stage (policies, approvals, audit), so it
-- never has rows in model_aliases.
CREATE TABLE governed_aliases (
    project_id uuid NOT NULL,
    alias text NOT NULL CHECK (alias ~ '^[a-z][a-z0-9_-]{0,63}$'),
    stage text NOT NULL,
    PRIMARY KEY (project_id, alias),
    FOREIGN KEY (project_id, stage) REFERENCES project_stages (project_id, name)
);
