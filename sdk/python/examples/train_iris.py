#!/usr/bin/env python3
"""Train a small iris classifier and record everything in Custody.

    pip install ./sdk/python scikit-learn
    export CUSTODY_URL=http://127.0.0.1:8080 CUSTODY_TOKEN=$(cat custody-data/admin.token)
    python sdk/python/examples/train_iris.py [--project iris-demo] [--epochs 20]

What lands in Custody: a run (with the git commit of this file's checkout and its dirty flag),
its params, the loss and accuracy of every epoch and the accuracy of every cross-validation fold,
the iris CSV it trained on as a dataset version (its input), the pickled model and a report as
artifacts, and a new version of the model ``iris-classifier``. The project is created if it does
not exist. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import tempfile

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import custody


def write_iris_csv(path: str) -> tuple:
    """Writes the iris data set (bundled with scikit-learn) as CSV; answers (X, y)."""
    iris = load_iris()
    X, y = iris.data, iris.target
    header = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names] + ["species"]
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(f"{v:.1f}" for v in row) + f",{iris.target_names[label]}\n")
    return X, y


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=os.environ.get("CUSTODY_PROJECT", "iris-demo"))
    parser.add_argument("--model", default="iris-classifier")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    client = custody.init()  # CUSTODY_URL, CUSTODY_TOKEN
    if client.project(args.project) is None:
        client.create_project(args.project, "scikit-learn examples")

    work = tempfile.mkdtemp(prefix="custody-iris-")
    csv_path = os.path.join(work, "iris.csv")
    X, y = write_iris_csv(csv_path)

    params = {
        "model": "SGDClassifier(log_loss) + StandardScaler",
        "epochs": args.epochs,
        "folds": args.folds,
        "alpha": args.alpha,
        "seed": args.seed,
        "test_size": 0.25,
    }
    try:
        return train(args, params, csv_path, work, X, y)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train(args: argparse.Namespace, params: dict, csv_path: str, work: str, X: np.ndarray, y: np.ndarray) -> dict:
    """One run: params, dataset, metrics, artifacts, model version."""
    with custody.start_run(args.project, name=f"iris-sgd-{args.epochs}ep", tags={"example": "iris"}) as run:
        run.log_params(params)
        dataset = run.use_dataset(csv_path, "iris", description="Fisher's iris data (scikit-learn copy)")

        # Cross-validation: one accuracy per fold.
        folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
        cv_scores = []
        for fold, (train_idx, val_idx) in enumerate(folds.split(X, y)):
            pipe = make_pipeline(
                StandardScaler(),
                SGDClassifier(loss="log_loss", alpha=args.alpha, max_iter=1000, tol=1e-4, random_state=args.seed),
            )
            pipe.fit(X[train_idx], y[train_idx])
            score = accuracy_score(y[val_idx], pipe.predict(X[val_idx]))
            cv_scores.append(score)
            run.log_metric("cv_accuracy", score, step=fold)
        run.log_metric("cv_accuracy_mean", float(np.mean(cv_scores)))

        # The final model, trained epoch by epoch on a train/test split.
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.25, stratify=y, random_state=args.seed
        )
        scaler = StandardScaler().fit(X_train)
        Xs_train, Xs_test = scaler.transform(X_train), scaler.transform(X_test)
        clf = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=args.seed)
        classes = np.unique(y)
        rng = np.random.default_rng(args.seed)
        for epoch in range(args.epochs):
            order = rng.permutation(len(Xs_train))
            clf.partial_fit(Xs_train[order], y_train[order], classes=classes)
            run.log_metric("train_loss", log_loss(y_train, clf.predict_proba(Xs_train), labels=classes), step=epoch)
            run.log_metric("test_loss", log_loss(y_test, clf.predict_proba(Xs_test), labels=classes), step=epoch)
            run.log_metric("test_accuracy", accuracy_score(y_test, clf.predict(Xs_test)), step=epoch)
        accuracy = accuracy_score(y_test, clf.predict(Xs_test))
        run.log_metric("accuracy", accuracy)

        model_path = os.path.join(work, "model.pkl")
        with open(model_path, "wb") as f:
            pickle.dump(make_pipeline(scaler, clf), f)
        report_path = os.path.join(work, "report.json")
        with open(report_path, "w") as f:
            json.dump({"accuracy": accuracy, "cv_accuracy": cv_scores, "params": params}, f, indent=2)
        run.log_artifact(report_path, "reports")
        version = run.register_model(
            args.model,
            model_path,
            description=f"SGD on iris, test accuracy {accuracy:.3f}",
            primary_metric="accuracy",
        )

    summary = {
        "project": args.project,
        "run": run.id,
        "status": run.status,
        "code_commit": (run.code_commit or {}).get("commit"),
        "dataset_version": dataset["id"],
        "model": args.model,
        "model_version": version["version"],
        "model_version_id": version["id"],
        "accuracy": accuracy,
    }
    return summary


if __name__ == "__main__":
    print(json.dumps(main()))
