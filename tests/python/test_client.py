"""The Python SDK against the real server: client, params, metrics, artifacts, datasets, models,
errors. Everything written through the SDK is read back with raw GraphQL/HTTP (urllib), not
through the SDK under test."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import uuid

import pytest

import custody
from helpers import gql, raw_graphql

RUN_QUERY = """query($id: ID!) { run(id: $id) {
  id name status tags
  codeCommit { repository commit branch dirty }
  params { key value }
  artifacts { path sha256 size }
  inputs { id version sha256 uri dataset { name } }
} }"""


def metrics_of(server, run_id, key=None):
    # One page of up to 10,000 points (the server's largest) holds every test's history.
    q = "query($id: ID!, $k: String) { run(id: $id) { metrics(key: $k, first: 10000) { key value step } } }"
    return gql(server, q, {"id": run_id, "k": key})["run"]["metrics"]


def wait_for(predicate, timeout=20.0, what="condition"):
    """Polls `predicate` until it answers something truthy."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


# ------------------------------------------------------------------------------------------ init


def test_init_reads_the_environment(server, monkeypatch):
    monkeypatch.setenv("CUSTODY_URL", server.url)
    monkeypatch.setenv("CUSTODY_TOKEN", server.admin_token)
    client = custody.init()
    assert client.url == server.url
    assert custody.get_client() is client
    assert client.me()["email"] == "admin@localhost"


def test_init_arguments_override_the_environment(server, monkeypatch):
    monkeypatch.setenv("CUSTODY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CUSTODY_TOKEN", "not-a-token")
    client = custody.init(server.url, server.admin_token)
    assert client.me()["isAdmin"] is True


def test_the_cli_login_is_the_fallback(server, monkeypatch, tmp):
    monkeypatch.delenv("CUSTODY_URL", raising=False)
    monkeypatch.delenv("CUSTODY_TOKEN", raising=False)
    config = os.path.join(tmp, "xdg", "custody", "config.json")
    os.makedirs(os.path.dirname(config))
    with open(config, "w") as f:
        json.dump({"url": server.url, "token": server.admin_token}, f)
    monkeypatch.delenv("CUSTODY_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", os.path.join(tmp, "xdg"))
    assert custody.Client().me()["email"] == "admin@localhost"
    monkeypatch.setenv("CUSTODY_CONFIG", os.path.join(tmp, "missing.json"))
    assert custody.Client().url == custody.DEFAULT_URL
    monkeypatch.setenv("CUSTODY_CONFIG", config)
    monkeypatch.setenv("CUSTODY_TOKEN", "env-wins")
    with pytest.raises(custody.CustodyError) as err:
        custody.Client().me()
    assert err.value.code == "UNAUTHENTICATED"


def test_bad_token_is_unauthenticated(server):
    client = custody.Client(server.url, "not-a-token")
    with pytest.raises(custody.CustodyError) as err:
        client.me()
    assert err.value.code == "UNAUTHENTICATED"


def test_missing_token_says_how_to_set_it(server, monkeypatch, tmp):
    monkeypatch.delenv("CUSTODY_TOKEN", raising=False)
    monkeypatch.setenv("CUSTODY_CONFIG", os.path.join(tmp, "no-login.json"))
    client = custody.Client(server.url)
    with pytest.raises(custody.CustodyError) as err:
        client.me()
    assert err.value.code == "UNAUTHENTICATED"
    assert "CUSTODY_TOKEN" in str(err.value)


def test_unreachable_server_is_unavailable():
    from serverproc import free_port

    client = custody.Client(f"http://127.0.0.1:{free_port()}", "x", timeout=5)
    with pytest.raises(custody.CustodyError) as err:
        client.me()
    assert err.value.code == "UNAVAILABLE"


# ------------------------------------------------------------------------------------------ errors


def test_unknown_project_is_not_found(admin):
    with pytest.raises(custody.CustodyError) as err:
        custody.start_run("no-such-project-here", client=admin, git=False)
    assert err.value.code == "NOT_FOUND"
    assert "no-such-project-here" in err.value.message
    with pytest.raises(custody.CustodyError) as err:
        admin.start_run("no-such-project-here")
    assert err.value.code == "NOT_FOUND"


