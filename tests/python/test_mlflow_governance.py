"""Governance stays in force through MLflow's registry API, driven by the real client:
`transition_model_version_stage` and moving a governed alias become Custody promotion requests
(policy, approval gate, audit); MLflow's answer shows the real state (the stage moves only when
an approver approves), and a promotion the policy denies raises MlflowException with the
policy's reason. A registered version's files never change.
"""

from __future__ import annotations

import os
import uuid

import pytest

import custody
from helpers import raw_graphql
from test_mlflow import admin_gql, audit_actions, issue_token

import mlflow  # noqa: E402  (installed by .ci/run; a missing client fails, never skips)
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

PENDING = """query($p: String!) { promotions(project: $p, status: PENDING) { edges { node { id stage } } } }"""
APPROVE = """mutation($id: ID!) { approvePromotion(id: $id, comment: "checked") { status } }"""


@pytest.fixture
def team(server, tmp):
    """An owner (contributor in one experiment only, so unqualified model names resolve to it) and
    an approver of that project; the owner's client is the process's MLflow client."""
    owner_email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    approver_email = f"approver-{uuid.uuid4().hex[:8]}@example.com"
    owner = issue_token(server, owner_email)
    approver = issue_token(server, approver_email)
    os.environ["MLFLOW_TRACKING_TOKEN"] = owner
    mlflow.set_tracking_uri(server.url)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    experiment_id = client.create_experiment(f"/Teams/gov-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id, run_name="train")
    model_dir = os.path.join(tmp, "model")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "MLmodel"), "w") as f:
        f.write("flavors: {}\n")
    with open(os.path.join(model_dir, "weights.bin"), "wb") as f:
        f.write(os.urandom(4096))
    client.log_artifacts(run.info.run_id, model_dir, "model")
    client.log_metric(run.info.run_id, "auc", 0.91)
    client.set_terminated(run.info.run_id)
    project = admin_gql(server, "query($id: ID!) { run(id: $id) { project { name } } }", {"id": run.info.run_id})
    project = project["run"]["project"]["name"]
    # An admin appoints the approver: one the requester appointed may not approve their requests.
    custody.Client(server.url, server.admin_token).add_member(project, approver_email, "APPROVER")
    name = f"gov-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    # The server builds the answer of a new version from what it wrote, without reading it back:
    # it must be what reading it back answers (creator, no aliases, every field).
    assert version.user_id == owner_email
    assert version.to_proto() == client.get_model_version(name, version.version).to_proto()
    yield {"client": client, "project": project, "name": name, "version": version, "run": run,
           "approver": approver, "owner": owner}
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)


def test_a_stage_transition_waits_for_approval_then_shows_applied(server, team):
    client, name = team["client"], team["name"]
    moved = client.transition_model_version_stage(name, "1", "Staging")
    # Staging needs an approval: the answer is the version as it is, still in no stage.
    assert moved.current_stage == "None"
    assert client.get_model_version(name, "1").current_stage == "None"
    (pending,) = admin_gql(server, PENDING, {"p": team["project"]})["promotions"]["edges"]
    assert pending["node"]["stage"] == "staging"
    # The requester cannot approve their own request; the approver can.
    own = raw_graphql(server.url, team["owner"], APPROVE, {"id": pending["node"]["id"]})
    assert own["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert client.get_model_version(name, "1").current_stage == "None"
    doc = raw_graphql(server.url, team["approver"], APPROVE, {"id": pending["node"]["id"]})
    assert not doc.get("errors"), doc
    assert doc["data"]["approvePromotion"]["status"] == "APPLIED"
    assert client.get_model_version(name, "1").current_stage == "Staging"
    assert [v.version for v in client.get_latest_versions(name, stages=["Staging"])] == ["1"]
    actions = [e["action"] for e in audit_actions(server, team["project"])]
    assert "promotion.request" in actions and "promotion.apply" in actions, actions


def test_a_denied_transition_raises_with_the_policys_reason_and_moves_nothing(server, team):
    client, name = team["client"], team["name"]
    with pytest.raises(MlflowException) as refused:
        client.transition_model_version_stage(name, "1", "Production")
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert "production needs an evaluation dataset" in refused.value.message
    assert client.get_model_version(name, "1").current_stage == "None"
    # The denial is a recorded decision.
    denied = admin_gql(server, "query($p: String!) { promotions(project: $p, status: DENIED) { edges { node { stage } } } }",
                       {"p": team["project"]})["promotions"]["edges"]
    assert [d["node"]["stage"] for d in denied] == ["production"]
    assert "promotion.deny" in [e["action"] for e in audit_actions(server, team["project"])]
    # Unknown stages and MLflow's "None" are refused in MLflow's words.
    for stage in ("Nowhere", "None"):
        with pytest.raises(MlflowException) as bad:
            client.transition_model_version_stage(name, "1", stage)
        assert bad.value.error_code == "INVALID_PARAMETER_VALUE", (stage, bad.value.message)


def test_a_governed_alias_moves_only_by_promotion(server, team):
    client, name = team["client"], team["name"]
    doc = raw_graphql(server.url, team["owner"],
                      'mutation($p: String!) { setGovernedAlias(project: $p, alias: "champion", stage: "staging") }',
                      {"p": team["project"]})
    assert not doc.get("errors"), doc
    client.set_registered_model_alias(name, "champion", "1")
    # Requested, not moved: nobody holds the alias until the approver approves.
    with pytest.raises(MlflowException) as missing:
        client.get_model_version_by_alias(name, "champion")
    assert missing.value.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
    (pending,) = admin_gql(server, PENDING, {"p": team["project"]})["promotions"]["edges"]
    assert not raw_graphql(server.url, team["approver"], APPROVE, {"id": pending["node"]["id"]}).get("errors")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    # A governed alias is not deleted by hand.
    with pytest.raises(MlflowException):
        client.delete_registered_model_alias(name, "champion")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    # A free alias moves at once.
    client.set_registered_model_alias(name, "candidate", "1")
    assert client.get_model_version_by_alias(name, "candidate").version == "1"
    # The version's answer names both: the free alias and the governed one of its stage.
    assert client.get_model_version(name, "1").aliases == ["candidate", "champion"]
    client.delete_registered_model_alias(name, "candidate")
    assert client.get_model_version(name, "1").aliases == ["champion"]


def test_registered_versions_keep_their_files(server, team, tmp):
    client, name = team["client"], team["name"]
    uri = client.get_model_version_download_uri(name, "1")
    # (The client lists a URI through its parent folder: paths start with the version's id.)
    files = sorted(a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(artifact_uri=uri))
    assert files == ["MLmodel", "weights.bin"], files
    path = os.path.join(tmp, "other.bin")
    with open(path, "wb") as f:
        f.write(b"swapped weights")
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with pytest.raises(Exception) as refused:
        get_artifact_repository(uri).log_artifact(path)
    assert "403" in str(refused.value) or "never change" in str(refused.value)
    assert sorted(a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(artifact_uri=uri)) == files
    # Deleting a version or a model is refused: Custody keeps every version.
    for delete in (lambda: client.delete_model_version(name, "1"), lambda: client.delete_registered_model(name)):
        with pytest.raises(MlflowException) as kept:
            delete()
        assert kept.value.error_code == "PERMISSION_DENIED"
    assert client.get_model_version(name, "1").version == "1"
