-- Governance: ordered stages per project, promotion requests held at approval gates, approvals,
-- single-use approval links, deployments, webhooks and the transactional outbox.

CREATE TABLE project_stages (
    project_id         uuid NOT NULL REFERENCES projects (id),
    name               text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'),
    position           integer NOT NULL,
    requires_approval  boolean NOT NULL,
    PRIMARY KEY (project_id, name),
    UNIQUE (project_id, position)
);
INSERT INTO project_stages (project_id, name, position, requires_approval)
SELECT p.id, s.name, s.position, s.requires_approval
FROM projects p,
     (VALUES ('development', 10, false), ('staging', 20, true), ('production', 30, true), ('archived', 1000, false))
         AS s (name, position, requires_approval);

-- How a model ranks its versions: the metric the default policy compares with production's.
ALTER TABLE models
    ADD COLUMN primary_metric text,
    ADD COLUMN higher_is_better boolean NOT NULL DEFAULT true;

-- At most one version of a model in each live stage; the database itself holds the line.
CREATE UNIQUE INDEX model_versions_one_per_stage
    ON model_versions (model_id, stage)
    WHERE stage IS NOT NULL AND stage <> 'archived';

CREATE TABLE promotions (
    id                   uuid PRIMARY KEY,
    project_id           uuid NOT NULL REFERENCES projects (id),
    model_version_id     uuid NOT NULL REFERENCES model_versions (id),
    stage                text NOT NULL,
    status               text NOT NULL CHECK (status IN
                             ('pending', 'approved', 'rejected', 'applied', 'expired', 'cancelled', 'denied')),
    requested_by         uuid NOT NULL REFERENCES users (id),
    comment              text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    decided_at           timestamptz,
    manifest_sha256      text NOT NULL,
    policy_digest        text NOT NULL,
    policy_input         jsonb NOT NULL,
    policy_result        jsonb NOT NULL,
    required_approvals   integer NOT NULL CHECK (required_approvals >= 0),
    approver_group       text,
    replaced_version_id  uuid REFERENCES model_versions (id)
);
CREATE UNIQUE INDEX promotions_one_pending ON promotions (model_version_id, stage) WHERE status = 'pending';
CREATE INDEX promotions_project_idx ON promotions (project_id, id);
CREATE INDEX promotions_pending_expiry_idx ON promotions (expires_at) WHERE status = 'pending';

CREATE TABLE approvals (
    id            uuid PRIMARY KEY,
    promotion_id  uuid NOT NULL REFERENCES promotions (id),
    approver_id   uuid NOT NULL REFERENCES users (id),
    decision      text NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment       text,
    via           text NOT NULL CHECK (via IN ('web', 'email', 'api')),
    at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (promotion_id, approver_id)
);

-- The links mailed to approvers: one per (promotion, approver), used at most once.
CREATE TABLE approval_links (
    jti           uuid PRIMARY KEY,
    promotion_id  uuid NOT NULL REFERENCES promotions (id),
    approver_id   uuid NOT NULL REFERENCES users (id),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);

ALTER TABLE deployments
    ADD COLUMN promotion_id uuid REFERENCES promotions (id),
    ADD COLUMN replaced_version_id uuid REFERENCES model_versions (id);

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id),
    url         text NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Mails and webhook calls, written in the transaction of the event that causes them and
-- delivered by a worker on every replica (rows claimed FOR UPDATE SKIP LOCKED).
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('email', 'webhook')),
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    delivered_at  timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (available_at) WHERE delivered_at IS NULL;
