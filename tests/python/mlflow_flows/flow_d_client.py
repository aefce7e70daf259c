"""Flow d: the tracking API through MlflowClient: runs with params/metrics/tags (single calls and
log_batch), search_runs filters, ordering and paging, experiments search/by name/tags, delete and
restore with run_view_type, metric history, delete_tag, set_terminated FAILED."""

from __future__ import annotations

# _common first: it sets the client's environment defaults (no telemetry, short retries).
from _common import setup, write_result

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

suffix = setup()
client = MlflowClient()
exp_name = f"/Shared/churn-client-{suffix}"
exp_id = client.create_experiment(exp_name, tags={"project": "churn"})
assert isinstance(exp_id, str) and exp_id
exp = client.get_experiment_by_name(exp_name)
assert exp.experiment_id == exp_id and exp.tags.get("project") == "churn" and exp.lifecycle_stage == "active"
assert client.get_experiment_by_name(f"/Shared/no-such-{suffix}") is None
client.set_experiment_tag(exp_id, "owner", "flow-d")
assert client.get_experiment(exp_id).tags == {"project": "churn", "owner": "flow-d"}
try:
    client.create_experiment(exp_name)
    raise AssertionError("duplicate experiment name accepted")
except MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code

# Five runs: acc 0.3 .. 0.9, depth alternating 3/5, team x for even i.
runs = []
for i in range(5):
    acc = round(0.3 + 0.15 * i, 2)
    r = client.create_run(exp_id, run_name=f"run-{i}", tags={"team": "x" if i % 2 == 0 else "y"})
    rid = r.info.run_id
    if i < 3:
        client.log_param(rid, "depth", "3" if i % 2 == 0 else "5")
        client.log_metric(rid, "acc", acc)
        client.set_tag(rid, "idx", str(i))
    else:
        ts = 1_700_000_000_000 + i
        client.log_batch(
            rid,
            metrics=[Metric("acc", acc, ts, 0), Metric("loss", 1 - acc, ts, 0)],
            params=[Param("depth", "3" if i % 2 == 0 else "5")],
            tags=[RunTag("idx", str(i))],
        )
    runs.append((rid, acc))
for step in range(1, 4):
    client.log_metric(runs[0][0], "loss", 1.0 / step, step=step, timestamp=1_700_000_000_000 + step)
for rid, _ in runs[:4]:
    client.set_terminated(rid)  # FINISHED
client.set_terminated(runs[4][0], status="FAILED")
ids = [rid for rid, _ in runs]

got = client.get_run(ids[3])
assert got.data.params == {"depth": "5"} and got.data.metrics == {"acc": 0.75, "loss": 0.25}, got.data
assert got.data.tags["idx"] == "3" and got.data.tags["team"] == "y" and got.data.tags["mlflow.runName"] == "run-3"
assert client.get_run(ids[4]).info.status == "FAILED"
assert client.get_run(ids[4]).info.end_time is not None

hist = client.get_metric_history(ids[0], "loss")
assert [(m.step, m.value, m.timestamp) for m in hist] == [
    (1, 1.0, 1_700_000_000_001),
    (2, 0.5, 1_700_000_000_002),
    (3, 1.0 / 3, 1_700_000_000_003),
], hist


def names(rs):
    return [r.info.run_name for r in rs]


res = client.search_runs([exp_id], "metrics.acc > 0.5 and params.depth = '3'")
assert sorted(names(res)) == ["run-2", "run-4"], names(res)
res = client.search_runs([exp_id], "tags.team = 'x'", order_by=["metrics.acc DESC"])
assert names(res) == ["run-4", "run-2", "run-0"], names(res)
res = client.search_runs([exp_id], "attributes.status = 'FINISHED'")
assert sorted(names(res)) == ["run-0", "run-1", "run-2", "run-3"], names(res)
res = client.search_runs([exp_id], "attributes.status = 'FAILED'")
assert names(res) == ["run-4"], names(res)
res = client.search_runs([exp_id], "attributes.run_name = 'run-1'")
assert names(res) == ["run-1"]
res = client.search_runs([exp_id], "params.depth != '3' and metrics.acc <= 0.75", order_by=["metrics.acc ASC"])
assert names(res) == ["run-1", "run-3"], names(res)
res = client.search_runs([exp_id], order_by=["metrics.acc DESC"])
assert names(res) == ["run-4", "run-3", "run-2", "run-1", "run-0"], names(res)

# Paging: two at a time, in acc order, the token runs out after the last page.
seen, token, pages = [], None, 0
while True:
    page = client.search_runs([exp_id], max_results=2, order_by=["metrics.acc DESC"], page_token=token)
    pages += 1
    assert len(page) <= 2
    seen += names(page)
    token = page.token
    if not token:
        break
    assert pages < 10
assert seen == ["run-4", "run-3", "run-2", "run-1", "run-0"] and pages == 3, (seen, pages)

# delete / restore and run_view_type
client.delete_run(ids[1])
assert client.get_run(ids[1]).info.lifecycle_stage == "deleted"
active = names(client.search_runs([exp_id], run_view_type=ViewType.ACTIVE_ONLY))
deleted = names(client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY))
every = names(client.search_runs([exp_id], run_view_type=ViewType.ALL))
assert "run-1" not in active and deleted == ["run-1"] and sorted(every) == [f"run-{i}" for i in range(5)]
client.restore_run(ids[1])
assert client.get_run(ids[1]).info.lifecycle_stage == "active"
assert client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY) == []

client.delete_tag(ids[0], "idx")
assert "idx" not in client.get_run(ids[0]).data.tags

# experiments
found = client.search_experiments(filter_string=f"name = '{exp_name}'")
assert [e.experiment_id for e in found] == [exp_id]
found = client.search_experiments(filter_string=f"name LIKE '/Shared/churn-client-{suffix}%'")
assert [e.name for e in found] == [exp_name]
found = client.search_experiments(filter_string="tags.owner = 'flow-d'")
assert exp_id in [e.experiment_id for e in found]
page = client.search_experiments(max_results=1, order_by=["creation_time DESC"])
assert len(page) == 1

other = client.create_experiment(f"/Shared/churn-client-{suffix}-gone")
# Custody keeps experiments (they are projects): deleting one is refused with the reason, and
# changes nothing.
for call in (client.delete_experiment, client.restore_experiment):
    try:
        call(other)
        raise AssertionError(f"{call.__name__} accepted")
    except MlflowException as e:
        assert e.error_code == "INVALID_PARAMETER_VALUE", e.error_code
        assert "does not delete experiments" in e.message, e.message
assert client.get_experiment(other).lifecycle_stage == "active"
assert client.search_experiments(view_type=ViewType.DELETED_ONLY) == []
client.rename_experiment(other, f"/Shared/churn-client-{suffix}-renamed")
assert client.get_experiment(other).name == f"/Shared/churn-client-{suffix}-renamed"
assert client.get_experiment_by_name(f"/Shared/churn-client-{suffix}-gone") is None
try:
    client.rename_experiment(other, exp_name)
    raise AssertionError("rename onto an existing name accepted")
except MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code

try:
    client.get_run("0" * 32)
    raise AssertionError("unknown run found")
except MlflowException as e:
    assert e.error_code == "RESOURCE_DOES_NOT_EXIST", e.error_code

write_result(
    {
        "flow": "d_client",
        "experiment_id": exp_id,
        "experiment_name": exp_name,
        "other_experiment_id": other,
        "run_ids": ids,
        "accs": [a for _, a in runs],
        "failed_run_id": ids[4],
    }
)
print("flow d ok", exp_id)
