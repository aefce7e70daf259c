"""Flow e: the model registry through MlflowClient: a registered model with tags and description,
versions from a run's model (runs:/<run>/model) and from a logged model (models:/<id>), get/search
of models and versions, descriptions, tags, aliases (loaded through models:/name@alias), latest
versions, stage transitions, download URIs; rename and deletes on a throwaway model."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

# _common first: it sets the client's environment defaults (no telemetry, short retries).
from _common import SEED, setup, write_result, xy

import mlflow  # noqa: E402
import sklearn  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

suffix = setup()
exp = mlflow.set_experiment(f"/Shared/churn-registry-{suffix}")
client = MlflowClient()
name = f"churn-{suffix}"

# Explicit requirements skip MLflow's requirement inference (a subprocess, ~5 s a model).
REQS = [f"scikit-learn=={sklearn.__version__}"]
X, y = xy()
models, preds, run_ids = [], [], []
for C in (1.0, 0.05):
    models.append(LogisticRegression(C=C, random_state=SEED, max_iter=200).fit(X, y))
    preds.append(models[-1].predict_proba(X))

# Run 0 keeps its model as plain run artifacts under "model" (the MLflow 2 layout), so that
# runs:/<run>/model names files of the run itself. Run 1 logs an MLflow 3 logged model.
with mlflow.start_run(run_name="train-C1.0-artifacts") as run:
    local = os.path.join(tempfile.mkdtemp(prefix="flow-e-"), "model")
    mlflow.sklearn.save_model(models[0], local, input_example=X.head(2), pip_requirements=REQS)
    mlflow.log_artifacts(local, artifact_path="model")
    run_ids.append(run.info.run_id)
with mlflow.start_run(run_name="train-C0.05-logged") as run:
    info = mlflow.sklearn.log_model(models[1], name="model", input_example=X.head(2), pip_requirements=REQS)
    run_ids.append(run.info.run_id)
logged_model_id = info.model_id

rm = client.create_registered_model(name, tags={"team": "growth", "domain": "churn"}, description="churn classifier")
assert rm.name == name and rm.description == "churn classifier" and rm.tags == {"team": "growth", "domain": "churn"}
try:
    client.create_registered_model(name)
    raise AssertionError("duplicate registered model accepted")
except MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code

v1 = client.create_model_version(
    name, source=f"runs:/{run_ids[0]}/model", run_id=run_ids[0], tags={"origin": "runs-uri"}, description="first"
)
assert v1.version == "1" and v1.run_id == run_ids[0] and v1.tags == {"origin": "runs-uri"}, v1
v2 = client.create_model_version(
    name, source=f"models:/{logged_model_id}", run_id=run_ids[1], model_id=logged_model_id
)
assert v2.version == "2", v2
for v in ("1", "2"):
    for _ in range(50):
        if client.get_model_version(name, v).status == "READY":
            break
        time.sleep(0.1)
    assert client.get_model_version(name, v).status == "READY"

got = client.get_registered_model(name)
assert got.description == "churn classifier" and got.tags == {"team": "growth", "domain": "churn"}
assert sorted(v.version for v in got.latest_versions) == ["2"], got.latest_versions

found = client.search_registered_models(filter_string=f"name = '{name}'")
assert [m.name for m in found] == [name]
found = client.search_registered_models(filter_string=f"name LIKE 'churn-{suffix[:6]}%'")
assert name in [m.name for m in found]
found = client.search_registered_models(filter_string="tags.team = 'growth'")
assert name in [m.name for m in found]
mvs = client.search_model_versions(f"name='{name}'")
assert sorted(v.version for v in mvs) == ["1", "2"], mvs
mvs = client.search_model_versions(f"name='{name}' and run_id='{run_ids[0]}'")
assert [v.version for v in mvs] == ["1"], mvs
mvs = client.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
assert [v.version for v in mvs] == ["2"], mvs

client.update_model_version(name, "1", description="baseline, C=1.0")
assert client.get_model_version(name, "1").description == "baseline, C=1.0"
client.update_registered_model(name, description="churn classifier (updated)")
assert client.get_registered_model(name).description == "churn classifier (updated)"

client.set_model_version_tag(name, "1", "validated", "true")
assert client.get_model_version(name, "1").tags == {"origin": "runs-uri", "validated": "true"}
client.delete_model_version_tag(name, "1", "origin")
assert client.get_model_version(name, "1").tags == {"validated": "true"}
client.set_registered_model_tag(name, "tier", "gold")
client.delete_registered_model_tag(name, "domain")
assert client.get_registered_model(name).tags == {"team": "growth", "tier": "gold"}

client.set_registered_model_alias(name, "champion", "1")
client.set_registered_model_alias(name, "challenger", "2")
assert client.get_model_version_by_alias(name, "champion").version == "1"
assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}
assert client.get_model_version(name, "1").aliases == ["champion"]
for alias, i in (("champion", 0), ("challenger", 1)):
    loaded = mlflow.sklearn.load_model(f"models:/{name}@{alias}")
    assert np.allclose(loaded.predict_proba(X), preds[i]), alias
    pyf = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    assert np.array_equal(np.asarray(pyf.predict(X)), models[i].predict(X)), alias
client.set_registered_model_alias(name, "champion", "2")  # moving an alias
assert client.get_model_version_by_alias(name, "champion").version == "2"
assert client.get_model_version(name, "2").aliases == ["challenger", "champion"]
client.delete_registered_model_alias(name, "challenger")
assert client.get_registered_model(name).aliases == {"champion": "2"}
try:
    client.get_model_version_by_alias(name, "challenger")
    raise AssertionError("deleted alias still resolves")
except MlflowException as e:
    assert e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"), e.error_code

assert [v.version for v in client.get_latest_versions(name)] == ["2"]
# Custody holds promotions at its policies and approval gate: Staging needs an approval, so
# the transition is requested and the version stays where it is; Production without an
# evaluation dataset is denied with the policy's reason; Archived applies at once.
mv = client.transition_model_version_stage(name, "1", "Staging")
assert mv.current_stage == "None", mv.current_stage
assert client.get_model_version(name, "1").current_stage == "None"
try:
    client.transition_model_version_stage(name, "2", "Production")
    raise AssertionError("a promotion the policy denies was accepted")
except MlflowException as e:
    assert e.error_code == "PERMISSION_DENIED" and "evaluation dataset" in e.message, (e.error_code, e.message)
mv = client.transition_model_version_stage(name, "1", "Archived")
assert mv.current_stage == "Archived", mv.current_stage
assert [v.version for v in client.get_latest_versions(name, stages=["Archived"])] == ["1"]
assert sorted(v.version for v in client.get_latest_versions(name)) == ["1", "2"]
assert np.allclose(mlflow.sklearn.load_model(f"models:/{name}/Archived").predict_proba(X), preds[0])
assert np.allclose(mlflow.sklearn.load_model(f"models:/{name}/latest").predict_proba(X), preds[1])

uris = [client.get_model_version_download_uri(name, v) for v in ("1", "2")]
# A registered version's files are its own (fixed at registration), wherever they came from.
for uri in uris:
    assert uri.startswith("mlflow-artifacts:/model-versions/"), uri
files = {a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(uris[1])}
assert "MLmodel" in files, files
assert {a.path for a in mlflow.artifacts.list_artifacts(f"models:/{name}/2")} >= {"MLmodel"}

# register_model (fluent) of runs:/<run 1>/model: the client finds the run's logged model named
# "model" and registers models:/<logged model id> as the third version.
v3 = mlflow.register_model(f"runs:/{run_ids[1]}/model", name)
assert v3.version == "3" and v3.source == f"models:/{logged_model_id}", (v3.version, v3.source)
assert np.allclose(mlflow.sklearn.load_model(f"models:/{name}/3").predict_proba(X), preds[1])

# Custody keeps every registered model and version: rename and deletes are refused with the
# reason, and change nothing.
for refused in (
    lambda: client.rename_registered_model(name, name + "-renamed"),
    lambda: client.delete_model_version(name, "3"),
    lambda: client.delete_registered_model(name),
):
    try:
        refused()
        raise AssertionError("a rename or delete was accepted")
    except MlflowException as e:
        assert e.error_code == "PERMISSION_DENIED", (e.error_code, e.message)
assert [v.version for v in client.search_model_versions(f"name='{name}'", order_by=["version_number"])] == ["1", "2", "3"]

write_result(
    {
        "flow": "e_registry",
        "experiment_id": exp.experiment_id,
        "model_name": name,
        "run_ids": run_ids,
        "logged_model_id": logged_model_id,
        "versions": ["1", "2", "3"],
        "aliases": {"champion": "2"},
        "stages": {"1": "Archived"},
        "download_uris": uris,
    }
)
print("flow e ok", name)
