-- A metric point no longer checks its run through a foreign key. The check was a lookup and a
-- row lock of the run for every point (a 1,000-point batch ran it 1,000 times: about half of the
-- batch's insert), and it could never fail: the only writer (`runs::append_points`) writes
-- points to runs it found and share-locked in the same transaction, and its statement upserts
-- each point's series into `run_latest_metrics`, whose key to runs stays (one check a series,
-- not a point). What the key also promised, that a run with points cannot disappear, now holds
-- for every run: runs are never deleted and keep their id (their metrics, lineage edges and
-- audit entries name them).
ALTER TABLE run_metrics DROP CONSTRAINT run_metrics_run_id_fkey;

CREATE TRIGGER runs_identity_fixed
    BEFORE UPDATE OF id ON runs
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION refuse_change_of_immutable();
CREATE TRIGGER runs_no_delete
    BEFORE DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION refuse_change_of_immutable();
CREATE TRIGGER runs_no_truncate
    BEFORE TRUNCATE ON runs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_of_immutable();
