"""Custody's Python SDK: track training runs and register models in a Custody server.

Quick start::

    import custody

    custody.init()  # CUSTODY_URL and CUSTODY_TOKEN from the environment
    with custody.start_run("fraud", name="baseline") as run:   # captures the git commit
        run.log_params({"lr": 0.1, "epochs": 10})
        run.use_dataset("data/train.csv")                       # hashed, recorded as input
        for epoch in range(10):
            run.log_metric("loss", 0.5 / (epoch + 1), step=epoch)  # enqueued, sent in batches
        run.register_model("fraud-detector", "model.pkl")       # uploaded, then registered
    # FINISHED here; FAILED if the block raised (the exception propagates)

Errors raise :class:`CustodyError` whose ``code`` is the server's ``extensions.code``.
"""

from ._client import DEFAULT_URL, Client, sha256_file
from ._errors import CustodyError
from ._git import GitInfo, capture_git
from ._hashing import hash_path
from ._run import DatasetSpec, Run, get_client, init, register_dataset, start_run

__version__ = "0.1.0"

__all__ = [
    "Client",
    "CustodyError",
    "DEFAULT_URL",
    "DatasetSpec",
    "GitInfo",
    "Run",
    "capture_git",
    "get_client",
    "hash_path",
    "init",
    "register_dataset",
    "sha256_file",
    "start_run",
    "__version__",
]
