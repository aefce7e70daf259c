"""The example training script end to end: a new user runs it and finds the run, its commit,
params, metrics, dataset input, artifacts and the registered model version in GraphQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest

from helpers import gql, last_json_line, run_python
from serverproc import REPO_ROOT

EXAMPLE = os.path.join(REPO_ROOT, "sdk", "python", "examples", "train_iris.py")

QUERY = """query($id: ID!, $p: String!, $m: String!, $v: Int!) {
  run(id: $id) {
    name status tags
    project { name }
    codeCommit { repository commit branch dirty }
    params { key value }
    metrics { key value step }
    artifacts { path sha256 size }
    inputs { id version uri sha256 sizeBytes dataset { name } }
  }
  modelVersion(project: $p, model: $m, version: $v) {
    id version artifactPath manifestSha256
    artifacts { path sha256 size }
    run { id }
    model { name primaryMetric }
  }
}"""


def _git_head():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def test_example_training_script_end_to_end(server, env, tmp):
    pytest.importorskip("sklearn", reason="the example needs scikit-learn (installed by the CI command)")
    project = f"iris-{uuid.uuid4().hex[:8]}"  # the script creates it
    proc = run_python(EXAMPLE, env=env, cwd=tmp, args=["--project", project, "--epochs", "12", "--folds", "4"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["status"] == "FINISHED"

    data = gql(server, QUERY, {"id": summary["run"], "p": project, "m": "iris-classifier", "v": 1})
    run, version = data["run"], data["modelVersion"]
    assert run["status"] == "FINISHED"
    assert run["project"]["name"] == project
    assert run["tags"]["example"] == "iris"

    # The commit of the example's checkout (when the tests run from a git checkout).
    head = _git_head()
    if head:
        assert run["codeCommit"] is not None, "the example's git commit was not captured"
        assert run["codeCommit"]["commit"] == head
        assert run["codeCommit"]["dirty"] in (True, False)
        assert run["tags"]["custody.git.dirty"] in ("true", "false")
    else:
        assert run["codeCommit"] is None

    params = {p["key"]: p["value"] for p in run["params"]}
    assert params["epochs"] == "12" and params["folds"] == "4" and params["seed"] == "42"

    by_key = {}
    for m in run["metrics"]:
        by_key.setdefault(m["key"], []).append(m)
    assert [m["step"] for m in by_key["cv_accuracy"]] == [0, 1, 2, 3]
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert [m["step"] for m in by_key[key]] == list(range(12)), key
    assert 0.6 <= by_key["accuracy"][0]["value"] <= 1.0
    assert by_key["accuracy"][0]["value"] == pytest.approx(summary["accuracy"])

    # The dataset input: the iris CSV the script wrote (150 rows and a header).
    assert len(run["inputs"]) == 1
    dataset = run["inputs"][0]
    assert dataset["dataset"]["name"] == "iris"
    assert dataset["id"] == summary["dataset_version"]
    assert dataset["uri"].startswith("file://") and dataset["uri"].endswith("/iris.csv")
    assert len(dataset["sha256"]) == 64 and dataset["sizeBytes"] > 3000

    # Artifacts: the model and the report.
    paths = {a["path"]: a for a in run["artifacts"]}
    assert set(paths) == {"model/model.pkl", "reports/report.json"}

    # The registered model version, made from the run's model file.
    assert version is not None
    assert version["id"] == summary["model_version_id"]
    assert version["run"]["id"] == summary["run"]
    assert version["artifactPath"] == "model/model.pkl"
    assert version["artifacts"] == [
        {"path": "model.pkl", "sha256": paths["model/model.pkl"]["sha256"], "size": paths["model/model.pkl"]["size"]}
    ]
    assert version["model"] == {"name": "iris-classifier", "primaryMetric": "accuracy"}

    # The pickled model downloads from the model version and predicts.
    import pickle
    import urllib.request

    req = urllib.request.Request(
        f"{server.url}/api/artifacts/model-version/{version['id']}/model.pkl",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        blob = resp.read()
    assert hashlib.sha256(blob).hexdigest() == paths["model/model.pkl"]["sha256"]
    from sklearn.datasets import load_iris

    model = pickle.loads(blob)
    iris = load_iris()
    assert (model.predict(iris.data) == iris.target).mean() > 0.6

    # Running it again reuses the dataset version (same bytes) and adds model version 2.
    again = run_python(EXAMPLE, env=env, cwd=tmp, args=["--project", project, "--epochs", "3", "--folds", "3"])
    assert again.returncode == 0, again.stdout + again.stderr
    second = last_json_line(again.stdout)
    assert second["model_version"] == 2
    assert second["dataset_version"] == summary["dataset_version"]
