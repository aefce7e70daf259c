"""Flow c: mlflow.sklearn.autolog() and a plain fit: the run gets the estimator's params, training
metrics and tags, and a logged model that loads back and predicts like the fitted estimator."""

from __future__ import annotations

import numpy as np

# _common first: it sets the client's environment defaults (no telemetry, short retries).
from _common import SEED, setup, write_result, xy

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

suffix = setup()
exp = mlflow.set_experiment(f"/Shared/churn-autolog-{suffix}")
client = MlflowClient()

mlflow.sklearn.autolog(log_input_examples=True, log_datasets=True, silent=True)
X, y = xy()
with mlflow.start_run(run_name="autolog-fit") as run:
    run_id = run.info.run_id
    est = LogisticRegression(C=0.5, random_state=SEED, max_iter=150).fit(X, y)
mlflow.sklearn.autolog(disable=True)
expected = est.predict(X)

got = client.get_run(run_id)
assert got.info.status == "FINISHED"
p = got.data.params
assert p["C"] == "0.5" and p["max_iter"] == "150" and p["random_state"] == str(SEED), p
metrics = got.data.metrics
for k in ("training_accuracy_score", "training_f1_score", "training_precision_score", "training_recall_score",
          "training_log_loss", "training_roc_auc", "training_score"):
    assert k in metrics, (k, sorted(metrics))
assert np.isclose(metrics["training_accuracy_score"], float((expected == y).mean())), metrics
tags = got.data.tags
assert tags.get("estimator_name") == "LogisticRegression", tags
assert tags.get("estimator_class") == "sklearn.linear_model._logistic.LogisticRegression", tags

# MLflow 3: autolog's model is a logged model, an output of the run (not a run artifact).
models = mlflow.search_logged_models(
    experiment_ids=[exp.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
)
assert len(models) == 1, models
lm = models[0]
assert lm.name == "model" and str(lm.status).endswith("READY"), lm
assert [o.model_id for o in got.outputs.model_outputs] == [lm.model_id], got.outputs
assert lm.params.get("C") == "0.5", lm.params
assert {m.key for m in (lm.metrics or [])} >= {"training_accuracy_score"}, lm.metrics

loaded = mlflow.sklearn.load_model(f"models:/{lm.model_id}")
assert np.array_equal(loaded.predict(X), expected)
assert np.array_equal(np.asarray(mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(X)), expected)

# log_datasets: the training frame is a dataset input of the run with context "train".
ds_inputs = got.inputs.dataset_inputs
assert len(ds_inputs) >= 1, got.inputs
ctx = {t.key: t.value for t in ds_inputs[0].tags}
assert ctx.get("mlflow.data.context") == "train", ctx

write_result(
    {
        "flow": "c_autolog",
        "experiment_id": exp.experiment_id,
        "run_id": run_id,
        "logged_model_id": lm.model_id,
        "params": {k: p[k] for k in ("C", "max_iter", "random_state")},
        "metric_keys": sorted(metrics),
        "dataset_digests": [d.dataset.digest for d in ds_inputs],
    }
)
print("flow c ok", run_id, lm.model_id)
