"""Flow b: a tiny scikit-learn model logged as an MLflow 3 logged model and registered; loaded back
through models:/<name>/1, models:/<logged model id>, runs:/<run id>/model, with the pyfunc and the
sklearn flavors; every prediction equals the original model's."""

from __future__ import annotations

import numpy as np

# _common first: it sets the client's environment defaults (no telemetry, short retries).
from _common import SEED, setup, write_result, xy

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

suffix = setup()
exp = mlflow.set_experiment(f"/Shared/churn-sklearn-{suffix}")
model_name = f"churn-{suffix}"
client = MlflowClient()

X, y = xy()
model = LogisticRegression(random_state=SEED, max_iter=200).fit(X, y)
expected = model.predict(X)
expected_proba = model.predict_proba(X)

with mlflow.start_run(run_name="sklearn-train") as run:
    run_id = run.info.run_id
    mlflow.log_param("C", model.C)
    mlflow.log_metric("train_acc", float((expected == y).mean()))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=model_name,
        input_example=X.head(3),
    )
model_id = info.model_id
# MLflow mints "m-<32 hex>"; the client only needs an id that fits in models:/<id> (no "/", no "@").
assert model_id and "/" not in model_id and "@" not in model_id, model_id
assert info.model_uri == f"models:/{model_id}", info.model_uri
assert str(info.registered_model_version) == "1", info.registered_model_version
assert info.run_id == run_id
assert info.signature is not None and [c.name for c in info.signature.inputs] == ["tenure", "monthly_charges"]

lm = mlflow.get_logged_model(model_id)
assert lm.name == "model" and lm.source_run_id == run_id and lm.experiment_id == exp.experiment_id, lm
assert str(lm.status).endswith("READY"), lm.status
assert lm.artifact_location.startswith("mlflow-artifacts:/"), lm.artifact_location
# The version's files are its own copy, fixed at registration.
assert client.get_model_version_download_uri(model_name, "1").startswith("mlflow-artifacts:/model-versions/")

mv = client.get_model_version(model_name, "1")
assert mv.run_id == run_id and mv.source == f"models:/{model_id}" and mv.status == "READY", mv
# The real server does not echo model_id in ModelVersion; a server that does must echo this one.
assert mv.model_id in (None, model_id), mv.model_id

for uri in (f"models:/{model_name}/1", f"models:/{model_id}", f"runs:/{run_id}/model"):
    pyf = mlflow.pyfunc.load_model(uri)
    got = np.asarray(pyf.predict(X))
    assert np.array_equal(got, expected), uri
    sk = mlflow.sklearn.load_model(uri)
    assert np.array_equal(sk.predict(X), expected), uri
    assert np.allclose(sk.predict_proba(X), expected_proba), uri

# The model's files as the registry's download URI and the logged model see them.
files = {a.path for a in mlflow.artifacts.list_artifacts(f"models:/{model_id}")}
# MLflow 3.17 saves sklearn models with skops (model.skops), older ones pickled (model.pkl).
assert {"MLmodel", "input_example.json", "requirements.txt"} <= files, files
assert files & {"model.skops", "model.pkl"}, files

write_result(
    {
        "flow": "b_sklearn",
        "experiment_id": exp.experiment_id,
        "run_id": run_id,
        "logged_model_id": model_id,
        "model_name": model_name,
        "model_version": "1",
        "model_files": sorted(files),
        "predictions": expected.tolist(),
    }
)
print("flow b ok", model_name, model_id)
