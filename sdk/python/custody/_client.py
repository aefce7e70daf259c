"""The typed client: GraphQL operations of the public contract (API.md) and artifact transfers.

Only the standard library is used: one keep-alive ``http.client`` connection per thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import ssl
import tempfile
import threading
import urllib.parse
from datetime import datetime, timedelta, timezone
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

try:
    import fcntl
except ImportError:  # Windows: renewals are then not serialized between processes
    fcntl = None  # type: ignore[assignment]

from ._errors import CustodyError
from ._types import (
    Artifact,
    AuditEntry,
    CodeCommit,
    Dataset,
    DatasetVersion,
    LineageEdge,
    LineageGraph,
    Metric,
    Model,
    ModelVersion,
    Param,
    Project,
    Promotion,
    RunInfo,
)

__all__ = ["Client", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8080"
USER_AGENT = "custody-python/0.1.0"
_CHUNK = 1 << 20
# A stored access token this close to its expiry is renewed before use, so it cannot lapse in flight.
_RENEW_MARGIN = timedelta(seconds=60)

PathLike = Union[str, "os.PathLike[str]"]

# Errors of a reused keep-alive connection that the server closed meanwhile: the request never
# reached it, so sending it again on a fresh connection is safe.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)

RUN_FIELDS = """
  id name status startedAt endedAt tags
  project { id name }
  codeCommit { id repository commit branch dirty author message }
"""
DATASET_VERSION_FIELDS = "id version uri sha256 sizeBytes tags createdAt"
MODEL_VERSION_FIELDS = """
  id version stage description artifactPath manifestSha256 createdAt
  artifacts { path sha256 size }
  run { id }
"""
PROMOTION_FIELDS = """
  id status stage comment createdAt expiresAt decidedAt manifestSha256 policyResult
  requiredApprovals approverGroup
  modelVersion { id version }
  requestedBy { email }
  approvals { approver { email } decision comment via at }
"""
EDGE_FIELDS = "id relation createdAt from { kind id } to { kind id }"

NodeLike = Union[Tuple[str, str], Mapping[str, str]]


def _node(node: NodeLike) -> Dict[str, str]:
    """``("RUN", id)`` or ``{"kind": "RUN", "id": id}`` as a ``NodeRef`` input."""
    if isinstance(node, Mapping):
        kind, ident = node["kind"], node["id"]
    else:
        kind, ident = node
    return {"kind": str(kind).upper().replace("-", "_"), "id": str(ident)}


def _owner_kind(kind: str) -> str:
    """``run`` or ``model-version`` (also accepts ``MODEL_VERSION`` and ``model_version``)."""
    k = kind.lower().replace("_", "-")
    if k not in ("run", "model-version"):
        raise ValueError(f"owner kind must be 'run' or 'model-version', not {kind!r}")
    return k


def _strip_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def sha256_file(path: PathLike) -> Tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class _Transport:
    """HTTP with one keep-alive connection per thread."""

    def __init__(self, url: str, token: Optional[str], timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the Custody URL must look like http://host:port, not {url!r}")
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.login: Optional[_StoredLogin] = None
        self._local = threading.local()

    def _connection(self) -> Tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context(), blocksize=_CHUNK
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout, blocksize=_CHUNK)
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        """Closes this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    def request(
        self,
        method: str,
        path: str,
        body: Union[None, bytes, IO[bytes]] = None,
        headers: Optional[Mapping[str, str]] = None,
        sink: Optional[IO[bytes]] = None,
        refused: Optional[Callable[[bytes], bool]] = None,
    ) -> Tuple[int, http.client.HTTPMessage, bytes]:
        """Sends one request; answers status, headers and body (or streams the body into
        ``sink`` when given and the status is 2xx). Retries once on a stale keep-alive
        connection.

        With a stored, refreshable login, renews the token first when it is about to expire, and
        renews it and sends again once when the server refuses it (HTTP 401, or ``refused(body)``
        for answers that carry the refusal inside): it may have been revoked or expired early."""
        login = self.login
        if login is None:
            return self._send(method, path, body, headers, sink)
        if login.due():
            login.renew(self, None)
        token = self.token
        start = body.tell() if hasattr(body, "tell") else None  # type: ignore[union-attr]
        status, msg, data = self._send(method, path, body, headers, sink)
        if status == 401 or (refused is not None and refused(data)):
            login.renew(self, token)
            if start is not None:
                body.seek(start)  # type: ignore[union-attr]
            status, msg, data = self._send(method, path, body, headers, sink)
        return status, msg, data

    def _send(
        self,
        method: str,
        path: str,
        body: Union[None, bytes, IO[bytes]],
        headers: Optional[Mapping[str, str]],
        sink: Optional[IO[bytes]],
    ) -> Tuple[int, http.client.HTTPMessage, bytes]:
        target = self.prefix + path
        start = body.tell() if hasattr(body, "tell") else None  # type: ignore[union-attr]
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, target, body=body, headers=self.headers(headers))
                resp = conn.getresponse()
                if sink is not None and 200 <= resp.status < 300:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        sink.write(chunk)
                    data = b""
                else:
                    data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, resp.msg, data
            except _STALE_CONNECTION as e:
                self.close()
                if reused and attempt == 0 and getattr(sink, "size", 0) == 0:
                    if start is not None:
                        body.seek(start)  # type: ignore[union-attr]
                    continue
                raise CustodyError(f"lost the connection to Custody at {self.url}: {e}", "UNAVAILABLE") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise CustodyError(f"cannot reach Custody at {self.url}: {e}", "UNAVAILABLE") from e
        raise AssertionError("unreachable")