def test_duplicate_project_is_conflict(admin, project):
    with pytest.raises(custody.CustodyError) as err:
        admin.create_project(project)
    assert err.value.code == "CONFLICT"


def test_unknown_addresses_are_invited_and_join_when_their_account_is_created(server, admin, project):
    email = f"newcomer-{uuid.uuid4().hex[:6]}@example.com"
    with pytest.raises(custody.CustodyError) as err:
        admin.add_member(project, email, "VIEWER")
    assert err.value.code == "NOT_FOUND" and "inviteMember" in str(err.value)
    invitation = admin.invite_member(project, email, "viewer", groups=["reviewers"])
    assert invitation["email"] == email and invitation["role"] == "VIEWER"
    # The account comes to be (here: a server admin issues the newcomer a token): they join.
    token = admin.graphql("mutation($e: String!) { issueToken(email: $e) }", {"e": email})["issueToken"]
    newcomer = custody.Client(server.url, token)
    joined = newcomer.graphql(
        "query($p: String!) { project(name: $p) { name members { user { email } role groups } } }", {"p": project}
    )["project"]
    mine = [m for m in joined["members"] if m["user"]["email"] == email]
    assert mine == [{"user": {"email": email}, "role": "VIEWER", "groups": ["reviewers"]}]


def test_viewer_cannot_start_runs(server, admin, project):
    token = admin.graphql('mutation { issueToken(email: "viewer@example.com") }')["issueToken"]
    admin.add_member(project, "viewer@example.com", "VIEWER")
    viewer = custody.Client(server.url, token)
    with pytest.raises(custody.CustodyError) as err:
        custody.start_run(project, client=viewer, git=False)
    assert err.value.code == "FORBIDDEN"


def test_invalid_graphql_has_a_code(admin):
    with pytest.raises(custody.CustodyError) as err:
        admin.graphql("query { noSuchField }")
    assert err.value.code == "INVALID_INPUT"
    assert err.value.errors


def test_non_finite_metrics_are_refused_at_the_call(server, admin, project):
    with custody.start_run(project, client=admin, git=False) as run:
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ValueError):
                run.log_metric("loss", bad)
        with pytest.raises(ValueError):
            run.log_metric("", 1.0)
        with pytest.raises(ValueError):
            run.log_metric("é" * 126, 1.0)  # 252 bytes: the server's limit is 250
        with pytest.raises(ValueError):
            run.log_metric("a\x1bb", 1.0)
        run.log_metric("loss", 1.0)
    assert len(metrics_of(server, run.id)) == 1


def test_logging_to_an_ended_run_is_conflict(admin, project):
    run = custody.start_run(project, client=admin, git=False)
    run.finish()
    with pytest.raises(custody.CustodyError) as err:
        run.log_metric("x", 1.0)
    assert err.value.code == "CONFLICT"
    with pytest.raises(custody.CustodyError) as err:
        admin.log_metrics(run.id, [{"key": "x", "value": 1.0}])
    assert err.value.code == "CONFLICT"
    run.finish()  # a second finish does nothing


def test_metrics_the_server_refuses_are_reported(admin, project):
    run = custody.start_run(project, client=admin, git=False)
    try:
        admin.finish_run(run.id, "KILLED")  # ended behind the logger's back
        run.log_metric("x", 1.0)
        with pytest.raises(custody.CustodyError) as err:
            run.flush()
        assert err.value.code == "METRICS_LOST"
        assert err.value.errors[0]["extensions"]["code"] == "CONFLICT"
        with pytest.raises(custody.CustodyError) as err:
            run.finish()
        assert err.value.code == "CONFLICT"
    finally:
        custody._run._unregister_active(run)


