"""Runs: the context manager, the background metric sender, datasets, artifacts and models."""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import json
import logging
import operator
import os
import queue
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type, Union

from ._client import Client, sha256_file
from ._errors import RETRYABLE_CODES, CustodyError
from ._git import GitInfo, capture_git
from ._hashing import hash_path, list_files
from ._types import Artifact, DatasetVersion, ModelVersion, RunInfo

__all__ = ["DatasetSpec", "Run", "register_dataset", "start_run"]

log = logging.getLogger("custody")

PathLike = Union[str, "os.PathLike[str]"]

MAX_BATCH = 1000  # the server's limit per logMetrics call

_LOG_METRICS = "mutation($r: ID!, $m: [MetricInput!]!) { logMetrics(runId: $r, metrics: $m) }"

# ---------------------------------------------------------------------------------------------
# the background metric sender


class _MetricSender:
    """Drains a run's metric queue in a daemon thread: batches of up to ``batch_size`` per
    ``logMetrics`` call, sent when a batch is full, every ``interval`` seconds, and on flush/stop.
    The drainer encodes batches and hands them to ``connections`` poster threads, each with its
    own keep-alive connection, so encoding overlaps the network and the server commits batches
    in parallel.

    Transient failures (server unreachable, ``INTERNAL``) are retried with backoff; a batch that
    still fails, or that the server refuses, is counted as lost and its error kept for
    :meth:`Run.flush` / :meth:`Run.finish` to raise. A retried batch whose first attempt did reach
    the server may be stored twice (at-least-once on network failures).
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        batch_size: int,
        interval: float,
        max_queue: int,
        retries: int,
        connections: int = 2,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.client = client
        self.run_id = run_id
        self.batch_size = batch_size
        self.interval = interval
        self.max_queue = max(max_queue, batch_size)
        self.retries = retries
        self.buf: Deque[Tuple[str, float, Optional[int], float]] = collections.deque()
        self.wake = threading.Event()
        self.cond = threading.Condition()
        self.flush_requested = 0
        self.flushed = 0
        self.stopping = False
        self.blocked = 0
        self.sent = 0
        self.lost = 0
        self.errors: List[CustodyError] = []
        self.unreachable = False
        self._key_json: Dict[str, str] = {}
        self._ts_second = -1
        self._ts_prefix = ""
        head = '{"query":%s,"variables":{"r":%s,"m":[' % (_json_str(_LOG_METRICS), _json_str(run_id))
        self._head = head.encode()
        self.outbox: "queue.Queue[Optional[Tuple[bytes, int]]]" = queue.Queue(maxsize=connections)
        self.posters = [
            threading.Thread(target=self._post_loop, name=f"custody-post-{run_id[:8]}-{i}", daemon=True)
            for i in range(connections)
        ]
        for poster in self.posters:
            poster.start()
        self.thread = threading.Thread(target=self._loop, name=f"custody-metrics-{run_id[:8]}", daemon=True)
        self.thread.start()

    # -- called from logging threads

    def full(self) -> None:
        """The queue holds at least a batch: wake the sender; block while the queue is over
        ``max_queue`` (back-pressure when the server cannot keep up)."""
        if not self.wake.is_set():
            self.wake.set()
        if len(self.buf) >= self.max_queue:
            with self.cond:
                self.blocked += 1
                try:
                    self.cond.wait_for(lambda: len(self.buf) < self.max_queue or not self.thread.is_alive())
                finally:
                    self.blocked -= 1

    def flush(self, timeout: Optional[float]) -> bool:
        """Waits until everything queued before the call was sent (or given up); False on
        timeout."""
        with self.cond:
            self.flush_requested += 1
            wanted = self.flush_requested
        self.wake.set()
        with self.cond:
            return self.cond.wait_for(lambda: self.flushed >= wanted or not self.thread.is_alive(), timeout)

    def stop(self, timeout: Optional[float]) -> bool:
        """Sends what is queued, then ends the thread; False if it did not end in time."""
        with self.cond:
            self.stopping = True
            self.flush_requested += 1
        self.wake.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def take_errors(self) -> Tuple[int, List[CustodyError]]:
        with self.cond:
            lost, errors = self.lost, self.errors
            self.lost, self.errors = 0, []
        return lost, errors

    # -- the sender thread

    def _loop(self) -> None:
        try:
            while True:
                self.wake.wait(self.interval)
                self.wake.clear()
                with self.cond:
                    wanted = self.flush_requested
                    stopping = self.stopping
                self._drain()
                with self.cond:
                    self.flushed = wanted
                    self.cond.notify_all()
                if stopping:
                    return
        except BaseException as e:  # never die silently: count what is left as lost
            with self.cond:
                self.lost += len(self.buf)
                self.buf.clear()
                self.errors.append(CustodyError(f"the metric sender stopped: {e!r}", "INTERNAL"))
                self.cond.notify_all()
            log.exception("custody: the metric sender of run %s stopped", self.run_id)
        finally:
            for _ in self.posters:
                self.outbox.put(None)
            for poster in self.posters:
                poster.join()

    def _drain(self) -> None:
        """Encodes every queued metric into batches for the posters; returns when all were
        posted (or given up)."""
        buf = self.buf
        popleft = buf.popleft
        size = self.batch_size
        while buf:
            n = min(len(buf), size)
            batch = [popleft() for _ in range(n)]
            self.outbox.put((self._encode(batch), n))
        self.outbox.join()

    def _post_loop(self) -> None:
        try:
            while True:
                item = self.outbox.get()
                try:
                    if item is None:
                        return
                    self._send(*item)
                    if self.blocked:
                        with self.cond:
                            self.cond.notify_all()
                except BaseException as e:  # pragma: no cover - keep the poster alive
                    with self.cond:
                        self.lost += item[1] if item else 0
                        self.errors.append(CustodyError(f"posting metrics failed: {e!r}", "INTERNAL"))
                finally:
                    self.outbox.task_done()
        finally:
            try:
                self.client.close()  # this thread's connection
            except Exception:  # pragma: no cover
                pass

    def _timestamp(self, ts: float) -> str:
        second = int(ts)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%06dZ" % (self._ts_prefix, int((ts - second) * 1e6))

    def _encode(self, batch: List[Tuple[str, float, Optional[int], float]]) -> bytes:
        key_json = self._key_json
        ts = self._timestamp
        parts = []
        for key, value, step, at in batch:
            k = key_json.get(key)
            if k is None:
                k = key_json[key] = _json_str(key)
            if step is None:
                parts.append('{"key":%s,"value":%r,"timestamp":"%s"}' % (k, value, ts(at)))
            else:
                parts.append('{"key":%s,"value":%r,"step":%d,"timestamp":"%s"}' % (k, value, step, ts(at)))
        return self._head + ",".join(parts).encode() + b"]}}"

    def _send(self, body: bytes, n: int) -> None:
        delay = 0.25
        attempts = 1 if self.unreachable else self.retries + 1
        for attempt in range(attempts):
            try:
                self.client._post_graphql(body)
                with self.cond:
                    self.sent += n
                self.unreachable = False
                return
            except CustodyError as e:
                error = e
                if e.code not in RETRYABLE_CODES or attempt + 1 >= attempts:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
        if error.code == "UNAVAILABLE":
            self.unreachable = True
        with self.cond:
            self.lost += n
            self.errors.append(error)
        log.warning("custody: %d metrics of run %s were not stored: %s", n, self.run_id, error)


def _json_str(s: str) -> str:
    return json.dumps(s)


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass
class DatasetSpec:
    """A dataset to register and record as an input of a run (``start_run(datasets=[...])``).

    ``path_or_uri``: a local file or directory (hashed here), a ``file://`` URI, or a remote URI
    (``s3://…``, ``https://…``) whose ``sha256`` you must give. ``name`` defaults to the file or
    directory name without its extensions.
    """

    path_or_uri: Union[str, "os.PathLike[str]"]
    name: Optional[str] = None
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    tags: Optional[Sequence[str]] = None
    description: Optional[str] = None


DatasetLike = Union[str, "os.PathLike[str]", DatasetSpec, Mapping[str, Any]]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def _dataset_location(path_or_uri: Union[str, "os.PathLike[str]"]) -> Tuple[str, Optional[str]]:
    """(uri, local path or None)."""
    text = os.fspath(path_or_uri)
    m = _SCHEME.match(text)
    if m and m.group(1).lower() == "file":
        local = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
        return text, os.path.abspath(local)
    if m:
        return text, None
    local = os.path.abspath(text)
    if not os.path.exists(local):
        raise FileNotFoundError(f"no dataset file or directory at {local}")
    uri = "file://" + urllib.request.pathname2url(local)
    return uri, local


def _dataset_name(location: str) -> str:
    base = os.path.basename(location.rstrip("/\\")) or "dataset"
    stem = base.split(".")[0] or base
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:128]
    return name or "dataset"


def register_dataset(
    project: str,
    path_or_uri: DatasetLike,
    name: Optional[str] = None,
    *,
    sha256: Optional[str] = None,
    size_bytes: Optional[int] = None,
    tags: Optional[Sequence[str]] = None,
    description: Optional[str] = None,
    client: Optional[Client] = None,
) -> DatasetVersion:
    """Registers a dataset version for local data (hashed with SHA-256; a directory gets the
    deterministic digest of :func:`custody.hash_path`) or a remote URI with a known ``sha256``.

    The dataset is created when missing. When the dataset already has a version with the same
    digest (and the same tags, when ``tags`` are given) that version is answered instead of
    registering a duplicate, so running a script twice on the same data gives one version.
    """
    if isinstance(path_or_uri, DatasetSpec):
        spec = path_or_uri
    elif isinstance(path_or_uri, Mapping):
        spec = DatasetSpec(**path_or_uri)
    else:
        spec = DatasetSpec(path_or_uri)
    name = name or spec.name
    sha256 = (sha256 or spec.sha256 or "").lower() or None
    size_bytes = size_bytes if size_bytes is not None else spec.size_bytes
    tags = tags if tags is not None else spec.tags
    description = description or spec.description
    client = client or _default_client()

    uri, local = _dataset_location(spec.path_or_uri)
    if local is not None:
        digest, size = hash_path(local)
        if sha256 and sha256 != digest:
            raise ValueError(f"{local} has SHA-256 {digest}, not the {sha256} given")
        sha256 = digest
        if size_bytes is None:
            size_bytes = size
    elif not sha256:
        raise ValueError(f"cannot hash the remote dataset {uri}: pass its sha256=")
    name = name or _dataset_name(local or urllib.parse.urlsplit(uri).path or uri)

    dataset = client.dataset(project, name)
    if dataset is None:
        try:
            dataset = client.create_dataset(project, name, description)
        except CustodyError as e:  # created concurrently
            if e.code != "CONFLICT":
                raise
            dataset = client.dataset(project, name)
            if dataset is None:
                raise
    wanted_tags = sorted(set(tags)) if tags is not None else None
    for version in reversed(dataset["versions"]):
        if version["sha256"] == sha256 and (wanted_tags is None or sorted(version["tags"]) == wanted_tags):
            return version
    return client.register_dataset_version(project, name, uri, sha256, size_bytes=size_bytes, tags=tags)


# ---------------------------------------------------------------------------------------------
# runs


def _join(*parts: Optional[str]) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Run:
    """A running run: log params, metrics, artifacts, datasets and models to it.

    Made by :func:`custody.start_run`; use it as a context manager so that it ends as FINISHED
    when the block completes and FAILED when the block raises (KILLED on ``KeyboardInterrupt``).
    Runs still open when the interpreter exits are finished by an ``atexit`` hook (FAILED if an
    uncaught exception ends the program). Metrics are sent in the background; everything logged
    is flushed before the run ends.
    """

    def __init__(
        self,
        client: Client,
        info: RunInfo,
        *,
        git: Optional[GitInfo] = None,
        inputs: Sequence[str] = (),
        batch_size: int = MAX_BATCH,
        flush_interval: float = 1.0,
        max_queue: int = 1_000_000,
        retries: int = 5,
        connections: int = 2,
    ) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]
        self.name: Optional[str] = info.get("name")
        self.project: str = info["project"]["name"]
        self.code_commit = info.get("codeCommit")
        self.git = git
        self.status: str = info.get("status", "RUNNING")
        self._inputs: Set[str] = set(inputs)
        self._uploaded: Dict[str, Artifact] = {}
        self._known_keys: Set[str] = set()
        self._closed = False
        self._ended = False
        self._end_lock = threading.Lock()
        self._sender = _MetricSender(
            client,
            self.id,
            batch_size=batch_size,
            interval=flush_interval,
            max_queue=max_queue,
            retries=retries,
            connections=connections,
        )
        self._buf = self._sender.buf
        self._batch_size = batch_size
        _register_active(self)

    def __repr__(self) -> str:
        return f"<custody.Run {self.id} project={self.project!r} name={self.name!r} status={self.status}>"

    # -- params and metrics

    def log_param(self, key: str, value: Any) -> None:
        """Sets one param (see :meth:`log_params`)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Sets params, synchronously. Params are immutable: the same value again is a no-op,
        another value raises ``CONFLICT``. Values that are not strings are stored as JSON
        (``0.1``, ``true``, ``null``, ``[1, 2]``)."""
        self._check_open()
        self.client.log_params(self.id, params)

    def log_metric(
        self,
        key: str,
        value: float,
        step: Optional[int] = None,
        timestamp: Union[None, float, _dt.datetime] = None,
    ) -> None:
        """Queues one metric value; never waits on the network (a background thread sends
        batches of up to 1,000). ``step`` defaults to 0 on the server; ``timestamp`` (epoch
        seconds or an aware datetime) to the time of this call. Raises ``ValueError`` for values
        that are not finite (the server refuses them)."""
        if self._closed:
            self._check_open()
        if key not in self._known_keys:
            self._check_key(key)
        value = float(value)
        if value - value != 0.0:  # inf - inf and nan - nan are nan: cheaper than math.isfinite
            raise ValueError(f"metric {key!r}: {value} is not finite; the server stores finite values only")
        if step is not None:
            step = operator.index(step)
        self._buf.append((key, value, step, _now() if timestamp is None else _epoch(timestamp)))
        if len(self._buf) >= self._batch_size:
            self._sender.full()

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        """Queues several metrics with the same step."""
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"metric keys are non-empty strings, not {key!r}")
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"metric key {key!r} is not valid UTF-8 text") from None
        if size > 250 or any(_is_control(c) for c in key):
            raise ValueError(f"metric key {key[:40]!r} must be at most 250 bytes without control characters")
        self._known_keys.add(key)

    def _check_open(self) -> None:
        if self._closed:
            raise CustodyError(f"run {self.id} has ended ({self.status}); start a new run", "CONFLICT")

    def flush(self, timeout: Optional[float] = None) -> None:
        """Blocks until every metric queued so far is stored. Raises :class:`CustodyError`
        (``METRICS_LOST``) if some could not be stored since the last check."""
        if not self._sender.flush(timeout):
            raise CustodyError(f"metrics of run {self.id} were not sent within {timeout} s", "UNAVAILABLE")
        self._raise_lost()

    def _raise_lost(self) -> None:
        lost, errors = self._sender.take_errors()
        if lost:
            first = errors[0] if errors else None
            raise CustodyError(
                f"{lost} metrics of run {self.id} could not be stored: {first}",
                "METRICS_LOST",
                errors=[{"message": str(e), "extensions": {"code": e.code}} for e in errors],
            )

    @property
    def pending_metrics(self) -> int:
        """Metrics queued and not sent yet."""
        return len(self._buf)

    # -- artifacts

    def log_artifact(self, local_path: PathLike, artifact_path: Optional[str] = None) -> List[Artifact]:
        """Uploads a file, or a directory recursively, to the run's artifacts.

        Like MLflow's ``log_artifact``: a file lands at ``<artifact_path>/<file name>``, a
        directory's files at ``<artifact_path>/<directory name>/<relative path>``
        (``artifact_path`` None: at the root). Each file streams with its locally computed
        SHA-256 in ``X-Custody-Sha256``. A file this run already uploaded with the same bytes is
        not sent again. Answers the stored ``{path, sha256, size}``.
        """
        src = os.path.abspath(os.fspath(local_path))
        name = os.path.basename(src.rstrip(os.sep))
        if os.path.isdir(src):
            files = [(_join(artifact_path, name, rel), full) for rel, full in list_files(src)]
        elif os.path.isfile(src):
            files = [(_join(artifact_path, name), src)]
        else:
            raise FileNotFoundError(f"no file or directory at {src}")
        stored: List[Artifact] = []
        for dest, full in files:
            digest, _ = sha256_file(full)
            known = self._uploaded.get(dest)
            if known is not None and known["sha256"] == digest:
                stored.append(known)
                continue
            artifact = self.client.upload_artifact("run", self.id, dest, full, sha256=digest)
            self._uploaded[dest] = artifact
            stored.append(artifact)
        return stored

    def download_artifact(self, artifact_path: str, dest: PathLike) -> Artifact:
        """Downloads one of the run's files to ``dest`` (checked against its SHA-256)."""
        return self.client.download_artifact("run", self.id, artifact_path, dest)

    # -- datasets

    def use_dataset(
        self,
        path_or_uri: DatasetLike,
        name: Optional[str] = None,
        *,
        sha256: Optional[str] = None,
        size_bytes: Optional[int] = None,
        tags: Optional[Sequence[str]] = None,
        description: Optional[str] = None,
        project: Optional[str] = None,
    ) -> DatasetVersion:
        """Records a dataset as an input of this run: hashes local data (see
        :func:`register_dataset`), registers a dataset version in the run's project (or
        ``project``), or reuses the version with the same digest, and links the run to it with a
        ``consumed`` lineage edge (``linkLineage``), so it appears in ``Run.inputs`` exactly like
        datasets given to ``start_run(datasets=...)``.
        """
        version = register_dataset(
            project or self.project,
            path_or_uri,
            name,
            sha256=sha256,
            size_bytes=size_bytes,
            tags=tags,
            description=description,
            client=self.client,
        )
        if version["id"] not in self._inputs:
            try:
                self.client.link_lineage(("RUN", self.id), ("DATASET_VERSION", version["id"]), "consumed")
            except CustodyError as e:
                if not (e.code == "CONFLICT" and "already exists" in e.message):
                    raise
            self._inputs.add(version["id"])
        return version

    # -- models

    def register_model(
        self,
        name: str,
        path: PathLike,
        *,
        artifact_path: str = "model",
        description: Optional[str] = None,
        primary_metric: Optional[str] = None,
        higher_is_better: Optional[bool] = None,
    ) -> ModelVersion:
        """Registers a new version of model ``name`` (created when missing) from this run.

        ``path`` is a local file or directory: it is uploaded to ``<artifact_path>/<its name>``
        (``model/<name>`` by default) unless this run already holds those bytes, and that path
        becomes the version's ``artifactPath`` (a file gives the version one file named like it, a
        directory gives its files relative to it). If ``path`` does not exist locally it is taken
        as a path among the run's existing artifacts. Queued metrics are flushed first, so the
        version's run has them all. ``primary_metric``/``higher_is_better`` apply only when the
        model is created here.
        """
        local = os.fspath(path)
        if os.path.exists(local):
            self.log_artifact(local, artifact_path)
            registered = _join(artifact_path, os.path.basename(os.path.abspath(local).rstrip(os.sep)))
        else:
            registered = local.strip("/")
        if not self._closed:
            self.flush()
        if self.client.model(self.project, name) is None:
            try:
                self.client.create_model(
                    self.project, name, description=None, primary_metric=primary_metric, higher_is_better=higher_is_better
                )
            except CustodyError as e:
                if e.code != "CONFLICT":
                    raise
        return self.client.register_model_version(self.project, name, self.id, registered, description)

    # -- ending

    def finish(self, status: str = "FINISHED", *, timeout: Optional[float] = None) -> None:
        """Sends every queued metric, then ends the run as ``status`` (FINISHED, FAILED or
        KILLED). Raises ``METRICS_LOST`` after ending the run if some metrics could not be
        stored. Calling it again does nothing."""
        self._end(status.upper(), timeout=timeout, raise_lost=True)

    def _end(self, status: str, *, timeout: Optional[float], raise_lost: bool) -> None:
        with self._end_lock:
            if self._ended:
                return
            self._closed = True
            if not self._sender.stop(timeout):
                log.warning("custody: metrics of run %s still unsent after %s s", self.id, timeout)
            info = self.client.finish_run(self.id, status)
            self.status = info["status"]
            self.info = info
            self._ended = True
            _unregister_active(self)
        if raise_lost:
            self._raise_lost()
        else:
            lost, errors = self._sender.take_errors()
            if lost:
                log.error("custody: %d metrics of run %s could not be stored: %s", lost, self.id, errors[0])

    def __enter__(self) -> "Run":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        status = _status_for(exc_type, exc)
        if exc_type is None:
            self._end(status, timeout=None, raise_lost=True)
        else:
            try:
                self._end(status, timeout=None, raise_lost=False)
            except Exception as e:  # keep the block's own exception
                log.error("custody: could not end run %s as %s: %s", self.id, status, e)
        return False


def _status_for(exc_type: Optional[Type[BaseException]], exc: Optional[BaseException]) -> str:
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (None, 0):
        return "FINISHED"
    return "FAILED"


_now = time.time


def _is_control(c: str) -> bool:
    """Unicode category Cc except tab, newline and carriage return (the server's rule)."""
    o = ord(c)
    return (o < 32 and c not in "\t\n\r") or 127 <= o <= 159


def _epoch(ts: Union[float, _dt.datetime]) -> float:
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is None:
            raise ValueError("metric timestamps must be timezone-aware datetimes (or epoch seconds)")
        return ts.timestamp()
    return float(ts)


# ---------------------------------------------------------------------------------------------
# open runs at exit


_ACTIVE: Set[Run] = set()
_ACTIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False
_UNCAUGHT: List[Type[BaseException]] = []


def _register_active(run: Run) -> None:
    _install_exit_hooks()
    with _ACTIVE_LOCK:
        _ACTIVE.add(run)


def _unregister_active(run: Run) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(run)


def _install_exit_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    previous = sys.excepthook

    def hook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        _UNCAUGHT.append(exc_type)
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    atexit.register(_finish_active_runs)


def _finish_active_runs() -> None:
    """At interpreter exit: flush and end the runs nobody ended (FAILED after an uncaught
    exception, KILLED after an uncaught KeyboardInterrupt, else FINISHED)."""
    with _ACTIVE_LOCK:
        runs = list(_ACTIVE)
    if _UNCAUGHT:
        status = "KILLED" if issubclass(_UNCAUGHT[-1], KeyboardInterrupt) else "FAILED"
    else:
        status = "FINISHED"
    for run in runs:
        try:
            run._end(status, timeout=None, raise_lost=False)
        except Exception as e:
            log.error("custody: could not end run %s at exit: %s", run.id, e)
            try:
                sys.stderr.write(f"custody: could not end run {run.id} at exit: {e}\n")
            except Exception:  # pragma: no cover
                pass


# ---------------------------------------------------------------------------------------------
# the module-level entry points

_DEFAULT: Optional[Client] = None
_DEFAULT_LOCK = threading.Lock()


def init(url: Optional[str] = None, token: Optional[str] = None, *, timeout: float = 60.0) -> Client:
    """Sets the default client used by :func:`start_run` and :func:`register_dataset`.

    ``url`` defaults to ``CUSTODY_URL``, ``token`` to ``CUSTODY_TOKEN``, then to the login stored
    by the CLI's ``custody login`` (see :class:`Client`); the URL finally to
    ``http://127.0.0.1:8080``. Answers the client (which also serves the typed API calls).
    """
    global _DEFAULT
    client = Client(url, token, timeout=timeout)
    with _DEFAULT_LOCK:
        _DEFAULT = client
    return client


def _default_client() -> Client:
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Client()
        return _DEFAULT


def get_client() -> Client:
    """The default client (made from the environment on first use unless :func:`init` ran)."""
    return _default_client()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_path() -> str:
    """The file of the first frame outside this package (the code that started the run), or
    the current directory for interactive code."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or filename.startswith("<") or not os.path.exists(filename):
        return os.getcwd()
    return os.path.abspath(filename)


def start_run(
    project: str,
    name: Optional[str] = None,
    *,
    inputs: Optional[Sequence[str]] = None,
    tags: Optional[Mapping[str, str]] = None,
    datasets: Optional[Sequence[DatasetLike]] = None,
    client: Optional[Client] = None,
    git: Union[bool, PathLike] = True,
    batch_size: int = MAX_BATCH,
    flush_interval: float = 1.0,
    max_queue: int = 1_000_000,
    connections: int = 2,
) -> Run:
    """Starts a run in ``project`` and answers it; use it as ``with custody.start_run(...) as run:``.

    - The git commit of the calling code is captured: the working tree holding the file that
      called ``start_run`` (the current directory for interactive code; ``git=PATH`` to choose,
      ``git=False`` to skip) gives its repository (``origin`` URL without credentials, else the
      tree's path), ``HEAD`` commit, branch and dirty flag (``git status --porcelain`` not empty).
      It is registered with ``registerCodeCommit`` and passed as ``codeCommitId``. No git, no
      repository, or no commit: the run simply has no commit. The dirty flag is also set as the
      run tag ``custody.git.dirty`` (the server keeps the first registration of a commit, so the
      tag is the flag of this very run).
    - ``datasets``: local files/directories or :class:`DatasetSpec` s registered (hashed) before
      the run starts and passed as its ``inputs``, with ``inputs`` (dataset version ids). For data
      picked during the run, use :meth:`Run.use_dataset`.
    - ``tags``: an object of strings (at most 100).
    - Metrics go through a background sender: ``batch_size`` (≤ 1,000) per call, at least every
      ``flush_interval`` seconds, with back-pressure beyond ``max_queue`` queued metrics, over
      ``connections`` parallel keep-alive connections.
    """
    client = client or _default_client()
    info: Optional[GitInfo] = None
    commit_id: Optional[str] = None
    if git is not False:
        where = _caller_path() if git is True else os.fspath(git)  # type: ignore[arg-type]
        info = capture_git(where)
        if info is not None:
            commit = client.register_code_commit(
                info.repository,
                info.commit,
                branch=info.branch,
                dirty=info.dirty,
                author=info.author,
                message=info.message,
            )
            commit_id = commit["id"]
    input_ids: List[str] = list(inputs or [])
    for dataset in datasets or []:
        input_ids.append(register_dataset(project, dataset, client=client)["id"])
    all_tags: Dict[str, str] = {str(k): str(v) for k, v in (tags or {}).items()}
    if info is not None:
        all_tags.setdefault("custody.git.dirty", "true" if info.dirty else "false")
    run_info = client.start_run(
        project,
        name,
        code_commit_id=commit_id,
        inputs=input_ids or None,
        tags=all_tags or None,
    )
    return Run(
        client,
        run_info,
        git=info,
        inputs=input_ids,
        batch_size=batch_size,
        flush_interval=flush_interval,
        max_queue=max_queue,
        connections=connections,
    )