def _http_error(status: int, data: bytes, what: str) -> CustodyError:
    """An HTTP route's error answer ``{"error": {"code", "message"}}`` as a CustodyError."""
    try:
        err = json.loads(data.decode("utf-8"))["error"]
        return CustodyError(f"{what}: {err['message']}", err.get("code", "INTERNAL"), status=status)
    except (ValueError, KeyError, TypeError):
        code = {
            401: "UNAUTHENTICATED",
            403: "FORBIDDEN",
            404: "NOT_FOUND",
            409: "CONFLICT",
            413: "TOO_LARGE",
        }.get(status, "INVALID_INPUT" if 400 <= status < 500 else "INTERNAL")
        text = data[:200].decode("utf-8", "replace").strip()
        return CustodyError(f"{what}: HTTP {status} {text}".strip(), code, status=status)


class Client:
    """A connection to one Custody server with one bearer token.

    Every method is one GraphQL operation (or one artifact transfer) of the public API and answers
    plain dicts shaped like the ``TypedDict`` it is annotated with. Errors raise
    :class:`CustodyError` with the server's ``extensions.code``.

    ``url`` defaults to ``CUSTODY_URL``, ``token`` to ``CUSTODY_TOKEN``; then to the login the
    ``custody login`` command stored (``$CUSTODY_CONFIG``, else
    ``$XDG_CONFIG_HOME/custody/config.json``, else ``~/.config/custody/config.json``); the URL
    finally to ``http://127.0.0.1:8080``. The client is thread safe: each thread gets its own
    keep-alive connection.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, timeout: float = 60.0) -> None:
        path, stored = _stored_login()
        url = url or os.environ.get("CUSTODY_URL") or stored.get("url") or DEFAULT_URL
        login = None
        if token is None:
            token = os.environ.get("CUSTODY_TOKEN")
            if not token:
                token = stored.get("token")
                # Only the CLI's device-flow login is renewable; explicit tokens are used as given.
                if token and path and stored.get("refresh_token"):
                    login = _StoredLogin(path, stored, stored.get("url") or url, timeout)
        self._t = _Transport(url, token.strip() if token else None, timeout)
        self._t.login = login

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._t.url

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def close(self) -> None:
        """Closes the calling thread's connection (others close when their thread ends)."""
        self._t.close()

    # ------------------------------------------------------------------ GraphQL

    def graphql(self, query: str, variables: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Runs one GraphQL document; answers ``data``. Any error raises :class:`CustodyError`
        with the first error's ``extensions.code`` (all errors in ``.errors``)."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}, separators=(",", ":")).encode()
        return self._post_graphql(body)

    def _post_graphql(self, body: bytes) -> Dict[str, Any]:
        status, _, data = self._t.request(
            "POST", "/graphql", body, {"Content-Type": "application/json"}, refused=_graphql_refused
        )
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError:
            if status >= 400:
                raise _http_error(status, data, "GraphQL request refused") from None
            raise CustodyError(
                f"the server at {self.url} answered HTTP {status} with something that is not JSON",
                "INVALID_RESPONSE",
                status=status,
            ) from None
        if not isinstance(doc, dict):
            raise CustodyError("the GraphQL answer is not a JSON object", "INVALID_RESPONSE", status=status)
        errors = doc.get("errors") or []
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
            code = (first.get("extensions") or {}).get("code") or ("INTERNAL" if status >= 500 else "INVALID_INPUT")
            message = first.get("message", "unknown error")
            if code == "UNAUTHENTICATED" and not self._t.token:
                message += " (no token: set CUSTODY_TOKEN or call custody.init(token=...))"
            raise CustodyError(message, code, status=status, errors=errors, path=first.get("path"))
        if status >= 400 or "data" not in doc:
            raise _http_error(status, data, "GraphQL request refused")
        return doc["data"]

    # ------------------------------------------------------------------ users and projects

    def me(self) -> Dict[str, Any]:
        """The caller: ``{id, email, isAdmin}``."""
        return self.graphql("query { me { id email isAdmin } }")["me"]

    def project(self, name: str) -> Optional[Project]:
        """A project by name, or None when it does not exist."""
        q = "query($n: String!) { project(name: $n) { id name description createdAt } }"
        return self.graphql(q, {"n": name})["project"]

    def create_project(self, name: str, description: Optional[str] = None) -> Project:
        """Creates a project; the caller becomes its admin. ``CONFLICT`` if the name is taken."""
        q = """mutation($n: String!, $d: String) {
          createProject(name: $n, description: $d) { id name description createdAt } }"""
        return self.graphql(q, {"n": name, "d": description})["createProject"]

    def add_member(self, project: str, email: str, role: str, groups: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Adds a member (or changes a member's role and groups); ``role`` is VIEWER,
        CONTRIBUTOR, APPROVER or ADMIN. The person must have an account (``NOT_FOUND``
        otherwise): :meth:`invite_member` invites someone who has none."""
        q = """mutation($p: String!, $e: String!, $r: Role!, $g: [String!]) {
          addMember(project: $p, email: $e, role: $r, groups: $g) { role groups user { id email } } }"""
        return self.graphql(q, {"p": project, "e": email, "r": role.upper(), "g": list(groups) if groups else None})[
            "addMember"
        ]

    def invite_member(
        self, project: str, email: str, role: str, groups: Optional[Sequence[str]] = None
    ) -> Dict[str, Any]:
        """Invites an address without an account to a project (project admins); the invitee is
        mailed and joins with this role and these groups when they first sign in."""
        q = """mutation($p: String!, $e: String!, $r: Role!, $g: [String!]) {
          inviteMember(project: $p, email: $e, role: $r, groups: $g) { id email role groups expiresAt } }"""
        return self.graphql(q, {"p": project, "e": email, "r": role.upper(), "g": list(groups) if groups else None})[
            "inviteMember"
        ]

    def remove_member(self, project: str, email: str) -> None:
        """Removes a member from a project (project admins; never the last admin)."""
        q = "mutation($p: String!, $e: String!) { removeMember(project: $p, email: $e) }"
        self.graphql(q, {"p": project, "e": email})

    # ------------------------------------------------------------------ access tokens

    def create_access_token(
        self,
        name: str,
        expires_in: Optional[str] = None,
        read_only: bool = False,
        project: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Creates a personal access token acting as the caller.

        ``expires_in`` like ``"30d"`` (default 90 days); ``read_only`` refuses every change;
        ``project`` limits the token to that project. Answers ``{"secret": "cst_…", "token":
        {...}}``: the secret is shown this once; pass it as ``Client(url, secret)``.
        """
        q = """mutation($n: String!, $e: String, $r: Boolean, $p: String) {
          createAccessToken(name: $n, expiresIn: $e, readOnly: $r, project: $p) {
            secret token { id name readOnly expiresAt lastUsedAt revokedAt project { name } } } }"""
        return self.graphql(q, {"n": name, "e": expires_in, "r": read_only, "p": project})[
            "createAccessToken"
        ]

    def access_tokens(self) -> List[Dict[str, Any]]:
        """The caller's own access tokens, newest first (without their secrets)."""
        q = "query { accessTokens { id name readOnly createdAt expiresAt lastUsedAt revokedAt project { name } } }"
        return self.graphql(q)["accessTokens"]

    def revoke_access_token(self, token_id: str) -> None:
        """Revokes an access token (its owner, a server admin, or an admin of a service
        account's project)."""
        q = "mutation($id: ID!) { revokeAccessToken(id: $id) { id } }"
        self.graphql(q, {"id": token_id})

    def create_service_account(self, project: str, name: str, role: str = "CONTRIBUTOR") -> Dict[str, Any]:
        """Creates a project service account (project admins), as ``VIEWER`` or ``CONTRIBUTOR``."""
        q = """mutation($p: String!, $n: String!, $r: Role) {
          createServiceAccount(project: $p, name: $n, role: $r) { name identity role createdAt } }"""
        return self.graphql(q, {"p": project, "n": name, "r": role})["createServiceAccount"]

    def create_service_account_token(
        self,
        project: str,
        account: str,
        name: str,
        expires_in: Optional[str] = None,
        read_only: bool = False,
    ) -> Dict[str, Any]:
        """Creates a token for a project's service account (project admins); it reaches that
        project only. Answers ``{"secret": "cst_…", "token": {...}}``, the secret shown once."""
        q = """mutation($p: String!, $a: String!, $n: String!, $e: String, $r: Boolean) {
          createServiceAccountToken(project: $p, account: $a, name: $n, expiresIn: $e, readOnly: $r) {
            secret token { id name readOnly expiresAt lastUsedAt revokedAt project { name } } } }"""
        return self.graphql(q, {"p": project, "a": account, "n": name, "e": expires_in, "r": read_only})[
            "createServiceAccountToken"
        ]

    # ------------------------------------------------------------------ datasets

    def dataset(self, project: str, name: str) -> Optional[Dataset]:
        """A dataset with all its versions (oldest first), or None."""
        q = f"""query($p: String!, $n: String!) {{
          dataset(project: $p, name: $n) {{ id name description createdAt versions {{ {DATASET_VERSION_FIELDS} }} }} }}"""
        return self.graphql(q, {"p": project, "n": name})["dataset"]

    def create_dataset(self, project: str, name: str, description: Optional[str] = None) -> Dataset:
        """Creates a dataset (``CONFLICT`` if it exists)."""
        q = f"""mutation($p: String!, $n: String!, $d: String) {{
          createDataset(project: $p, name: $n, description: $d) {{
            id name description createdAt versions {{ {DATASET_VERSION_FIELDS} }} }} }}"""
        return self.graphql(q, {"p": project, "n": name, "d": description})["createDataset"]

    def register_dataset_version(
        self,
        project: str,
        dataset: str,
        uri: str,
        sha256: str,
        *,
        size_bytes: Optional[int] = None,
        tags: Optional[Sequence[str]] = None,
        derived_from: Optional[Sequence[str]] = None,
    ) -> DatasetVersion:
        """Registers the next version of a dataset."""
        q = f"""mutation($p: String!, $d: String!, $u: String!, $s: Sha256!, $z: Int, $t: [String!], $f: [ID!]) {{
          registerDatasetVersion(project: $p, dataset: $d, uri: $u, sha256: $s, sizeBytes: $z, tags: $t,
                                 derivedFrom: $f) {{ {DATASET_VERSION_FIELDS} }} }}"""
        v = {
            "p": project,
            "d": dataset,
            "u": uri,
            "s": sha256,
            "z": size_bytes,
            "t": list(tags) if tags is not None else None,
            "f": list(derived_from) if derived_from is not None else None,
        }
        return self.graphql(q, v)["registerDatasetVersion"]

    # ------------------------------------------------------------------ code commits

    def register_code_commit(
        self,
        repository: str,
        commit: str,
        *,
        branch: Optional[str] = None,
        dirty: Optional[bool] = None,
        author: Optional[str] = None,
        message: Optional[str] = None,
    ) -> CodeCommit:
        """Registers a commit (the same repository and commit again answers the first one)."""
        q = """mutation($r: String!, $c: String!, $b: String, $d: Boolean, $a: String, $m: String) {
          registerCodeCommit(repository: $r, commit: $c, branch: $b, dirty: $d, author: $a, message: $m) {
            id repository commit branch dirty author message } }"""
        v = {"r": repository, "c": commit, "b": branch, "d": dirty, "a": author, "m": message}
        return self.graphql(q, v)["registerCodeCommit"]

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        project: str,
        name: Optional[str] = None,
        *,
        code_commit_id: Optional[str] = None,
        inputs: Optional[Sequence[str]] = None,
        tags: Optional[Mapping[str, str]] = None,
    ) -> RunInfo:
        """The ``startRun`` mutation (low level: no git capture, no background logger; see
        :func:`custody.start_run` for that). ``inputs`` are dataset version ids."""
        q = f"""mutation($p: String!, $n: String, $c: ID, $i: [ID!], $t: JSON) {{
          startRun(project: $p, name: $n, codeCommitId: $c, inputs: $i, tags: $t) {{ {RUN_FIELDS} }} }}"""
        v = {
            "p": project,
            "n": name,
            "c": code_commit_id,
            "i": list(inputs) if inputs is not None else None,
            "t": dict(tags) if tags is not None else None,
        }
        return self.graphql(q, v)["startRun"]

    def run(self, run_id: str) -> Optional[RunInfo]:
        """A run (status, tags, code commit), or None."""
        q = f"query($id: ID!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}"
        return self.graphql(q, {"id": run_id})["run"]

    def run_params(self, run_id: str) -> List[Param]:
        """A run's params, sorted by key."""
        run = self.graphql("query($id: ID!) { run(id: $id) { params { key value } } }", {"id": run_id})["run"]
        if run is None:
            raise CustodyError(f"no run with id {run_id}", "NOT_FOUND")
        return run["params"]

    def run_metrics(self, run_id: str, key: Optional[str] = None) -> List[Metric]:
        """A run's whole metric history (all keys or one), ordered by key, step and time.

        Read in one streamed request (``GET /api/runs/{id}/metrics``, JSON lines), however long
        the history; for charts, ``metricHistory`` answers a downsampled series instead."""
        route = f"/api/runs/{urllib.parse.quote(str(run_id), safe='')}/metrics"
        if key is not None:
            route += "?" + urllib.parse.urlencode({"key": key})
        status, _, data = self._t.request("GET", route)
        if status != 200:
            raise _http_error(status, data, f"reading the metrics of run {run_id}")
        return [json.loads(line) for line in data.splitlines() if line]

    def run_artifacts(self, run_id: str) -> List[Artifact]:
        """A run's files, sorted by path."""
        run = self.graphql("query($id: ID!) { run(id: $id) { artifacts { path sha256 size } } }", {"id": run_id})["run"]
        if run is None:
            raise CustodyError(f"no run with id {run_id}", "NOT_FOUND")
        return run["artifacts"]

    def run_inputs(self, run_id: str) -> List[DatasetVersion]:
        """The dataset versions a run consumed."""
        q = f"query($id: ID!) {{ run(id: $id) {{ inputs {{ {DATASET_VERSION_FIELDS} dataset {{ name }} }} }} }}"
        run = self.graphql(q, {"id": run_id})["run"]
        if run is None:
            raise CustodyError(f"no run with id {run_id}", "NOT_FOUND")
        return run["inputs"]

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Sets params (immutable once set). Values that are not strings are sent as JSON
        (``0.1``, ``true``, ``null``, ``[1, 2]``)."""
        items = [{"key": str(k), "value": _param_value(v)} for k, v in params.items()]
        if not items:
            return
        q = "mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id } }"
        for i in range(0, len(items), 1000):
            self.graphql(q, {"r": run_id, "p": items[i : i + 1000]})

    def log_metrics(self, run_id: str, metrics: Sequence[Mapping[str, Any]]) -> int:
        """Appends metrics ``{key, value, step?, timestamp?}`` (at most 1,000 per call, one
        statement on the server); answers how many were stored. For training loops prefer
        :meth:`custody.Run.log_metric`, which batches in the background."""
        q = "mutation($r: ID!, $m: [MetricInput!]!) { logMetrics(runId: $r, metrics: $m) }"
        return self.graphql(q, {"r": run_id, "m": [dict(m) for m in metrics]})["logMetrics"]

    def finish_run(self, run_id: str, status: str = "FINISHED") -> RunInfo:
        """Ends a run as FINISHED, FAILED or KILLED."""
        q = f"mutation($r: ID!, $s: RunStatus!) {{ finishRun(runId: $r, status: $s) {{ {RUN_FIELDS} }} }}"
        return self.graphql(q, {"r": run_id, "s": status.upper()})["finishRun"]

    def search_runs(
        self,
        filter: Optional[str] = None,
        *,
        projects: Optional[Sequence[str]] = None,
        order_by: Optional[Sequence[str]] = None,
        max_results: int = 1000,
    ) -> List[RunInfo]:
        """Runs matching ``filter`` in MLflow's search syntax (``"metrics.auc > 0.9 and
        params.depth = '6'"``; a metric means its latest value), in the named projects or every
        project you may read, ordered by ``order_by`` keys as MLflow writes them
        (``["metrics.auc DESC", "attributes.start_time"]``; then newest first). Pages through the
        results, at most ``max_results`` runs. A bad filter raises ``CustodyError`` with code
        ``INVALID_INPUT`` and the column of the bad token."""
        order = []
        for key in order_by or []:
            parts = key.rsplit(" ", 1)
            if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
                order.append({"key": parts[0], "descending": parts[1].upper() == "DESC"})
            else:
                order.append({"key": key, "descending": False})
        q = f"""query($p: [String!], $f: String, $o: [RunOrder!], $n: Int, $a: String) {{
          searchRuns(projects: $p, filter: $f, orderBy: $o, first: $n, after: $a) {{
            edges {{ cursor node {{ {RUN_FIELDS} }} }} pageInfo {{ hasNextPage }} }} }}"""
        found: List[RunInfo] = []
        after: Optional[str] = None
        while len(found) < max_results:
            page = self.graphql(
                q,
                {
                    "p": list(projects) if projects is not None else None,
                    "f": filter,
                    "o": order,
                    "n": min(100, max_results - len(found)),
                    "a": after,
                },
            )["searchRuns"]
            found.extend(edge["node"] for edge in page["edges"])
            if not page["pageInfo"]["hasNextPage"] or not page["edges"]:
                break
            after = page["edges"][-1]["cursor"]
        return found

    # ------------------------------------------------------------------ models

    def model(self, project: str, name: str) -> Optional[Model]:
        """A model with its versions, or None."""
        q = f"""query($p: String!, $n: String!) {{ model(project: $p, name: $n) {{
          id name description primaryMetric higherIsBetter createdAt versions {{ {MODEL_VERSION_FIELDS} }} }} }}"""
        return self.graphql(q, {"p": project, "n": name})["model"]

    def create_model(
        self,
        project: str,
        name: str,
        description: Optional[str] = None,
        *,
        primary_metric: Optional[str] = None,
        higher_is_better: Optional[bool] = None,
    ) -> Model:
        """Creates a model (``CONFLICT`` if it exists)."""
        q = f"""mutation($p: String!, $n: String!, $d: String, $m: String, $h: Boolean) {{
          createModel(project: $p, name: $n, description: $d, primaryMetric: $m, higherIsBetter: $h) {{
            id name description primaryMetric higherIsBetter createdAt versions {{ {MODEL_VERSION_FIELDS} }} }} }}"""
        v = {"p": project, "n": name, "d": description, "m": primary_metric, "h": higher_is_better}
        return self.graphql(q, v)["createModel"]

    def register_model_version(
        self,
        project: str,
        model: str,
        run_id: str,
        artifact_path: Optional[str] = None,
        description: Optional[str] = None,
    ) -> ModelVersion:
        """Registers the next version of a model from a run's files at or under
        ``artifact_path``."""
        q = f"""mutation($p: String!, $m: String!, $r: ID!, $a: String, $d: String) {{
          registerModelVersion(project: $p, model: $m, runId: $r, artifactPath: $a, description: $d) {{
            {MODEL_VERSION_FIELDS} }} }}"""
        v = {"p": project, "m": model, "r": run_id, "a": artifact_path, "d": description}
        return self.graphql(q, v)["registerModelVersion"]

    def model_version(self, project: str, model: str, version: int) -> Optional[ModelVersion]:
        """One version of a model, or None."""
        q = f"""query($p: String!, $m: String!, $v: Int!) {{
          modelVersion(project: $p, model: $m, version: $v) {{ {MODEL_VERSION_FIELDS} }} }}"""
        return self.graphql(q, {"p": project, "m": model, "v": int(version)})["modelVersion"]

    # ------------------------------------------------------------------ lineage

    def link_lineage(self, from_node: NodeLike, to_node: NodeLike, relation: str) -> LineageEdge:
        """Records that ``from_node`` depends on ``to_node``; nodes are ``(kind, id)`` with kind
        DATASET_VERSION, CODE_COMMIT, RUN, MODEL_VERSION, DEPLOYMENT or JOB."""
        q = f"""mutation($f: NodeRef!, $t: NodeRef!, $r: String!) {{
          linkLineage(from: $f, to: $t, relation: $r) {{ {EDGE_FIELDS} }} }}"""
        return self.graphql(q, {"f": _node(from_node), "t": _node(to_node), "r": relation})["linkLineage"]

    def lineage(self, node: NodeLike, direction: str = "UPSTREAM", depth: int = 3) -> LineageGraph:
        """Nodes and edges within ``depth`` steps UPSTREAM or DOWNSTREAM of ``node``."""
        q = f"""query($n: NodeRef!, $d: LineageDirection!, $k: Int) {{
          lineage(node: $n, direction: $d, depth: $k) {{ nodes {{ kind id }} edges {{ {EDGE_FIELDS} }} }} }}"""
        return self.graphql(q, {"n": _node(node), "d": direction.upper(), "k": depth})["lineage"]

    def impact(self, node: NodeLike, depth: Optional[int] = None) -> Dict[str, Any]:
        """Everything downstream of ``node`` you may read, by kind: ``datasetVersions``,
        ``runs``, ``jobs`` (the pipelines whose runs are affected), ``modelVersions`` (with their
        ``stage``) and ``deployments``."""
        q = """query($n: NodeRef!, $k: Int) { impact(node: $n, depth: $k) {
          depth datasetVersions { id version uri dataset { name project { name } } }
          runs { id name status project { name } } jobs { id namespace name project { name } }
          modelVersions { id version stage model { name } run { project { name } } }
          deployments { id stage createdAt modelVersion { id version } } } }"""
        return self.graphql(q, {"n": _node(node), "k": depth})["impact"]

    def recall_dataset_version(self, dataset_version_id: str, reason: str) -> Dict[str, Any]:
        """Recalls a dataset version (APPROVER or ADMIN of its project): its data may no longer
        be used; promotions of what was built on it are denied by the default policy."""
        q = """mutation($id: ID!, $r: String!) { recallDatasetVersion(id: $id, reason: $r) {
          id version recall { id reason recalledAt inForce } } }"""
        return self.graphql(q, {"id": dataset_version_id, "r": reason})["recallDatasetVersion"]

    def lift_dataset_recall(self, dataset_version_id: str, reason: str) -> Dict[str, Any]:
        """Lifts the recall in force on a dataset version, saying why its data may be used again."""
        q = """mutation($id: ID!, $r: String!) { liftDatasetRecall(id: $id, reason: $r) {
          id version recalls { id reason recalledAt inForce liftedAt liftReason } } }"""
        return self.graphql(q, {"id": dataset_version_id, "r": reason})["liftDatasetRecall"]

    # ------------------------------------------------------------------ promotions

    def request_promotion(self, model_version_id: str, stage: str, comment: Optional[str] = None) -> Promotion:
        """Asks to move a model version to a stage: DENIED, APPLIED or PENDING."""
        q = f"""mutation($v: ID!, $s: String!, $c: String) {{
          requestPromotion(modelVersionId: $v, stage: $s, comment: $c) {{ {PROMOTION_FIELDS} }} }}"""
        return self.graphql(q, {"v": model_version_id, "s": stage, "c": comment})["requestPromotion"]

    def approve_promotion(self, promotion_id: str, comment: Optional[str] = None) -> Promotion:
        q = f"mutation($i: ID!, $c: String) {{ approvePromotion(id: $i, comment: $c) {{ {PROMOTION_FIELDS} }} }}"
        return self.graphql(q, {"i": promotion_id, "c": comment})["approvePromotion"]

    def reject_promotion(self, promotion_id: str, comment: str) -> Promotion:
        q = f"mutation($i: ID!, $c: String!) {{ rejectPromotion(id: $i, comment: $c) {{ {PROMOTION_FIELDS} }} }}"
        return self.graphql(q, {"i": promotion_id, "c": comment})["rejectPromotion"]

    def cancel_promotion(self, promotion_id: str) -> Promotion:
        q = f"mutation($i: ID!) {{ cancelPromotion(id: $i) {{ {PROMOTION_FIELDS} }} }}"
        return self.graphql(q, {"i": promotion_id})["cancelPromotion"]

    def promotion(self, promotion_id: str) -> Optional[Promotion]:
        q = f"query($i: ID!) {{ promotion(id: $i) {{ {PROMOTION_FIELDS} }} }}"
        return self.graphql(q, {"i": promotion_id})["promotion"]

    # ------------------------------------------------------------------ audit

    def audit_log(
        self,
        project: Optional[str] = None,
        *,
        subject_id: Optional[str] = None,
        action: Optional[str] = None,
        first: int = 100,
        after: Optional[str] = None,
    ) -> Tuple[List[AuditEntry], Optional[str]]:
        """One page of the audit log (ascending ``seq``); answers the entries and the cursor of
        the next page (None at the end)."""
        q = """query($p: String, $s: ID, $a: String, $f: Int, $c: String) {
          auditLog(project: $p, subjectId: $s, action: $a, first: $f, after: $c) {
            edges { node { seq at actor action subjectId hash prevHash } }
            pageInfo { hasNextPage endCursor } } }"""
        v = {"p": project, "s": subject_id, "a": action, "f": first, "c": after}
        log = self.graphql(q, v)["auditLog"]
        nxt = log["pageInfo"]["endCursor"] if log["pageInfo"]["hasNextPage"] else None
        return [e["node"] for e in log["edges"]], nxt

    # ------------------------------------------------------------------ artifacts

    def _artifact_route(self, owner_kind: str, owner_id: str, path: str) -> str:
        path = path.replace(os.sep, "/") if os.sep != "/" else path
        return f"/api/artifacts/{_owner_kind(owner_kind)}/{urllib.parse.quote(str(owner_id), safe='')}/" + urllib.parse.quote(
            path, safe="/"
        )

    def upload_artifact(
        self,
        owner_kind: str,
        owner_id: str,
        path: str,
        local_file: PathLike,
        *,
        sha256: Optional[str] = None,
    ) -> Artifact:
        """Streams one local file to ``PUT /api/artifacts/{owner_kind}/{owner_id}/{path}`` with
        its SHA-256 (computed here unless given) in ``X-Custody-Sha256``, so the server refuses
        bytes that changed on the way. Answers ``{path, sha256, size}``."""
        if sha256 is None:
            sha256, size = sha256_file(local_file)
        else:
            size = os.path.getsize(local_file)
        route = self._artifact_route(owner_kind, owner_id, path)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Custody-Sha256": sha256,
        }
        with open(local_file, "rb") as f:
            status, _, data = self._t.request("PUT", route, f, headers)
        if not 200 <= status < 300:
            raise _http_error(status, data, f"uploading {path}")
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise CustodyError("the upload answer is not JSON", "INVALID_RESPONSE", status=status) from None

    def download_artifact(self, owner_kind: str, owner_id: str, path: str, dest: PathLike) -> Artifact:
        """Streams ``GET /api/artifacts/{owner_kind}/{owner_id}/{path}`` into ``dest`` (written
        to a temporary file first, then renamed), checking the bytes against the server's
        ``X-Custody-Sha256``. Answers ``{path, sha256, size}``."""
        route = self._artifact_route(owner_kind, owner_id, path)
        dest = os.fspath(dest)
        directory = os.path.dirname(os.path.abspath(dest))
        os.makedirs(directory, exist_ok=True)

        class _HashingSink:
            def __init__(self, f: IO[bytes]) -> None:
                self.f, self.h, self.size = f, hashlib.sha256(), 0

            def write(self, b: bytes) -> None:
                self.h.update(b)
                self.size += len(b)
                self.f.write(b)

        fd, tmp = tempfile.mkstemp(prefix=".custody-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = _HashingSink(f)
                status, headers, data = self._t.request("GET", route, None, None, sink=sink)  # type: ignore[arg-type]
            if not 200 <= status < 300:
                raise _http_error(status, data, f"downloading {path}")
            digest = sink.h.hexdigest()
            announced = headers.get("X-Custody-Sha256")
            if announced and announced.lower() != digest:
                raise CustodyError(
                    f"downloaded {path} has SHA-256 {digest}, the server announced {announced}", "INTEGRITY"
                )
            os.replace(tmp, dest)
            tmp = ""
            return {"path": path, "sha256": digest, "size": sink.size}
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def artifact_download_url(self, owner_kind: str, owner_id: str, path: str) -> str:
        """A URL that downloads one file without a token, for an hour."""
        q = "query($k: ArtifactOwnerKind!, $o: ID!, $p: String!) { artifactDownloadUrl(ownerKind: $k, ownerId: $o, path: $p) }"
        kind = _owner_kind(owner_kind).upper().replace("-", "_")
        return self.graphql(q, {"k": kind, "o": owner_id, "p": path})["artifactDownloadUrl"]


def _config_path() -> Optional[str]:
    """Where ``custody login`` keeps the login, or None when there is no home to keep it in."""
    path = os.environ.get("CUSTODY_CONFIG")
    if not path:
        base = os.environ.get("XDG_CONFIG_HOME") or (
            os.path.join(os.path.expanduser("~"), ".config") if os.path.expanduser("~") != "~" else ""
        )
        if not base:
            return None
        path = os.path.join(base, "custody", "config.json")
    return path


def _read_config(path: str) -> Dict[str, Any]:
    """The config file's JSON object, or {} (missing or unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _stored_login() -> Tuple[Optional[str], Dict[str, str]]:
    """The config's path and ``{"url", "token"}`` written by the CLI's ``custody login`` (with
    ``refresh_token`` and ``expires_at`` after a device-flow login), or {}."""
    path = _config_path()
    doc = _read_config(path) if path else {}
    keys = ("url", "token", "refresh_token", "expires_at")
    return path, {k: v for k, v in doc.items() if k in keys and isinstance(v, str) and v.strip()}


def _parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 time such as ``2026-12-03T05:00:00Z``, or None. Fractions are dropped
    (``fromisoformat`` of Python < 3.11 reads neither ``Z`` nor nanoseconds)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", str(value).strip(), re.I)
    if not m:
        return None
    offset = m.group(2) if m.group(2) not in (None, "Z", "z") else "+00:00"
    try:
        return datetime.fromisoformat(m.group(1).upper() + offset)
    except ValueError:
        return None


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def _config_locked(path: str) -> Iterator[None]:
    """Holds an exclusive lock on ``<config>.lock`` (POSIX only; elsewhere nothing)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _write_config(path: str, doc: Mapping[str, Any]) -> None:
    """Replaces the config atomically: a reader sees the old login or the new one, never half of
    one, and a crash cannot leave a rotated (used-up) refresh token as the only one on disk."""
    # mkstemp creates the file with mode 0600, so the secrets are never readable by others.
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _graphql_refused(data: bytes) -> bool:
    """Whether a GraphQL answer refuses the caller itself (every error UNAUTHENTICATED): the
    server answers that with HTTP 200, so the transport cannot tell by the status."""
    if b"UNAUTHENTICATED" not in data:
        return False
    try:
        errors = json.loads(data.decode("utf-8")).get("errors")
        return bool(errors) and all(e["extensions"]["code"] == "UNAUTHENTICATED" for e in errors)
    except (ValueError, AttributeError, KeyError, TypeError):
        return False


class _StoredLogin:
    """The CLI's device-flow login: an access token for an hour, renewed with a refresh token.

    Refresh tokens rotate (each works once), and the server revokes the whole login when a used
    one is presented again. So a renewal must never race another one with the same refresh
    token: threads take a lock, processes (parallel jobs, the CLI itself) a lock file, and
    whoever comes second adopts what the first one wrote to the config instead of refreshing.
    """

    def __init__(self, path: str, stored: Mapping[str, str], url: str, timeout: float) -> None:
        self.path = path
        self.config_url = stored.get("url")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.refresh_token = stored["refresh_token"]
        self.expires_at = _parse_time(stored.get("expires_at"))
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the access token expires within the margin (never, without ``expires_at``:
        then only a refusal renews it)."""
        return self.expires_at is not None and self.expires_at - datetime.now(timezone.utc) <= _RENEW_MARGIN

    def renew(self, t: _Transport, refused: Optional[str]) -> None:
        """Renews ``t.token`` if it is due, or if it is still ``refused`` (the token a request was
        refused with). Raises UNAUTHENTICATED when the login can no longer be renewed."""
        with self._lock:
            if refused is not None and t.token != refused:
                return  # another thread renewed it meanwhile
            if refused is None and not self.due():
                return
            with _config_locked(self.path):
                doc = _read_config(self.path)
                # A config for another server (a new `custody login`) is not this login's to
                # adopt or overwrite.
                ours = bool(doc) and doc.get("url") == self.config_url
                theirs = doc.get("refresh_token")
                renewed = isinstance(theirs, str) and theirs != self.refresh_token and isinstance(doc.get("token"), str)
                if ours and renewed:
                    # Another process renewed first: our refresh token is used up, its successor is here.
                    self._adopt(t, doc["token"], theirs, _parse_time(doc.get("expires_at")))
                    if t.token != refused and not self.due():
                        return
                token, refresh_token, expires_at = self._refresh()
                self._adopt(t, token, refresh_token, expires_at)
                if ours:
                    doc.update(token=token, refresh_token=refresh_token)
                    if expires_at is not None:
                        doc["expires_at"] = _rfc3339(expires_at)
                    else:
                        doc.pop("expires_at", None)
                    _write_config(self.path, doc)

    def _adopt(self, t: _Transport, token: str, refresh_token: str, expires_at: Optional[datetime]) -> None:
        t.token = token.strip()
        self.refresh_token = refresh_token
        self.expires_at = expires_at

    def _refresh(self) -> Tuple[str, str, Optional[datetime]]:
        """``POST /api/device/token`` with ``grant_type=refresh_token``: a new access token, the
        refresh token's successor and the new expiry."""
        now = datetime.now(timezone.utc)
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": self.refresh_token}).encode()
        # No bearer token on this request: the refresh token is the credential.
        t = _Transport(self.url, None, self.timeout)
        try:
            status, _, data = t.request(
                "POST", "/api/device/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
            )
        finally:
            t.close()
        try:
            doc = json.loads(data.decode("utf-8"))
        except ValueError:
            doc = None
        if status == 400 and isinstance(doc, dict) and doc.get("error") == "invalid_grant":
            why = doc.get("error_description") or "the refresh token is no longer valid"
            raise CustodyError(
                f"the stored login in {self.path} has expired or was revoked ({why}): "
                f"run `custody login --url {self.url}` again",
                "UNAUTHENTICATED",
                status=status,
            )
        if status != 200:
            raise _http_error(status, data, "renewing the stored login")
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise CustodyError("the token endpoint answered no access_token", "INVALID_RESPONSE", status=status)
        refresh_token = doc.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            refresh_token = self.refresh_token  # not rotated this time: the old one stays valid
        expires_in = doc.get("expires_in")
        expires_at = now + timedelta(seconds=expires_in) if isinstance(expires_in, (int, float)) else None
        return doc["access_token"], refresh_token, expires_at


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)

