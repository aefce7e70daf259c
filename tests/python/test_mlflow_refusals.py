"""MLflow's REST API refuses as MLflow does (error JSON with `error_code`, the HTTP status MLflow
gives it, so the real client raises the exception users catch) and a refused request changes
nothing: outsiders see nothing of another project's experiments and runs, viewers and read-only
tokens write nothing, anonymous callers get 401, and malformed, oversized or rule-breaking
requests leave the run exactly as it was (checked through GraphQL and the audit log).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

import custody
from helpers import raw_graphql
from test_mlflow import admin_gql, audit_actions, issue_token

import mlflow  # noqa: E402  (installed by .ci/run; a missing client fails, never skips)
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


def call(server, token, method: str, path: str, body=None, raw: bytes | None = None):
    """One request to the MLflow API; answers (status, JSON body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def owner(server):
    """A person with an experiment holding one running run with a param, a metric and a tag."""
    email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    token = issue_token(server, email)
    name = f"/Teams/risk/refusals-{uuid.uuid4().hex[:6]}"
    status, body = call(server, token, "POST", "/api/2.0/mlflow/experiments/create", {"name": name})
    assert status == 200, body
    experiment_id = body["experiment_id"]
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/create",
                        {"experiment_id": experiment_id, "run_name": "guarded"})
    assert status == 200, body
    run_id = body["run"]["info"]["run_id"]
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/log-batch", {
        "run_id": run_id,
        "metrics": [{"key": "acc", "value": 0.5, "timestamp": 1, "step": 0}],
        "params": [{"key": "depth", "value": "3"}],
        "tags": [{"key": "team", "value": "risk"}],
    })
    assert status == 200, body
    project = admin_gql(server, "query($id: ID!) { run(id: $id) { project { name } } }", {"id": run_id})
    return {"email": email, "token": token, "experiment_id": experiment_id, "experiment_name": name,
            "run_id": run_id, "project": project["run"]["project"]["name"]}


SNAPSHOT = """query($id: ID!) { run(id: $id) {
  name status tags params { key value } metrics { key value step } inputs { id } artifacts { path }
} }"""


def snapshot(server, owner) -> tuple:
    run = admin_gql(server, SNAPSHOT, {"id": owner["run_id"]})["run"]
    return json.dumps(run, sort_keys=True), len(audit_actions(server, owner["project"]))


def assert_refused(status, body, http_status: int, code: str, contains: str = ""):
    assert status == http_status, (status, body)
    assert body.get("error_code") == code, body
    assert contains in body.get("message", ""), body


def test_anonymous_callers_get_401_and_nothing_else(server, owner):
    before = snapshot(server, owner)
    status, body = call(server, None, "GET", f"/api/2.0/mlflow/runs/get?run_id={owner['run_id']}")
    assert_refused(status, body, 401, "UNAUTHENTICATED")
    status, body = call(server, "not-a-token", "POST", "/api/2.0/mlflow/runs/log-metric",
                        {"run_id": owner["run_id"], "key": "acc", "value": 1.0, "timestamp": 2})
    assert_refused(status, body, 401, "UNAUTHENTICATED")
    # A flood of anonymous writes: every one refused, the server still answers its callers.
    for _ in range(200):
        status, _ = call(server, None, "POST", "/api/2.0/mlflow/runs/log-metric",
                         {"run_id": owner["run_id"], "key": "acc", "value": 1.0})
        assert status == 401
    assert call(server, owner["token"], "GET", f"/api/2.0/mlflow/runs/get?run_id={owner['run_id']}")[0] == 200
    assert snapshot(server, owner) == before