def test_unreachable_server_loses_metrics_loudly(admin, project):
    from serverproc import free_port

    info = admin.start_run(project)
    dead = custody.Client(f"http://127.0.0.1:{free_port()}", "x", timeout=2)
    run = custody.Run(dead, info, retries=1)
    try:
        run.log_metric("x", 1.0)
        with pytest.raises(custody.CustodyError) as err:
            run.flush()
        assert err.value.code == "METRICS_LOST"
        assert err.value.errors[0]["extensions"]["code"] == "UNAVAILABLE"
    finally:
        custody._run._unregister_active(run)
        run._sender.stop(10)
        admin.finish_run(info["id"], "KILLED")


# ------------------------------------------------------------------------------------------ runs


def test_run_status_finished_and_failed(server, admin, project):
    with custody.start_run(project, name="ok", client=admin, git=False, tags={"team": "fraud"}) as run:
        pass
    data = gql(server, RUN_QUERY, {"id": run.id})["run"]
    assert data["status"] == "FINISHED"
    assert data["name"] == "ok"
    assert data["tags"] == {"team": "fraud"}
    assert data["codeCommit"] is None

    with pytest.raises(RuntimeError, match="boom"):
        with custody.start_run(project, client=admin, git=False) as failing:
            failing.log_metric("loss", 0.5)
            raise RuntimeError("boom")
    assert gql(server, RUN_QUERY, {"id": failing.id})["run"]["status"] == "FAILED"
    assert [m["value"] for m in metrics_of(server, failing.id)] == [0.5]

    with pytest.raises(KeyboardInterrupt):
        with custody.start_run(project, client=admin, git=False) as killed:
            raise KeyboardInterrupt
    assert gql(server, RUN_QUERY, {"id": killed.id})["run"]["status"] == "KILLED"


def test_params(server, admin, project):
    with custody.start_run(project, client=admin, git=False) as run:
        run.log_params({"lr": 0.01, "epochs": 10, "optimizer": "adam", "nesterov": True, "layers": [64, 32], "seed": None})
        run.log_param("extra", "x")
        run.log_params({"lr": 0.01})  # the same value again is a no-op
        with pytest.raises(custody.CustodyError) as err:
            run.log_params({"lr": 0.02})  # params are immutable
        assert err.value.code == "CONFLICT"
    params = {p["key"]: p["value"] for p in gql(server, RUN_QUERY, {"id": run.id})["run"]["params"]}
    assert params == {
        "lr": "0.01",
        "epochs": "10",
        "optimizer": "adam",
        "nesterov": "true",
        "layers": "[64, 32]",
        "seed": "null",
        "extra": "x",
    }


