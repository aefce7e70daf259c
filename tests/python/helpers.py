"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional


def run_python(code_or_file: str, *, env: Dict[str, str], cwd: Optional[str] = None, args: Optional[List[str]] = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a Python file (or `-c` code) in a child interpreter; answers the completed process."""
    argv = [sys.executable]
    argv += [code_or_file] if os.path.isfile(code_or_file) else ["-c", code_or_file]
    argv += args or []
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def raw_graphql(url: str, token: str, query: str, variables: Optional[dict] = None) -> dict:
    """POST /graphql with urllib, independent of the SDK under test; answers the whole document."""
    import json
    import urllib.request

    req = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read().decode())


def gql(server, query: str, variables: Optional[dict] = None) -> dict:
    """`data` of a raw GraphQL call as the admin; fails the test on errors."""
    doc = raw_graphql(server.url, server.admin_token, query, variables)
    assert not doc.get("errors"), doc.get("errors")
    return doc["data"]


def last_json_line(stdout: str) -> dict:
    """The last line of a child's stdout that is a JSON object."""
    import json

    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in the child's output:\n{stdout}")


def git(cwd: str, *args: str) -> str:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="Test Author",
        GIT_AUTHOR_EMAIL="author@example.com",
        GIT_COMMITTER_NAME="Test Author",
        GIT_COMMITTER_EMAIL="author@example.com",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=cwd,
    )
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()