def test_outsiders_find_nothing_and_change_nothing(server, owner):
    outsider = issue_token(server, f"outsider-{uuid.uuid4().hex[:8]}@example.com")
    before = snapshot(server, owner)
    run, exp = owner["run_id"], owner["experiment_id"]
    # Every read answers as if the experiment and run did not exist.
    for path in (f"/api/2.0/mlflow/runs/get?run_id={run}",
                 f"/api/2.0/mlflow/experiments/get?experiment_id={exp}",
                 f"/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=acc"):
        status, body = call(server, outsider, "GET", path)
        assert_refused(status, body, 404, "RESOURCE_DOES_NOT_EXIST")
    missing_run = str(uuid.uuid4())
    status, unknown = call(server, outsider, "GET", f"/api/2.0/mlflow/runs/get?run_id={missing_run}")
    status2, hidden = call(server, outsider, "GET", f"/api/2.0/mlflow/runs/get?run_id={run}")
    assert (status, unknown["error_code"]) == (status2, hidden["error_code"])
    assert hidden["message"] == unknown["message"].replace(missing_run, run)
    # The real client raises what users catch; the name lookup answers "no such experiment".
    client = MlflowClient(tracking_uri=server.url)
    import os
    os.environ["MLFLOW_TRACKING_TOKEN"] = outsider
    try:
        assert client.get_experiment_by_name(owner["experiment_name"]) is None
        with pytest.raises(MlflowException) as e:
            client.get_run(run)
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        # Searches over someone else's experiment find nothing.
        assert client.search_runs([exp]) == []
        assert exp not in [x.experiment_id for x in client.search_experiments()]
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]
    # Every write is refused the same way.
    for path, body in (
        ("/api/2.0/mlflow/runs/log-metric", {"run_id": run, "key": "acc", "value": 9.0, "timestamp": 3}),
        ("/api/2.0/mlflow/runs/log-parameter", {"run_id": run, "key": "new", "value": "x"}),
        ("/api/2.0/mlflow/runs/set-tag", {"run_id": run, "key": "team", "value": "stolen"}),
        ("/api/2.0/mlflow/runs/update", {"run_id": run, "status": "KILLED"}),
        ("/api/2.0/mlflow/runs/delete", {"run_id": run}),
        ("/api/2.0/mlflow/runs/create", {"experiment_id": exp}),
        ("/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": exp, "key": "k", "value": "v"}),
        ("/api/2.0/mlflow/experiments/update", {"experiment_id": exp, "new_name": "mine"}),
        ("/api/2.0/mlflow/runs/log-inputs", {"run_id": run, "datasets": [{"dataset": {
            "name": "stolen", "digest": "00ff00ff", "source_type": "s3", "source": "{}"}}]}),
        ("/api/2.0/mlflow/runs/outputs", {"run_id": run, "models": []}),
        ("/api/2.0/mlflow/logged-models", {"experiment_id": exp, "name": "mine", "source_run_id": run}),
    ):
        status, answer = call(server, outsider, "POST", path, body)
        assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    assert snapshot(server, owner) == before


def test_viewers_and_read_only_tokens_read_but_write_nothing(server, owner):
    viewer_email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    viewer = issue_token(server, viewer_email)
    custody.Client(server.url, owner["token"]).add_member(owner["project"], viewer_email, "VIEWER")
    read_only = custody.Client(server.url, owner["token"]).create_access_token("ro", read_only=True)["secret"]
    before = snapshot(server, owner)
    for token in (viewer, read_only):
        status, body = call(server, token, "GET", f"/api/2.0/mlflow/runs/get?run_id={owner['run_id']}")
        assert status == 200 and body["run"]["data"]["params"] == [{"key": "depth", "value": "3"}]
        for path, req in (
            ("/api/2.0/mlflow/runs/log-metric", {"run_id": owner["run_id"], "key": "acc", "value": 9.0}),
            ("/api/2.0/mlflow/runs/create", {"experiment_id": owner["experiment_id"]}),
            ("/api/2.0/mlflow/runs/set-tag", {"run_id": owner["run_id"], "key": "team", "value": "x"}),
        ):
            status, answer = call(server, token, "POST", path, req)
            assert_refused(status, answer, 403, "PERMISSION_DENIED")
    assert snapshot(server, owner) == before