class CountingClient(custody.Client):
    """Records the size of every logMetrics batch the background sender posts."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches = []

    def _post_graphql(self, body):
        doc = json.loads(body)
        if "logMetrics" in doc["query"]:
            self.batches.append(len(doc["variables"]["m"]))
        return super()._post_graphql(body)


def test_many_metrics_all_arrive_in_batches(server, project):
    client = CountingClient(server.url, server.admin_token)
    keys = ["loss", "accuracy", "lr", "grad_norm", "val/loss"]
    per_key = 1000
    started = time.perf_counter()
    with custody.start_run(project, client=client, git=False, flush_interval=30) as run:
        for step in range(per_key):
            for i, key in enumerate(keys):
                run.log_metric(key, step * 0.001 + i, step=step)
        enqueue_seconds = time.perf_counter() - started
    # log_metric only enqueues: 5,000 calls take milliseconds, not 5,000 round trips.
    assert enqueue_seconds < 2.0, enqueue_seconds
    assert sum(client.batches) == 5000
    assert max(client.batches) <= 1000
    assert len(client.batches) <= 20, client.batches  # batched, not one call per metric
    for i, key in enumerate(keys):
        got = metrics_of(server, run.id, key)
        assert len(got) == per_key, key
        assert [m["step"] for m in got] == list(range(per_key))
        assert all(m["key"] == key for m in got)
        assert [m["value"] for m in got] == pytest.approx([s * 0.001 + i for s in range(per_key)])
    assert len(metrics_of(server, run.id)) == 5000


def test_run_metrics_reads_a_history_longer_than_one_page(server, admin, project):
    # The bulk export streams the server's keyset pages of 10,000 points as one response.
    with custody.start_run(project, client=admin, git=False, flush_interval=30) as run:
        for step in range(10_500):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_metric("acc", 0.5, step=0)
    got = admin.run_metrics(run.id, "loss")
    assert [m["step"] for m in got] == list(range(10_500))
    assert got[-1]["value"] == pytest.approx(1.0 / 10_500)
    everything = admin.run_metrics(run.id)
    assert [m["key"] for m in everything] == ["acc"] + ["loss"] * 10_500
    # The same points, written the same way, as a GraphQL page of `Run.metrics`.
    page = admin.graphql('query($id: ID!) { run(id: $id) { metrics(first: 3) { key value step timestamp } } }',
                         {"id": run.id})["run"]["metrics"]
    assert everything[:3] == page

    outsider = custody.Client(server.url, admin.graphql('mutation { issueToken(email: "history-outsider@example.com") }')["issueToken"])
    with pytest.raises(custody.CustodyError) as err:
        outsider.run_metrics(run.id)
    assert err.value.code == "NOT_FOUND" and err.value.status == 404
    with pytest.raises(custody.CustodyError) as err:
        admin.run_metrics("not-a-run")
    assert err.value.code == "INVALID_INPUT"
    with pytest.raises(custody.CustodyError) as err:
        custody.Client(server.url, "not-a-token").run_metrics(run.id)
    assert err.value.code == "UNAUTHENTICATED"


def test_metrics_flush_on_the_interval(server, admin, project):
    run = custody.start_run(project, client=admin, git=False, flush_interval=0.2)
    try:
        run.log_metric("loss", 0.25, step=3)
        run.log_metric("loss", 0.125)  # no step: the server's default 0
        got = wait_for(lambda: len(metrics_of(server, run.id)) == 2 and metrics_of(server, run.id), what="interval flush")
        assert sorted((m["step"], m["value"]) for m in got) == [(0, 0.125), (3, 0.25)]
        assert run.pending_metrics == 0
    finally:
        run.finish()


def test_flush_waits_for_the_server(server, admin, project):
    with custody.start_run(project, client=admin, git=False, flush_interval=60) as run:
        for i in range(2500):
            run.log_metric("m", float(i), step=i)
        run.flush()
        assert len(metrics_of(server, run.id, "m")) == 2500
        run.log_metrics({"a": 1, "b": 2}, step=7)
        run.flush()
        assert {(m["key"], m["step"]) for m in metrics_of(server, run.id)} >= {("a", 7), ("b", 7)}


def test_metric_timestamps_are_the_logging_time(server, admin, project):
    import datetime as dt

    at = dt.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=dt.timezone.utc)
    with custody.start_run(project, client=admin, git=False) as run:
        run.log_metric("t", 1.0, timestamp=at)
        before = time.time()
        run.log_metric("u", 2.0)
    q = "query($id: ID!) { run(id: $id) { metrics { key timestamp } } }"
    stamps = {m["key"]: m["timestamp"] for m in gql(server, q, {"id": run.id})["run"]["metrics"]}
    assert dt.datetime.fromisoformat(stamps["t"].replace("Z", "+00:00")) == at
    u = dt.datetime.fromisoformat(stamps["u"].replace("Z", "+00:00")).timestamp()
    assert before - 1 <= u <= time.time() + 1


# ------------------------------------------------------------------------------------------ artifacts


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _get(server, route, headers=None):
    req = urllib.request.Request(server.url + route, headers={"Authorization": f"Bearer {server.admin_token}", **(headers or {})})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, dict(resp.headers), resp.read()


def test_log_artifact_round_trip(server, admin, project, tmp):
    big = os.path.join(tmp, "weights.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    tree = os.path.join(tmp, "plots")
    os.makedirs(os.path.join(tree, "sub dir"))
    with open(os.path.join(tree, "a.txt"), "w") as f:
        f.write("alpha\n")
    with open(os.path.join(tree, "sub dir", "é b.csv"), "w") as f:
        f.write("x,y\n1,2\n")

    with custody.start_run(project, client=admin, git=False) as run:
        stored = run.log_artifact(big)
        assert stored == [{"path": "weights.bin", "sha256": _sha(big), "size": os.path.getsize(big)}]
        stored = run.log_artifact(tree, "reports")
        assert sorted(a["path"] for a in stored) == ["reports/plots/a.txt", "reports/plots/sub dir/é b.csv"]
        again = run.log_artifact(big)  # same bytes: not sent again, same answer
        assert again[0]["sha256"] == _sha(big)

    listed = {a["path"]: a for a in gql(server, RUN_QUERY, {"id": run.id})["run"]["artifacts"]}
    assert set(listed) == {"weights.bin", "reports/plots/a.txt", "reports/plots/sub dir/é b.csv"}
    assert listed["weights.bin"]["sha256"] == _sha(big)

    # Download through the HTTP route (not the SDK) and compare digests.
    status, headers, body = _get(server, f"/api/artifacts/run/{run.id}/weights.bin")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == _sha(big)
    assert headers.get("X-Custody-Sha256", headers.get("x-custody-sha256")) == _sha(big)
    quoted = urllib.parse.quote("reports/plots/sub dir/é b.csv")
    _, _, body = _get(server, f"/api/artifacts/run/{run.id}/{quoted}")
    assert body == b"x,y\n1,2\n"

    # And through the SDK's streaming download.
    back = os.path.join(tmp, "back", "weights.bin")
    got = admin.download_artifact("run", run.id, "weights.bin", back)
    assert got["sha256"] == _sha(big) == _sha(back)


def test_artifact_errors_have_codes(admin, project, tmp):
    path = os.path.join(tmp, "f.txt")
    with open(path, "w") as f:
        f.write("one")
    with custody.start_run(project, client=admin, git=False) as run:
        with pytest.raises(custody.CustodyError) as err:
            admin.upload_artifact("run", run.id, "f.txt", path, sha256="0" * 64)
        assert err.value.code == "INVALID_INPUT" and err.value.status == 400
        run.log_artifact(path)
        with open(path, "w") as f:
            f.write("two")
        with pytest.raises(custody.CustodyError) as err:
            run.log_artifact(path)  # a run's paths are immutable
        assert err.value.code == "CONFLICT" and err.value.status == 409
        with pytest.raises(custody.CustodyError) as err:
            admin.download_artifact("run", run.id, "missing.txt", os.path.join(tmp, "x"))
        assert err.value.code == "NOT_FOUND"
        assert not os.path.exists(os.path.join(tmp, "x"))
        with pytest.raises(FileNotFoundError):
            run.log_artifact(os.path.join(tmp, "nope"))


# ------------------------------------------------------------------------------------------ datasets


def _dir_digest(root):
    """The documented directory digest (the canonical manifest JSON), computed independently of
    the SDK."""
    entries = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            entries.append({"path": rel, "sha256": _sha(full), "size": os.path.getsize(full)})
    entries.sort(key=lambda e: e["path"].encode())
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_use_dataset_file_and_directory(server, admin, project, tmp):
    csv = os.path.join(tmp, "train.csv")
    with open(csv, "w") as f:
        f.write("a,b\n1,2\n3,4\n")
    shards = os.path.join(tmp, "shards")
    os.makedirs(os.path.join(shards, "b"))
    for rel, text in [("z.txt", "zz"), ("b/1.txt", "one"), ("a.txt", "aa"), ('b/é "q".txt', "!")]:
        with open(os.path.join(shards, rel), "w") as f:
            f.write(text)

    with custody.start_run(project, client=admin, git=False) as run:
        v1 = run.use_dataset(csv)
        assert v1["sha256"] == _sha(csv)
        assert v1["sizeBytes"] == os.path.getsize(csv)
        assert v1["uri"] == "file://" + os.path.abspath(csv)
        v2 = run.use_dataset(shards, "images", tags=["raw"])
        assert v2["sha256"] == _dir_digest(shards)
        assert v2["sizeBytes"] == 8
        assert v2["tags"] == ["raw"]
        again = run.use_dataset(csv)  # same data: the same version, linked once
        assert again["id"] == v1["id"]
        with pytest.raises(ValueError, match="sha256"):
            run.use_dataset("s3://bucket/data.parquet")
        remote = run.use_dataset("s3://bucket/data.parquet", sha256="ab" * 32, size_bytes=123)
        assert remote["uri"] == "s3://bucket/data.parquet"

    inputs = gql(server, RUN_QUERY, {"id": run.id})["run"]["inputs"]
    assert sorted((i["dataset"]["name"], i["sha256"]) for i in inputs) == sorted(
        [("train", _sha(csv)), ("images", _dir_digest(shards)), ("data", "ab" * 32)]
    )
    lineage = gql(
        server,
        "query($n: NodeRef!) { lineage(node: $n, direction: UPSTREAM, depth: 1) { edges { to { kind id } relation } } }",
        {"n": {"kind": "RUN", "id": run.id}},
    )["lineage"]["edges"]
    consumed = {e["to"]["id"] for e in lineage if e["relation"] == "consumed"}
    assert {v1["id"], v2["id"], remote["id"]} == consumed

    # A later run on changed data gets a new version of the same dataset.
    with open(csv, "a") as f:
        f.write("5,6\n")
    with custody.start_run(project, client=admin, git=False, datasets=[csv]) as second:
        pass
    inputs = gql(server, RUN_QUERY, {"id": second.id})["run"]["inputs"]
    assert [(i["dataset"]["name"], i["version"], i["sha256"]) for i in inputs] == [("train", 2, _sha(csv))]


def test_datasets_given_to_start_run_are_inputs_from_the_start(server, admin, project, tmp):
    csv = os.path.join(tmp, "iris.data.csv")
    with open(csv, "w") as f:
        f.write("x\n1\n")
    spec = custody.DatasetSpec(csv, name="flowers", tags=["gold"])
    run = custody.start_run(project, client=admin, git=False, datasets=[spec])
    try:
        inputs = gql(server, RUN_QUERY, {"id": run.id})["run"]["inputs"]
        assert [(i["dataset"]["name"], i["sha256"]) for i in inputs] == [("flowers", _sha(csv))]
    finally:
        run.finish()


# ------------------------------------------------------------------------------------------ models


def test_register_model_from_a_file_and_a_directory(server, admin, project, tmp):
    model_file = os.path.join(tmp, "model.pkl")
    with open(model_file, "wb") as f:
        f.write(os.urandom(4096))
    model_dir = os.path.join(tmp, "export")
    os.makedirs(os.path.join(model_dir, "variables"))
    for rel in ("saved_model.pb", "variables/data-0"):
        with open(os.path.join(model_dir, rel), "wb") as f:
            f.write(os.urandom(100))

    with custody.start_run(project, client=admin, git=False) as run:
        run.log_metric("accuracy", 0.93)
        v1 = run.register_model("churn", model_file, primary_metric="accuracy")
        v2 = run.register_model("churn", model_dir, description="saved model")
        # An existing artifact path of the run (nothing local at that path).
        run.log_artifact(model_file, "exports")
        v3 = run.register_model("churn-copy", "exports/model.pkl")
    assert (v1["version"], v2["version"], v3["version"]) == (1, 2, 1)

    q = """query($p: String!, $m: String!, $v: Int!) { modelVersion(project: $p, model: $m, version: $v) {
      version artifactPath artifacts { path sha256 size } run { id status metrics(key: "accuracy") { value } } } }"""
    one = gql(server, q, {"p": project, "m": "churn", "v": 1})["modelVersion"]
    assert one["artifactPath"] == "model/model.pkl"
    assert one["artifacts"] == [{"path": "model.pkl", "sha256": _sha(model_file), "size": 4096}]
    assert one["run"]["id"] == run.id and one["run"]["status"] == "FINISHED"
    assert [m["value"] for m in one["run"]["metrics"]] == [0.93]
    two = gql(server, q, {"p": project, "m": "churn", "v": 2})["modelVersion"]
    assert two["artifactPath"] == "model/export"
    assert sorted(a["path"] for a in two["artifacts"]) == ["saved_model.pb", "variables/data-0"]
    # A directory's local digest is the manifest digest the server computes for its files.
    assert v2["manifestSha256"] == custody.hash_path(model_dir)[0] == _dir_digest(model_dir)
    model = gql(server, 'query($p: String!) { model(project: $p, name: "churn") { primaryMetric versions { version } } }', {"p": project})
    assert model["model"]["primaryMetric"] == "accuracy"
    assert [v["version"] for v in model["model"]["versions"]] == [1, 2]

    # The version's files download from the model version too.
    _, _, body = _get(server, f"/api/artifacts/model-version/{v1['id']}/model.pkl")
    assert hashlib.sha256(body).hexdigest() == _sha(model_file)

    lineage = gql(
        server,
        "query($n: NodeRef!) { lineage(node: $n, direction: UPSTREAM, depth: 1) { edges { to { kind id } relation } } }",
        {"n": {"kind": "MODEL_VERSION", "id": v1["id"]}},
    )["lineage"]["edges"]
    assert {"to": {"kind": "RUN", "id": run.id}, "relation": "produced_by"} in lineage


def test_register_model_without_files_is_invalid(admin, project):
    with custody.start_run(project, client=admin, git=False) as run:
        with pytest.raises(custody.CustodyError) as err:
            run.register_model("m", "no/such/artifact")
        assert err.value.code == "INVALID_INPUT"


def test_raw_errors_match_the_sdk(server):
    # The SDK's code is the server's extensions.code.
    doc = raw_graphql(server.url, server.admin_token, 'mutation { startRun(project: "nope-nope") { id } }')
    assert doc["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_search_runs_filters_orders_and_pages(admin, project):
    runs = []
    for i in range(7):
        run = admin.start_run(project, name=f"r{i}")
        admin.log_params(run["id"], {"depth": i % 2})
        admin.log_metrics(run["id"], [{"key": "auc", "value": i / 10, "step": 1}])
        runs.append(run["id"])
    found = admin.search_runs("metrics.auc >= 0.2 and params.depth = '0'", projects=[project], order_by=["metrics.auc DESC"])
    assert [r["name"] for r in found] == ["r6", "r4", "r2"]
    # max_results caps the answer.
    everything = admin.search_runs(projects=[project], order_by=["attributes.run_name"], max_results=5)
    assert [r["name"] for r in everything] == ["r0", "r1", "r2", "r3", "r4"]
    with pytest.raises(custody.CustodyError) as err:
        admin.search_runs("metrics.auc >> 1", projects=[project])
    assert err.value.code == "INVALID_INPUT"
    assert "column 14" in str(err.value)


def test_access_tokens_and_service_accounts_through_the_sdk(server, admin, project):
    """A CI job logs through a service account's token; a read-only token reads and is refused
    writes; revoked tokens stop working. All with the SDK's own Client."""
    admin.create_service_account(project, "ci")
    created = admin.create_service_account_token(project, "ci", "github-actions", expires_in="1d")
    assert created["secret"].startswith("cst_")
    assert created["token"]["project"]["name"] == project
    ci = custody.Client(server.url, created["secret"])
    run = ci.start_run(project, "nightly")
    assert ci.run(run["id"])["name"] == "nightly"
    with pytest.raises(custody.CustodyError) as refused:
        ci.create_project(f"elsewhere-{project}")
    assert refused.value.code == "FORBIDDEN"

    reader_token = admin.create_access_token("dashboard", read_only=True, project=project)
    reader = custody.Client(server.url, reader_token["secret"])
    assert reader.run(run["id"])["id"] == run["id"]
    with pytest.raises(custody.CustodyError) as refused:
        reader.start_run(project, "nope")
    assert refused.value.code == "FORBIDDEN"
    listed = {t["name"]: t for t in admin.access_tokens()}
    assert listed["dashboard"]["readOnly"] is True
    assert listed["dashboard"]["lastUsedAt"] is not None
    assert "secret" not in listed["dashboard"]

    admin.revoke_access_token(reader_token["token"]["id"])
    with pytest.raises(custody.CustodyError) as refused:
        reader.run(run["id"])
    assert refused.value.code == "UNAUTHENTICATED"
