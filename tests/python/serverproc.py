"""Running the real `custody-server` binary for the pytest suite and the benchmarks.

Standard library only. `CustodyServer.start()` runs `custody-server serve` on a free port with a
fresh data dir under /tmp (mode 0755: as root the private PostgreSQL cluster runs as the
`postgres` user, which must be able to enter it), waits for `GET /healthz`, reads
`<data-dir>/admin.token`; `stop()` sends SIGTERM (the server then stops its private cluster),
escalating to SIGKILL and `pg_ctl stop -m immediate` if it does not end.
"""

from __future__ import annotations

import atexit
import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Settings of the server that the caller's environment must not leak into it.
SCRUBBED_ENV = (
    "DATABASE_URL",
    "CUSTODY_ARTIFACTS",
    "CUSTODY_S3_ENDPOINT",
    "CUSTODY_SMTP_URL",
    "CUSTODY_PUBLIC_URL",
    "CUSTODY_POLICIES",
    "CUSTODY_DATA_DIR",
    "CUSTODY_LISTEN",
    "CUSTODY_JWT_SECRET",
    "CUSTODY_URL",
    "CUSTODY_TOKEN",
)


def find_server_bin(profile: str = "debug") -> str:
    """`CUSTODY_SERVER_BIN`, else `${CARGO_TARGET_DIR:-/var/tmp/custody-target}/<profile>/custody-server`,
    else `target/<profile>/custody-server` in the repository."""
    explicit = os.environ.get("CUSTODY_SERVER_BIN")
    if explicit:
        if not os.path.isfile(explicit):
            raise RuntimeError(f"CUSTODY_SERVER_BIN={explicit} is not a file")
        return explicit
    candidates = [
        os.path.join(os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/custody-target", profile, "custody-server"),
        os.path.join(REPO_ROOT, "target", profile, "custody-server"),
    ]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        "custody-server binary not found (looked at " + ", ".join(candidates) + "); build it with "
        f"`CARGO_TARGET_DIR=/var/tmp/custody-target cargo build{' --release' if profile == 'release' else ''} "
        "-p custody-server` or set CUSTODY_SERVER_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tmp_dir(prefix: str) -> str:
    """A fresh directory under /tmp that the `postgres` user can enter (mode 0755)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


def pg_bin_dir() -> Optional[str]:
    """The directory of `pg_ctl`/`initdb`: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(on_path))
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
    )
    return os.path.dirname(found[-1]) if found else None


def as_postgres(argv: List[str]) -> List[str]:
    """`argv` run as the `postgres` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


_LIVE: List["CustodyServer"] = []


def _stop_all() -> None:
    for s in list(_LIVE):
        s.stop()


atexit.register(_stop_all)


class CustodyServer:
    """One `custody-server serve` process."""

    def __init__(self, binary: str, work_dir: str, port: int, proc: subprocess.Popen, log_path: str, owns_work: bool):
        self.binary = binary
        self.work_dir = work_dir
        self.data_dir = os.path.join(work_dir, "data")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log_path = log_path
        self.admin_token = ""
        self._owns_work = owns_work
        # False for a second replica on another server's data directory: that server owns the
        # private cluster and stops it.
        self._stop_cluster = True

    @classmethod
    def start(
        cls,
        binary: Optional[str] = None,
        *,
        database_url: Optional[str] = None,
        extra_env: Optional[Dict[str, str]] = None,
        extra_args: Optional[List[str]] = None,
        timeout: float = 90.0,
        work_dir: Optional[str] = None,
        stop_cluster: bool = True,
    ) -> "CustodyServer":
        """Starts a server (embedded PostgreSQL unless `database_url`) and waits until it serves."""
        binary = binary or find_server_bin()
        owns = work_dir is None
        work = work_dir or make_tmp_dir("custody-py-srv-")
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir, exist_ok=True)
        os.chmod(data_dir, 0o755)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.setdefault("RUST_LOG", "warn,custody_server=info")
        if database_url:
            env["DATABASE_URL"] = database_url
        env.update(extra_env or {})
        last_error = ""
        for attempt in range(3):
            port = free_port()
            log_path = os.path.join(work, f"server-{port}.log")
            log = open(log_path, "ab")
            argv = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, *(extra_args or [])]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            server = cls(binary, work, port, proc, log_path, owns)
            server._stop_cluster = stop_cluster
            _LIVE.append(server)
            try:
                server._wait_healthy(timeout)
            except RuntimeError as e:
                last_error = str(e)
                server.stop(remove=False)
                if "address is already in use" in server.log_tail() and attempt < 2:
                    continue
                if owns:
                    shutil.rmtree(work, ignore_errors=True)
                raise
            with open(os.path.join(data_dir, "admin.token")) as f:
                server.admin_token = f.read().strip()
            return server
        raise RuntimeError(last_error)

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"custody-server exited with {code} before serving; its log:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise RuntimeError(f"custody-server did not answer /healthz within {timeout:.0f} s; its log:\n{self.log_tail()}")

    def stop(self, remove: bool = True) -> None:
        """SIGTERM, wait up to 30 s; then SIGKILL and stop the private cluster directly."""
        if self in _LIVE:
            _LIVE.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._stop_cluster:
            self._stop_private_cluster()
        if remove and self._owns_work:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _stop_private_cluster(self) -> None:
        pgdata = os.path.join(self.data_dir, "pg", "data")
        if not os.path.exists(os.path.join(pgdata, "postmaster.pid")):
            return
        bindir = pg_bin_dir()
        if bindir is None:
            return
        subprocess.run(
            as_postgres([os.path.join(bindir, "pg_ctl"), "stop", "-D", pgdata, "-m", "immediate", "-w"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
