"""Flow a: the fluent API end to end, then everything read back through MlflowClient.

set_experiment with a slash name, a named run, params, stepped metrics, tags, text/dict artifacts,
a file and a folder of artifacts, a pandas dataset input with context "training"; then get_run,
list_artifacts, download_artifacts (bytes compared), get_metric_history.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

# _common first: it sets the client's environment defaults (no telemetry, short retries).
from _common import SEED, churn_frame, setup, write_result

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


suffix = setup()
exp_name = f"/Shared/churn-{suffix}"
exp = mlflow.set_experiment(exp_name)
assert exp.name == exp_name
client = MlflowClient()
assert client.get_experiment_by_name(exp_name).experiment_id == exp.experiment_id

work = tempfile.mkdtemp(prefix="flow-a-")
single = os.path.join(work, "notes.txt")
with open(single, "wb") as f:
    f.write(b"churn notes\nline two\n")
folder = os.path.join(work, "reports")
os.makedirs(os.path.join(folder, "sub"))
files = {
    "summary.csv": b"metric,value\nacc,0.91\n",
    "sub/blob.bin": bytes(range(256)) * 40,  # binary, 10 KiB
    # An empty file: the client uploads it with `Transfer-Encoding: chunked` and no Content-Length.
    "sub/empty.txt": b"",
    # 3 MiB of seeded noise: more than one 1 MiB chunk of the client's streamed download.
    "big/weights.bin": np.random.default_rng(SEED)
    .integers(0, 256, size=3 * 1024 * 1024, dtype=np.uint8)
    .tobytes(),
}
os.makedirs(os.path.join(folder, "big"))
for rel, data in files.items():
    with open(os.path.join(folder, rel), "wb") as f:
        f.write(data)

df = churn_frame()
dataset = mlflow.data.from_pandas(df, source="s3://bucket/churn.csv", name="churn-train", targets="churn")

params = {"lr": "0.01", "depth": "3", "penalty": "l2"}
with mlflow.start_run(run_name="fluent-e2e") as run:
    run_id = run.info.run_id
    mlflow.log_param("solver", "lbfgs")
    mlflow.log_params(params)
    for step, loss in enumerate([0.9, 0.7, 0.55, 0.5]):
        mlflow.log_metric("loss", loss, step=step)
    mlflow.log_metrics({"acc": 0.91, "f1": 0.88})
    mlflow.set_tag("team", "growth")
    mlflow.set_tags({"stage": "exp", "owner": "flow-a"})
    mlflow.log_text("hello from flow a\n", "text/hello.txt")
    mlflow.log_dict({"features": ["tenure", "monthly_charges"], "k": 2}, "config/features.json")
    mlflow.log_artifact(single)
    mlflow.log_artifact(single, artifact_path="docs")
    mlflow.log_artifacts(folder, artifact_path="reports")
    mlflow.log_input(dataset, context="training")
assert mlflow.active_run() is None

got = client.get_run(run_id)
assert got.info.status == "FINISHED", got.info.status
assert got.info.run_name == "fluent-e2e"
assert got.info.experiment_id == exp.experiment_id
assert got.data.params == {"solver": "lbfgs", **params}, got.data.params
assert got.data.metrics == {"loss": 0.5, "acc": 0.91, "f1": 0.88}, got.data.metrics
for k, v in {"team": "growth", "stage": "exp", "owner": "flow-a", "mlflow.runName": "fluent-e2e"}.items():
    assert got.data.tags.get(k) == v, (k, got.data.tags.get(k))
assert "mlflow.user" in got.data.tags and "mlflow.source.name" in got.data.tags

inputs = got.inputs.dataset_inputs
assert len(inputs) == 1, inputs
ds = inputs[0].dataset
assert ds.name == "churn-train" and ds.digest == dataset.digest, (ds.name, ds.digest, dataset.digest)
assert ds.source_type == "s3"
assert json.loads(ds.source) == {"uri": "s3://bucket/churn.csv"}, ds.source
assert json.loads(ds.schema) == json.loads(dataset.to_dict()["schema"])
assert json.loads(ds.profile) == json.loads(dataset.to_dict()["profile"])
assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}

top = {(a.path, a.is_dir) for a in client.list_artifacts(run_id)}
assert top == {("text", True), ("config", True), ("notes.txt", False), ("docs", True), ("reports", True)}, top
reports = {(a.path, a.is_dir, a.file_size) for a in client.list_artifacts(run_id, "reports")}
assert reports == {
    ("reports/summary.csv", False, len(files["summary.csv"])),
    ("reports/sub", True, None),
    ("reports/big", True, None),
}, reports
sub = [(a.path, a.file_size) for a in client.list_artifacts(run_id, "reports/sub")]
# MLflow leaves file_size out for an empty file (proto3 default), which reads back as None.
assert sub in (
    [("reports/sub/blob.bin", 10240), ("reports/sub/empty.txt", None)],
    [("reports/sub/blob.bin", 10240), ("reports/sub/empty.txt", 0)],
), sub
# A path that is a file, or that does not exist, lists as empty.
assert client.list_artifacts(run_id, "notes.txt") == []
assert client.list_artifacts(run_id, "no/such/dir") == []

dl = tempfile.mkdtemp(prefix="flow-a-dl-")
p = client.download_artifacts(run_id, "notes.txt", dl)
assert open(p, "rb").read() == b"churn notes\nline two\n"
p = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reports", dst_path=dl)
for rel, data in files.items():
    assert open(os.path.join(p, rel), "rb").read() == data, rel
assert mlflow.artifacts.load_text(f"runs:/{run_id}/text/hello.txt") == "hello from flow a\n"
client.download_artifacts(run_id, "config/features.json", dl)
assert json.load(open(os.path.join(dl, "features.json"))) == {"features": ["tenure", "monthly_charges"], "k": 2}
assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config/features.json") == {
    "features": ["tenure", "monthly_charges"],
    "k": 2,
}

hist = client.get_metric_history(run_id, "loss")
assert [(m.step, m.value) for m in hist] == [(0, 0.9), (1, 0.7), (2, 0.55), (3, 0.5)], hist

write_result(
    {
        "flow": "a_fluent",
        "experiment_id": exp.experiment_id,
        "experiment_name": exp_name,
        "run_id": run_id,
        "artifact_uri": got.info.artifact_uri,
        "params": got.data.params,
        "metrics": got.data.metrics,
        "dataset": {"name": ds.name, "digest": ds.digest, "source_type": ds.source_type, "context": "training"},
        # Every artifact the run holds, with the SHA-256 of its bytes.
        "artifacts": {
            "notes.txt": sha256(b"churn notes\nline two\n"),
            "docs/notes.txt": sha256(b"churn notes\nline two\n"),
            "text/hello.txt": sha256(b"hello from flow a\n"),
            "config/features.json": sha256(open(os.path.join(dl, "features.json"), "rb").read()),
            **{f"reports/{k}": sha256(v) for k, v in files.items()},
        },
    }
)
print("flow a ok", run_id)
