"""The real MLflow client (pinned, mlflow==3.17.2) against the real server: each flow script of
`mlflow_flows/` runs unchanged in a child process, as training code would, with
MLFLOW_TRACKING_URI pointing at Custody and a Custody token as MLFLOW_TRACKING_TOKEN; then the
test checks through Custody's own GraphQL API that the runs landed in the governed world: the
code commit, the dataset versions, the lineage from model version back to data, the artifacts'
SHA-256 and the audit entries.

Each flow runs as a fresh person (not an admin) from a fresh git repository, so the commit the
client reports is one the test knows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from helpers import git, raw_graphql

import mlflow  # noqa: E402  (installed by .ci/run; a missing client fails, never skips)

FLOWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlflow_flows")


def issue_token(server, email: str) -> str:
    out = subprocess.run(
        [server.binary, "token", "issue", "--email", email, "--data-dir", server.data_dir],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip().splitlines()[-1]


def admin_gql(server, query: str, variables: dict | None = None) -> dict:
    doc = raw_graphql(server.url, server.admin_token, query, variables)
    assert not doc.get("errors"), doc.get("errors")
    return doc["data"]


class Flow:
    """One flow script run from its own git checkout as its own person."""

    def __init__(self, server, tmp: str, script: str):
        self.server = server
        self.email = f"mlflow-{uuid.uuid4().hex[:8]}@example.com"
        self.token = issue_token(server, self.email)
        self.repo = os.path.join(tmp, "repo")
        shutil.copytree(FLOWS, self.repo, ignore=shutil.ignore_patterns("__pycache__"))
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "add", ".")
        git(self.repo, "commit", "-q", "-m", "training code")
        # The client reports the remote's URL as the repository (credentials stripped).
        self.remote = f"https://git.example.com/ml/{uuid.uuid4().hex[:8]}.git"
        git(self.repo, "remote", "add", "origin", self.remote)
        self.commit = git(self.repo, "rev-parse", "HEAD")
        self.script = script
        self.result_path = os.path.join(tmp, "result.json")

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            MLFLOW_TRACKING_URI=self.server.url,
            MLFLOW_TRACKING_TOKEN=self.token,
            FLOW_RESULT=self.result_path,
            GIT_PYTHON_REFRESH="quiet",
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def run(self) -> dict:
        proc = subprocess.run(
            [sys.executable, self.script],
            cwd=self.repo,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{self.script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        with open(self.result_path) as f:
            return json.load(f)


RUN = """query($id: ID!) { run(id: $id) {
  id name status endedAt deletedAt tags
  project { name }
  codeCommit { id commit repository branch dirty }
  params { key value }
  latestMetrics { key value step }
  artifacts { path sha256 size }
  inputs { id sha256 uri dataset { name } }
} }"""

LINEAGE = """query($node: NodeRef!, $direction: LineageDirection!) {
  lineage(node: $node, direction: $direction, depth: 5) {
    nodes { kind id }
    edges { from { kind id } to { kind id } relation }
  }
}"""

AUDIT = """query($project: String!, $after: String) { auditLog(project: $project, first: 100, after: $after) {
  edges { node { action actor subjectId after } }
  pageInfo { hasNextPage endCursor }
} }"""


def audit_actions(server, project: str) -> list:
    """Every audit entry of the project."""
    entries, after = [], None
    while True:
        page = admin_gql(server, AUDIT, {"project": project, "after": after})["auditLog"]
        entries += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return entries
        after = page["pageInfo"]["endCursor"]


def test_fluent_flow_lands_in_custody_with_commit_dataset_artifacts_and_audit(server, tmp):
    flow = Flow(server, tmp, "flow_a_fluent.py")
    result = flow.run()
    run = admin_gql(server, RUN, {"id": result["run_id"]})["run"]
    assert run["status"] == "FINISHED" and run["endedAt"] and run["deletedAt"] is None
    assert run["name"] == "fluent-e2e"
    assert {p["key"]: p["value"] for p in run["params"]} == result["params"]
    assert {m["key"]: m["value"] for m in run["latestMetrics"]} == result["metrics"]
    # The commit MLflow's client read from the checkout is the run's code commit node.
    assert run["codeCommit"]["commit"] == flow.commit
    assert run["codeCommit"]["repository"] == flow.remote
    assert run["codeCommit"]["branch"] == "main" and run["codeCommit"]["dirty"] is False
    # The pandas dataset is a Custody dataset version the run consumed, named by its source.
    (version,) = run["inputs"]
    assert version["dataset"]["name"] == "churn-train" and version["uri"] == "s3://bucket/churn.csv"
    # Every file the client uploaded is stored with the SHA-256 of its bytes.
    assert {a["path"]: a["sha256"] for a in run["artifacts"]} == result["artifacts"]
    # The experiment is a project; its name is the slug of the MLflow name.
    project = run["project"]["name"]
    assert project.startswith("shared-churn-")
    up = admin_gql(server, LINEAGE, {"node": {"kind": "RUN", "id": run["id"]}, "direction": "UPSTREAM"})["lineage"]
    assert {"kind": "CODE_COMMIT", "id": run["codeCommit"]["id"]} in up["nodes"]
    assert {"kind": "DATASET_VERSION", "id": version["id"]} in up["nodes"]
    actions = [e["action"] for e in audit_actions(server, project)]
    for action in ("project.create", "experiment.create", "run.start", "run.log_params", "run.log_inputs",
                   "dataset_version.register", "lineage.link", "run.finish"):
        assert action in actions, (action, actions)
    assert all(e["actor"] == flow.email for e in audit_actions(server, project))


def test_client_flow_searches_pages_deletes_and_restores(server, tmp):
    flow = Flow(server, tmp, "flow_d_client.py")
    result = flow.run()
    failed = admin_gql(server, RUN, {"id": result["failed_run_id"]})["run"]
    assert failed["status"] == "FAILED"
    project = failed["project"]["name"]
    actions = [e["action"] for e in audit_actions(server, project)]
    for action in ("run.delete", "run.restore", "run.tag.delete", "experiment.tag.set"):
        assert action in actions, (action, actions)
    renamed = admin_gql(
        server,
        "query($id: ID!) { auditLog(subjectId: $id, action: \"experiment.rename\") { edges { node { before after } } } }",
        {"id": result["other_experiment_id"]},
    )["auditLog"]["edges"]
    assert [e["node"]["after"]["experiment_name"] for e in renamed] == [result["experiment_name"] + "-renamed"]
    # Deleted and restored: the run is there, not deleted.
    for run_id in result["run_ids"]:
        assert admin_gql(server, RUN, {"id": run_id})["run"]["deletedAt"] is None


MODEL_VERSION = """query($p: String!, $m: String!, $v: Int!) { modelVersion(project: $p, model: $m, version: $v) {
  id version stage aliases artifacts { path sha256 size } run { id } model { name }
} }"""


def lineage_upstream(server, kind: str, node_id: str) -> dict:
    return admin_gql(server, LINEAGE, {"node": {"kind": kind, "id": node_id}, "direction": "UPSTREAM"})["lineage"]


def test_sklearn_log_model_registers_a_version_that_loads_back(server, tmp):
    flow = Flow(server, tmp, "flow_b_sklearn.py")
    result = flow.run()
    run = admin_gql(server, RUN, {"id": result["run_id"]})["run"]
    project = run["project"]["name"]
    version = admin_gql(server, MODEL_VERSION, {"p": project, "m": result["model_name"], "v": 1})["modelVersion"]
    assert version["run"]["id"] == run["id"]
    # The version's files are the logged model's, with their digests; the model loads from them.
    paths = {a["path"] for a in version["artifacts"]}
    assert "MLmodel" in paths and any(p.startswith("model.") for p in paths), paths
    # Lineage from the version back to the commit the training code ran at.
    up = lineage_upstream(server, "MODEL_VERSION", version["id"])
    assert {"kind": "RUN", "id": run["id"]} in up["nodes"]
    assert {"kind": "CODE_COMMIT", "id": run["codeCommit"]["id"]} in up["nodes"]
    assert run["codeCommit"]["commit"] == flow.commit
    actions = [e["action"] for e in audit_actions(server, project)]
    for action in ("logged_model.create", "model.create", "model_version.register"):
        assert action in actions, (action, actions)


def test_autolog_records_params_metrics_dataset_and_model(server, tmp):
    flow = Flow(server, tmp, "flow_c_autolog.py")
    result = flow.run()
    run = admin_gql(server, RUN, {"id": result["run_id"]})["run"]
    assert run["status"] == "FINISHED"
    assert {p["key"] for p in run["params"]} >= {"C", "max_iter"}
    assert any(m["key"].startswith("training_") for m in run["latestMetrics"])
    assert run["inputs"], "autolog logs the training data as an input"
    assert run["codeCommit"]["commit"] == flow.commit


def test_registry_flow_versions_aliases_stages_and_refusals(server, tmp):
    flow = Flow(server, tmp, "flow_e_registry.py")
    result = flow.run()
    first = admin_gql(server, RUN, {"id": result["run_ids"][0]})["run"]
    project = first["project"]["name"]
    versions = [admin_gql(server, MODEL_VERSION, {"p": project, "m": result["model_name"], "v": v})["modelVersion"]
                for v in (1, 2, 3)]
    # Stages and aliases as the flow left them, in Custody's own terms.
    assert [v["stage"] for v in versions] == ["archived", None, None]
    assert versions[1]["aliases"] == ["champion"]
    # Each version comes from its run, whose commit is the checkout's.
    for version, run_id in zip(versions, (result["run_ids"][0], result["run_ids"][1], result["run_ids"][1])):
        assert version["run"]["id"] == run_id
        up = lineage_upstream(server, "MODEL_VERSION", version["id"])
        assert {"kind": "RUN", "id": run_id} in up["nodes"]
    assert first["codeCommit"]["commit"] == flow.commit
    actions = [e["action"] for e in audit_actions(server, project)]
    for action in ("model.tag.set", "model_version.tag.set", "model_version.tag.delete", "model.alias.set",
                   "model.alias.delete", "promotion.request", "promotion.deny", "promotion.apply"):
        assert action in actions, (action, actions)


def test_bare_model_names_go_to_the_project_being_trained_in(server, tmp):
    import custody
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    flow = Flow(server, tmp, "flow_b_sklearn.py")
    # The person may also write to another project: the bare name in log_model still resolves,
    # to the project of the run it is logged from.
    other = f"other-{uuid.uuid4().hex[:8]}"
    custody.Client(server.url, flow.token).create_project(other, "a second project")
    result = flow.run()
    project = admin_gql(server, RUN, {"id": result["run_id"]})["run"]["project"]["name"]
    assert admin_gql(server, MODEL_VERSION, {"p": project, "m": result["model_name"], "v": 1})["modelVersion"]
    # Outside any run, a new bare name is ambiguous: refused, naming the qualified form, which works.
    os.environ["MLFLOW_TRACKING_TOKEN"] = flow.token
    try:
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        with pytest.raises(MlflowException) as refused:
            client.create_registered_model("fresh-name")
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
        assert f"{other}~fresh-name" in refused.value.message or f"{project}~fresh-name" in refused.value.message
        client.create_registered_model(f"{other}~fresh-name")
        assert client.get_registered_model(f"{other}~fresh-name").name == f"{other}~fresh-name"
        # Now the bare name names one model: it resolves.
        assert client.get_registered_model("fresh-name").name == "fresh-name"
        # A name that two readable projects hold is answered qualified by searches, bare or not.
        model = result["model_name"]
        # A model of that name in a project the person cannot read changes nothing they see
        # (answering qualified would tell them it exists).
        hidden = f"hidden-{uuid.uuid4().hex[:8]}"
        admin = custody.Client(server.url, server.admin_token)
        admin.create_project(hidden, "not the person's")
        admin.create_model(hidden, model)
        [only] = client.search_model_versions(f"name='{model}'")
        assert only.name == model and "@" in only.user_id, only
        assert [m.name for m in client.search_registered_models(f"name='{model}'")] == [model]
        client.create_registered_model(f"{other}~{model}")
        for written in (model, f"{project}~{model}"):
            [found] = client.search_model_versions(f"name='{written}'")
            assert (found.name, found.version, found.user_id) == (f"{project}~{model}", "1", only.user_id)
        assert sorted(m.name for m in client.search_registered_models(f"name='{model}'")) == sorted(
            [f"{project}~{model}", f"{other}~{model}"]
        )
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]