def test_malformed_oversized_and_rule_breaking_requests_change_nothing(server, owner):
    token, run = owner["token"], owner["run_id"]
    before = snapshot(server, owner)
    refusals = [
        # Not JSON; a required field missing; a run id that is not one.
        ("POST", "/api/2.0/mlflow/runs/log-metric", None, b"{not json", 400, "INVALID_PARAMETER_VALUE", "malformed"),
        ("POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": run, "value": 1.0}, None, 400,
         "INVALID_PARAMETER_VALUE", "'key'"),
        ("GET", "/api/2.0/mlflow/runs/get?run_id=../../etc", None, None, 404, "RESOURCE_DOES_NOT_EXIST", ""),
        # A metric value that is not a number, and one that is not finite.
        ("POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": run, "key": "acc", "value": "high"}, None, 400,
         "INVALID_PARAMETER_VALUE", "not a number"),
        ("POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": run, "key": "acc", "value": "NaN"}, None, 400,
         "INVALID_PARAMETER_VALUE", "non-finite"),
        # Params never change (the same value again is fine, see below).
        ("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run, "key": "depth", "value": "4"}, None, 400,
         "INVALID_PARAMETER_VALUE", "Changing param values is not allowed"),
        # A batch over MLflow's limits, and one whose last tag is bad: refused whole.
        ("POST", "/api/2.0/mlflow/runs/log-batch",
         {"run_id": run, "metrics": [{"key": "m", "value": i, "timestamp": 1, "step": i} for i in range(1001)]},
         None, 400, "INVALID_PARAMETER_VALUE", "at most"),
        ("POST", "/api/2.0/mlflow/runs/log-batch",
         {"run_id": run, "metrics": [{"key": "loss", "value": 0.1, "timestamp": 1, "step": 1}],
          "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "ok", "value": "1"}, {"key": "bad\u0007", "value": "x"}]},
         None, 400, "INVALID_PARAMETER_VALUE", "tag key"),
        # Custody stores every file itself: an experiment elsewhere is refused.
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "x-" + uuid.uuid4().hex, "artifact_location": "s3://else/where"},
         None, 400, "INVALID_PARAMETER_VALUE", "artifact_location"),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": owner["experiment_name"]}, None, 400,
         "RESOURCE_ALREADY_EXISTS", "already exists"),
        ("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [owner["experiment_id"]], "filter": "metrics.acc >> 1"},
         None, 400, "INVALID_PARAMETER_VALUE", "filter"),
        # Endpoints Custody does not serve say so in MLflow's words.
        ("POST", "/api/2.0/mlflow/traces", {}, None, 404, "ENDPOINT_NOT_FOUND", "does not serve"),
    ]
    for method, path, body, raw, http_status, code, contains in refusals:
        status, answer = call(server, token, method, path, body, raw)
        assert_refused(status, answer, http_status, code, contains)
    assert snapshot(server, owner) == before
    # The same param value again is not a change: accepted, and still nothing changes.
    status, _ = call(server, token, "POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run, "key": "depth", "value": "3"})
    assert status == 200
    assert snapshot(server, owner) == before


def test_an_ended_run_is_sealed(server, tmp):
    token = issue_token(server, f"sealed-{uuid.uuid4().hex[:8]}@example.com")
    _, body = call(server, token, "POST", "/api/2.0/mlflow/experiments/create", {"name": "sealed-" + uuid.uuid4().hex[:8]})
    _, body = call(server, token, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": body["experiment_id"]})
    run = body["run"]["info"]["run_id"]
    assert call(server, token, "POST", "/api/2.0/mlflow/runs/update", {"run_id": run, "status": "FINISHED"})[0] == 200
    # Saying it again changes nothing; reopening or logging more is refused.
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/update", {"run_id": run, "status": "FINISHED"})
    assert status == 200 and body["run_info"]["status"] == "FINISHED"
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/update", {"run_id": run, "status": "RUNNING"})
    assert_refused(status, body, 400, "INVALID_STATE", "does not reopen")
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": run, "key": "a", "value": 1})
    assert_refused(status, body, 400, "INVALID_STATE", "takes no more metrics")
    doc = raw_graphql(server.url, server.admin_token, "query($id: ID!) { run(id: $id) { status metrics { key } } }", {"id": run})
    assert doc["data"]["run"] == {"status": "FINISHED", "metrics": []}


def put(server, token, path: str, data: bytes):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(server.url + path, data=data, headers=headers, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def registered(server, owner):
    """The owner's run holds `model/MLmodel`, registered as version 1 of a model."""
    token, run = owner["token"], owner["run_id"]
    status, body = put(server, token, f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/model/MLmodel", b"flavors: {}\n")
    assert status == 200, body
    name = f"guarded-{uuid.uuid4().hex[:6]}"
    assert call(server, token, "POST", "/api/2.0/mlflow/registered-models/create", {"name": name})[0] == 200
    status, body = call(server, token, "POST", "/api/2.0/mlflow/model-versions/create",
                        {"name": name, "source": f"runs:/{run}/model", "run_id": run})
    assert status == 200, body
    return {"name": name, "qualified": f"{owner['project']}~{name}", "run_id": run}


def test_outsiders_reach_no_registered_model_version_or_file(server, owner, registered):
    outsider = issue_token(server, f"outsider-{uuid.uuid4().hex[:8]}@example.com")
    before = snapshot(server, owner)
    run = registered["run_id"]
    for name in (registered["name"], registered["qualified"]):
        for method, path, body in (
            ("GET", f"/api/2.0/mlflow/registered-models/get?name={name}", None),
            ("GET", f"/api/2.0/mlflow/model-versions/get?name={name}&version=1", None),
            ("GET", f"/api/2.0/mlflow/model-versions/get-download-uri?name={name}&version=1", None),
            ("POST", "/api/2.0/mlflow/model-versions/transition-stage", {"name": name, "version": "1", "stage": "Archived"}),
            ("POST", "/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": "mine", "version": "1"}),
            ("POST", "/api/2.0/mlflow/model-versions/create", {"name": name, "source": f"runs:/{run}/model", "run_id": run}),
            ("POST", "/api/2.0/mlflow/registered-models/set-tag", {"name": name, "key": "k", "value": "v"}),
        ):
            status, answer = call(server, outsider, method, path, body)
            assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    # Searches find nothing of the owner's.
    status, answer = call(server, outsider, "GET", f"/api/2.0/mlflow/model-versions/search?filter=name%3D'{registered['name']}'")
    assert status == 200 and not answer.get("model_versions"), answer
    status, answer = call(server, outsider, "GET", "/api/2.0/mlflow/registered-models/search")
    assert registered["name"] not in json.dumps(answer)
    # Files: neither listed, read nor written.
    status, answer = call(server, outsider, "GET", f"/api/2.0/mlflow-artifacts/artifacts?path=runs/{run}/model")
    assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    status, answer = call(server, outsider, "GET", f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/model/MLmodel")
    assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    status, answer = put(server, outsider, f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/model/MLmodel", b"evil")
    assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    status, answer = put(server, None, f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/x.bin", b"anonymous")
    assert_refused(status, answer, 401, "UNAUTHENTICATED")
    assert snapshot(server, owner) == before


def test_a_bare_name_means_the_callers_own_model(server, owner, registered):
    """Another team registers a model of the same name: each caller's bare name answers the
    version of the model it can read, never the other team's."""
    other = issue_token(server, f"other-{uuid.uuid4().hex[:8]}@example.com")
    status, body = call(server, other, "POST", "/api/2.0/mlflow/experiments/create",
                        {"name": f"/Teams/other-{uuid.uuid4().hex[:6]}/same-name"})
    assert status == 200, body
    status, body = call(server, other, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": body["experiment_id"]})
    assert status == 200, body
    run = body["run"]["info"]["run_id"]
    status, body = put(server, other, f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/model/MLmodel", b"flavors: {}\n")
    assert status == 200, body
    name = registered["name"]
    assert call(server, other, "POST", "/api/2.0/mlflow/registered-models/create", {"name": name})[0] == 200
    status, body = call(server, other, "POST", "/api/2.0/mlflow/model-versions/create",
                        {"name": name, "source": f"runs:/{run}/model", "run_id": run})
    assert status == 200, body
    path = f"/api/2.0/mlflow/model-versions/get?name={name}&version=1"
    status, mine = call(server, other, "GET", path)
    assert status == 200 and mine["model_version"]["run_id"] == run, mine
    status, theirs = call(server, owner["token"], "GET", path)
    assert status == 200 and theirs["model_version"]["run_id"] == registered["run_id"], theirs
    status, answer = call(server, other, "GET", f"/api/2.0/mlflow/model-versions/get?name={name}&version=2")
    assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    # A search of the name answers each caller its own versions only, under the bare name (no
    # other project it reads holds a model of that name).
    search = f"/api/2.0/mlflow/model-versions/search?filter=name%3D'{name}'"
    for token, run_id in ((other, run), (owner["token"], registered["run_id"])):
        status, found = call(server, token, "GET", search)
        assert status == 200, found
        assert [(v["name"], v["run_id"]) for v in found["model_versions"]] == [(name, run_id)], found


def test_artifact_paths_that_escape_or_rewrite_are_refused(server, owner, registered):
    token, run = owner["token"], registered["run_id"]
    before = snapshot(server, owner)
    for path in (f"runs/{run}/a/%2E%2E/%2E%2E/etc/passwd", f"runs/{run}/a//b", f"elsewhere/{run}/x", "runs/not-an-id/x"):
        status, answer = put(server, token, f"/api/2.0/mlflow-artifacts/artifacts/{path}", b"x")
        assert_refused(status, answer, 400, "INVALID_PARAMETER_VALUE")
    # A registered version's files never change, not even through its own owner.
    status, body = call(server, token, "GET", f"/api/2.0/mlflow/model-versions/get-download-uri?name={registered['name']}&version=1")
    assert status == 200
    version_root = body["artifact_uri"].removeprefix("mlflow-artifacts:/")
    status, answer = put(server, token, f"/api/2.0/mlflow-artifacts/artifacts/{version_root}/MLmodel", b"swapped")
    assert_refused(status, answer, 403, "PERMISSION_DENIED", "never change")
    status, answer = call(server, token, "DELETE", f"/api/2.0/mlflow-artifacts/artifacts/runs/{run}/model/MLmodel")
    assert status == 403, answer
    req = urllib.request.Request(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{version_root}/MLmodel",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.read() == b"flavors: {}\n"
    assert snapshot(server, owner) == before


def test_outsiders_reach_no_logged_model(server, owner):
    token, run, exp = owner["token"], owner["run_id"], owner["experiment_id"]
    status, body = call(server, token, "POST", "/api/2.0/mlflow/logged-models",
                        {"experiment_id": exp, "name": "guarded-model", "source_run_id": run})
    assert status == 200, body
    model_id = body["model"]["info"]["model_id"]
    outsider = issue_token(server, f"outsider-{uuid.uuid4().hex[:8]}@example.com")
    before = snapshot(server, owner)
    for method, path, req in (
        ("GET", f"/api/2.0/mlflow/logged-models/{model_id}", None),
        ("PATCH", f"/api/2.0/mlflow/logged-models/{model_id}", {"model_id": model_id, "status": "LOGGED_MODEL_READY"}),
        ("PATCH", f"/api/2.0/mlflow/logged-models/{model_id}/tags", {"tags": [{"key": "k", "value": "v"}]}),
        ("POST", f"/api/2.0/mlflow/logged-models/{model_id}/params", {"params": [{"key": "k", "value": "v"}]}),
        ("POST", "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [exp]}),
    ):
        status, answer = call(server, outsider, method, path, req)
        assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    status, answer = put(server, outsider, f"/api/2.0/mlflow-artifacts/artifacts/logged-models/{model_id}/MLmodel", b"x")
    assert_refused(status, answer, 404, "RESOURCE_DOES_NOT_EXIST")
    # A search naming more experiments than any caller needs is refused before any query.
    status, answer = call(server, token, "POST", "/api/2.0/mlflow/runs/search",
                          {"experiment_ids": [str(uuid.uuid4()) for _ in range(1001)]})
    assert_refused(status, answer, 400, "INVALID_PARAMETER_VALUE", "at most 1000 experiments")
    # The owner still reads it, unchanged.
    status, answer = call(server, token, "GET", f"/api/2.0/mlflow/logged-models/{model_id}")
    assert status == 200 and answer["model"]["info"]["model_id"] == model_id
    assert snapshot(server, owner) == before


def test_single_metrics_sent_together_are_each_authorized_and_answered(server, owner):
    """Single-metric requests that arrive together are written together (group commit), yet
    each is authorized and answered on its own: an outsider's, one to a finished run and one to
    no run are refused in the middle of the owner's, whose every point lands exactly once."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    outsider = issue_token(server, f"outsider-{uuid.uuid4().hex[:8]}@example.com")
    token, experiment = owner["token"], owner["experiment_id"]
    runs = {}
    for name in ("together", "finished"):
        status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/create",
                            {"experiment_id": experiment, "run_name": name})
        assert status == 200, body
        runs[name] = body["run"]["info"]["run_id"]
    status, body = call(server, token, "POST", "/api/2.0/mlflow/runs/update",
                        {"run_id": runs["finished"], "status": "FINISHED"})
    assert status == 200, body
    before = snapshot(server, owner)

    sends = [("owner", token, runs["together"], step) for step in range(80)]
    sends += [("outsider", outsider, runs["together"], 1000 + i) for i in range(20)]
    sends += [("outsider", outsider, owner["run_id"], 2000 + i) for i in range(20)]
    sends += [("finished", token, runs["finished"], 3000 + i) for i in range(20)]
    sends += [("missing", token, str(uuid.uuid4()), 4000 + i) for i in range(10)]
    random.Random(7).shuffle(sends)

    def send(item):
        who, tok, run, step = item
        status, body = call(server, tok, "POST", "/api/2.0/mlflow/runs/log-metric",
                            {"run_id": run, "key": "c", "value": step + 0.5, "timestamp": 1,
                             "step": step})
        return who, status, body

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(send, sends))
    expected = {"owner": (200, None), "outsider": (404, "RESOURCE_DOES_NOT_EXIST"),
                "finished": (400, "INVALID_STATE"), "missing": (404, "RESOURCE_DOES_NOT_EXIST")}
    for who, status, body in answers:
        assert (status, body.get("error_code")) == expected[who], (who, status, body)

    status, body = call(server, token, "GET",
                        f"/api/2.0/mlflow/metrics/get-history?run_id={runs['together']}&metric_key=c")
    assert status == 200, body
    assert sorted((m["step"], m["value"]) for m in body["metrics"]) == [
        (step, step + 0.5) for step in range(80)]
    status, body = call(server, token, "GET",
                        f"/api/2.0/mlflow/metrics/get-history?run_id={runs['finished']}&metric_key=c")
    assert status == 200 and body.get("metrics", []) == [], body
    # The latest value searches read counts every point once.
    latest = admin_gql(server, "query($id: ID!) { run(id: $id) { latestMetrics { key value step } } }",
                       {"id": runs["together"]})["run"]["latestMetrics"]
    assert latest == [{"key": "c", "value": 79.5, "step": 79}], latest
    assert snapshot(server, owner) == before
