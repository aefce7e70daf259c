"""Shared by the flow scripts: the environment they need and how they report what they created.

Each `flow_*.py` is a plain script (`python flow_x.py`) driving the real MLflow client against
MLFLOW_TRACKING_URI (with MLFLOW_TRACKING_TOKEN sent as `Authorization: Bearer ...`). It asserts
what the MLflow side must show and writes a JSON object of what it created to $FLOW_RESULT.
"""

from __future__ import annotations

import json
import os
import random
import uuid

# Never phone home, never wait long on a server that does not answer.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")

import warnings  # noqa: E402

import numpy as np  # noqa: E402

# MLflow's hint about integer columns in inferred schemas is noise here.
warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")

SEED = 1234


def setup() -> str:
    """Checks the environment, seeds the generators, returns a short unique suffix for names."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    assert uri and uri.startswith("http"), "MLFLOW_TRACKING_URI must be the server's http(s) URL"
    random.seed(SEED)
    np.random.seed(SEED)
    return uuid.uuid4().hex[:10]


def write_result(result: dict) -> None:
    path = os.environ.get("FLOW_RESULT")
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


def churn_frame(n: int = 60):
    """A small, seeded churn table: two numeric features, one categorical, a 0/1 target."""
    import pandas as pd

    rng = np.random.default_rng(SEED)
    tenure = rng.integers(1, 72, size=n)
    charges = rng.normal(70.0, 20.0, size=n).round(2)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    churn = ((charges > 75.0) & (tenure < 30)).astype(int)
    return pd.DataFrame({"tenure": tenure, "monthly_charges": charges, "plan": plan, "churn": churn})


def xy(n: int = 60):
    """Features (float64 frame) and target for the sklearn flows."""
    df = churn_frame(n)
    X = df[["tenure", "monthly_charges"]].astype("float64")
    y = df["churn"].to_numpy()
    return X, y
