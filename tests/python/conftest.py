"""pytest fixtures: one real `custody-server` for the whole session (embedded PostgreSQL).

The binary: `CUSTODY_SERVER_BIN`, else `${CARGO_TARGET_DIR:-/var/tmp/custody-target}/debug/custody-server`,
else `target/debug/custody-server`. It is never built here: `cargo build -p custody-server` first
(CI's `cargo test --workspace` already did).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from typing import Dict, Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from serverproc import REPO_ROOT, CustodyServer, find_server_bin, make_tmp_dir  # noqa: E402

# Run against the installed package; fall back to the source tree when it is not installed.
try:
    import custody  # noqa: F401
except ImportError:  # pragma: no cover - developer convenience
    sys.path.insert(0, os.path.join(REPO_ROOT, "sdk", "python"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(REPO_ROOT, "sdk", "python"), os.environ.get("PYTHONPATH")) if p
    )
    import custody  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI timeout, `kill`) unwinds like Ctrl-C, so the server fixture's teardown runs.
    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)


@pytest.fixture(scope="session")
def server() -> Iterator[CustodyServer]:
    srv = CustodyServer.start(find_server_bin(), timeout=90)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def admin(server: CustodyServer) -> "custody.Client":
    return custody.Client(server.url, server.admin_token)


@pytest.fixture
def project(admin: "custody.Client") -> str:
    """A fresh project per test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin.create_project(name, "pytest")
    return name


@pytest.fixture
def env(server: CustodyServer) -> Dict[str, str]:
    """An environment for child processes that points the SDK at the test server."""
    e = dict(os.environ)
    e["CUSTODY_URL"] = server.url
    e["CUSTODY_TOKEN"] = server.admin_token
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e


@pytest.fixture
def tmp(request: pytest.FixtureRequest) -> Iterator[str]:
    d = make_tmp_dir("custody-py-test-")
    yield d
    subprocess.run(["rm", "-rf", d], check=False)
