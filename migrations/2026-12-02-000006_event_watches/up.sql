-- Live events (GraphQL subscriptions) across replicas.
--
-- A writer announces a change with pg_notify inside its transaction, so every replica hears it
-- exactly when it commits. NOTIFY serialises committing transactions on a database-wide lock,
-- so writers announce only the topics some replica watches: each replica keeps one row per topic
-- it has subscribers for (`run:<id>`, `project:<id>`), refreshes it while they stay, and lets it
-- expire when they leave or the replica stops. Unlogged: a crash may lose the rows, and the
-- replicas write them again within a refresh.
CREATE UNLOGGED TABLE event_watches (
    topic text NOT NULL,
    replica uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic, replica)
);
