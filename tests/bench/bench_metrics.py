#!/usr/bin/env python3
"""Metric-logging load benchmark: Custody's `logMetrics` against MLflow's `runs/log-batch`.

Not run by CI. Run it from the repository root:

    CARGO_TARGET_DIR=/var/tmp/custody-target cargo build --release -p custody-server
    python3 tests/bench/bench_metrics.py                 # 4 clients × 20 s per system

The first run creates a virtualenv for MLflow (`/var/tmp/custody-mlflow-venv`,
`pip install mlflow psycopg2-binary`; `--mlflow-venv DIR` to choose another).

What it does: starts ONE private PostgreSQL cluster (initdb/pg_ctl from PATH or
/usr/lib/postgresql/*/bin, as the `postgres` user when root, TCP on 127.0.0.1, trust auth) with two
databases; runs the release `custody-server` with `DATABASE_URL` on one and `mlflow server
--backend-store-uri postgresql://...` on the other, one after the other (the idle one is stopped
while the other is measured); and drives both with the same load generator: N client threads,
each with its own keep-alive `http.client` connection and its own run, posting batches of 1,000
metrics (10 keys × 100 steps, increasing steps, the timestamp of the request) for `--duration`
seconds after a `--warmup`. Only the request body and URL differ between the two systems. It
reports requests, metrics/s, p50/p99 request latency and errors, checks the row counts in
PostgreSQL against what the servers acknowledged, and prints the Custody/MLflow ratio (target:
≥ 10×). Everything it started is stopped at the end (also on Ctrl-C).

Options: `--duration 20 --warmup 3 --clients 4 --batch 1000 --only custody|mlflow --json FILE`.
Environment: `CUSTODY_SERVER_BIN` (default: the release binary under
`${CARGO_TARGET_DIR:-/var/tmp/custody-target}`); `CUSTODY_BENCH_URL` + `CUSTODY_BENCH_TOKEN` to
measure an already running Custody instead of starting one (no row-count check then);
`--custody-embedded` runs Custody with its embedded defaults (its own private cluster) instead of
the shared one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))

from serverproc import CustodyServer, as_postgres, find_server_bin, free_port, make_tmp_dir, pg_bin_dir  # noqa: E402

KEYS = [f"metric_{k}" for k in range(10)]


# ------------------------------------------------------------------------------------------------
# the private PostgreSQL cluster


class PrivatePostgres:
    """initdb + pg_ctl in a temp dir; TCP on 127.0.0.1:<port>, trust auth, superuser `bench`."""

    def __init__(self, work: str) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise SystemExit("no PostgreSQL server binaries (install the `postgresql` package)")
        self.bin = bindir
        self.root = os.path.join(work, "pg")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.running = False
        os.makedirs(self.root)
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", self.root], check=True)

    def _run(self, *argv: str) -> None:
        out = subprocess.run(as_postgres(list(argv)), stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {out.stdout}{out.stderr}")

    def start(self) -> None:
        self._run(
            os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "bench", "--auth=trust", "-E", "UTF8", "--no-locale"
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        self._run(
            os.path.join(self.bin, "pg_ctl"), "start", "-w", "-t", "120", "-D", self.data,
            "-l", os.path.join(self.root, "postgres.log"), "-o", opts,
        )
        self.running = True
        for db in ("custody", "mlflow"):
            subprocess.run(
                [os.path.join(self.bin, "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", db],
                check=True,
            )

    def url(self, db: str, scheme: str = "postgres") -> str:
        return f"{scheme}://bench@127.0.0.1:{self.port}/{db}"

    def count(self, db: str, table: str) -> int:
        out = subprocess.run(
            [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", "-d", db, "-Atc",
             f"SELECT count(*) FROM {table}"],
            capture_output=True, text=True, check=True,
        )
        return int(out.stdout.strip())

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._run(os.path.join(self.bin, "pg_ctl"), "stop", "-w", "-m", "fast", "-D", self.data)


# ------------------------------------------------------------------------------------------------
# the load generator (shared by both systems)


@dataclass
class Target:
    """One system under load: where to POST, and how to phrase a batch for it."""

    name: str
    host: str
    port: int
    path: str
    headers: Dict[str, str]
    run_ids: List[str]
    encode: Callable[[str, int, int], bytes]  # (run id, sequence number, batch size) -> body
    check: Callable[[int, bytes, int], None]  # raises on a refused batch


@dataclass
class Result:
    name: str
    requests: int = 0
    metrics: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list)
    first_error: str = ""

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]

    @property
    def rate(self) -> float:
        return self.metrics / self.seconds if self.seconds else 0.0


def batch_items(seq: int, batch: int) -> List[Tuple[str, float, int]]:
    """The metrics of request `seq`: the 10 keys over consecutive steps (never repeated within a
    run, so MLflow's duplicate handling never kicks in)."""
    per_key = max(1, batch // len(KEYS))
    base = seq * per_key
    items = []
    for j in range(per_key):
        step = base + j
        for k, key in enumerate(KEYS):
            items.append((key, step * 0.001 + k + 0.5, step))
            if len(items) == batch:
                return items
    return items


def load(target: Target, clients: int, duration: float, batch: int, seq_start: int) -> Result:
    """`clients` threads, each with its own keep-alive connection and run, posting for `duration` s."""
    result = Result(target.name)
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
        run_id = target.run_ids[i]
        seq = seq_start
        lat: List[float] = []
        ok = err = 0
        first_error = ""
        start_barrier.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                body = target.encode(run_id, seq, batch)
                seq += 1
                t0 = time.perf_counter()
                try:
                    conn.request("POST", target.path, body, target.headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    lat.append(time.perf_counter() - t0)
                    target.check(resp.status, data, batch)
                    ok += 1
                except Exception as e:  # count, keep going
                    err += 1
                    if not first_error:
                        first_error = f"{type(e).__name__}: {e}"[:500]
                    conn.close()
                    conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
        finally:
            conn.close()
            with lock:
                result.requests += ok
                result.metrics += ok * batch
                result.errors += err
                result.latencies.extend(lat)
                result.first_error = result.first_error or first_error

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    start_barrier.wait()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------------
# Custody


def rfc3339_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int((now % 1) * 1e6)


def custody_target(url: str, token: str, project: str, clients: int) -> Target:
    parsed = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def gql(query: str, variables: dict) -> dict:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
        conn.request("POST", "/graphql", json.dumps({"query": query, "variables": variables}), headers)
        doc = json.loads(conn.getresponse().read())
        conn.close()
        if doc.get("errors"):
            raise RuntimeError(doc["errors"])
        return doc["data"]

    gql("mutation($n: String!) { createProject(name: $n) { id } }", {"n": project})
    runs = [
        gql("mutation($p: String!, $n: String) { startRun(project: $p, name: $n) { id } }", {"p": project, "n": f"client-{i}"})[
            "startRun"
        ]["id"]
        for i in range(clients)
    ]
    query = json.dumps("mutation($r: ID!, $m: [MetricInput!]!) { logMetrics(runId: $r, metrics: $m) }")

    def encode(run_id: str, seq: int, batch: int) -> bytes:
        ts = rfc3339_now()
        items = ",".join(
            '{"key":"%s","value":%r,"step":%d,"timestamp":"%s"}' % (k, v, s, ts) for k, v, s in batch_items(seq, batch)
        )
        return ('{"query":%s,"variables":{"r":"%s","m":[%s]}}' % (query, run_id, items)).encode()

    def check(status: int, data: bytes, batch: int) -> None:
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        doc = json.loads(data)
        if doc.get("errors") or doc["data"]["logMetrics"] != batch:
            raise RuntimeError(f"refused: {data[:300]!r}")

    return Target("Custody", parsed.hostname or "127.0.0.1", parsed.port or 80, "/graphql", headers, runs, encode, check)


# ------------------------------------------------------------------------------------------------
# MLflow


def ensure_mlflow(venv: str) -> str:
    mlflow = os.path.join(venv, "bin", "mlflow")
    if os.path.exists(mlflow) and os.path.exists(os.path.join(venv, "bin", "python")):
        ok = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import psycopg2, mlflow"], capture_output=True)
        if ok.returncode == 0:
            return mlflow
    print(f"creating {venv} with mlflow and psycopg2-binary (once)…", flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "mlflow", "psycopg2-binary"], check=True)
    return mlflow


class MlflowServer:
    def __init__(self, mlflow: str, backend: str, work: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, "mlflow.log")
        artifacts = os.path.join(work, "mlartifacts")
        os.makedirs(artifacts, exist_ok=True)
        log = open(self.log_path, "ab")
        # Its own session, so the worker processes it forks stop with it (signal to the group).
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", backend, "--default-artifact-root", f"file://{artifacts}",
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True,
        )
        log.close()

    def wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer /health in {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-40:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Workers that outlived their parent are still in the group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def mlflow_target(url: str, clients: int) -> Target:
    parsed = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json"}

    def post(path: str, doc: dict) -> dict:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        conn.request("POST", path, json.dumps(doc), headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status} {data[:300]!r}")
        return json.loads(data)

    exp = post("/api/2.0/mlflow/experiments/create", {"name": f"bench-{int(time.time())}"})["experiment_id"]
    runs = [
        post("/api/2.0/mlflow/runs/create", {"experiment_id": exp, "start_time": int(time.time() * 1000), "run_name": f"client-{i}"})[
            "run"
        ]["info"]["run_id"]
        for i in range(clients)
    ]

    def encode(run_id: str, seq: int, batch: int) -> bytes:
        ts = int(time.time() * 1000)
        items = ",".join(
            '{"key":"%s","value":%r,"step":%d,"timestamp":%d}' % (k, v, s, ts) for k, v, s in batch_items(seq, batch)
        )
        return ('{"run_id":"%s","metrics":[%s]}' % (run_id, items)).encode()

    def check(status: int, data: bytes, batch: int) -> None:
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")

    return Target("MLflow", "127.0.0.1", parsed.port or 80, "/api/2.0/mlflow/runs/log-batch", headers, runs, encode, check)


# ------------------------------------------------------------------------------------------------


def measure(target: Target, args: argparse.Namespace) -> Tuple[Result, int]:
    """Warm-up, then the measured window; answers the result and how many metrics were
    acknowledged in both."""
    acked = 0
    if args.warmup > 0:
        warm = load(target, args.clients, args.warmup, args.batch, seq_start=0)
        acked += warm.metrics
        print(f"  {target.name}: warm-up {warm.metrics:,} metrics in {warm.seconds:.1f} s", flush=True)
    result = load(target, args.clients, args.duration, args.batch, seq_start=10_000_000)
    acked += result.metrics
    print(
        f"  {target.name}: {result.metrics:,} metrics in {result.seconds:.1f} s = {result.rate:,.0f}/s "
        f"(p50 {result.percentile(50) * 1e3:.1f} ms, p99 {result.percentile(99) * 1e3:.1f} ms, "
        f"{result.errors} errors){' first: ' + result.first_error if result.first_error else ''}",
        flush=True,
    )
    return result, acked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--only", choices=["custody", "mlflow"])
    parser.add_argument("--mlflow-venv", default="/var/tmp/custody-mlflow-venv")
    parser.add_argument("--custody-embedded", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    work = make_tmp_dir("custody-bench-")
    pg: Optional[PrivatePostgres] = None
    custody: Optional[CustodyServer] = None
    mlflow: Optional[MlflowServer] = None
    results: Dict[str, Result] = {}
    checks: Dict[str, str] = {}

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        external = os.environ.get("CUSTODY_BENCH_URL")
        need_pg = (args.only != "custody" or not (external or args.custody_embedded))
        if need_pg:
            pg = PrivatePostgres(work)
            pg.start()
            print(f"PostgreSQL: private cluster on 127.0.0.1:{pg.port} (databases custody, mlflow)", flush=True)

        if args.only in (None, "custody"):
            if external:
                url, token, label = external, os.environ["CUSTODY_BENCH_TOKEN"], f"external {external}"
            else:
                binary = find_server_bin("release")
                os.makedirs(os.path.join(work, "custody"), exist_ok=True)
                os.chmod(os.path.join(work, "custody"), 0o755)
                custody = CustodyServer.start(
                    binary,
                    database_url=None if args.custody_embedded else pg.url("custody"),  # type: ignore[union-attr]
                    work_dir=os.path.join(work, "custody"),
                    extra_env={"RUST_LOG": "warn"},
                )
                url, token = custody.url, custody.admin_token
                label = f"{binary} ({'embedded PostgreSQL' if args.custody_embedded else 'shared PostgreSQL'})"
            print(f"Custody: {label}", flush=True)
            target = custody_target(url, token, f"bench-{int(time.time())}", args.clients)
            results["Custody"], acked = measure(target, args)
            if pg is not None and custody is not None and not args.custody_embedded:
                stored = pg.count("custody", "run_metrics")
                checks["Custody"] = f"{stored:,} rows in run_metrics for {acked:,} acknowledged"
                if stored != acked:
                    checks["Custody"] += "  <-- MISMATCH"
            if custody is not None:
                custody.stop()
                custody = None

        if args.only in (None, "mlflow"):
            assert pg is not None
            mlflow_bin = ensure_mlflow(args.mlflow_venv)
            version = subprocess.run([mlflow_bin, "--version"], capture_output=True, text=True).stdout.strip()
            mlflow = MlflowServer(mlflow_bin, pg.url("mlflow", "postgresql+psycopg2"), work)
            mlflow.wait()
            print(f"MLflow: {version}, `mlflow server` defaults (4 workers), same PostgreSQL", flush=True)
            target = mlflow_target(mlflow.url, args.clients)
            results["MLflow"], acked = measure(target, args)
            stored = pg.count("mlflow", "metrics")
            checks["MLflow"] = f"{stored:,} rows in metrics for {acked:,} acknowledged"
            if stored != acked:
                checks["MLflow"] += "  <-- MISMATCH"
            mlflow.stop()
            mlflow = None
    finally:
        if mlflow is not None:
            mlflow.stop()
        if custody is not None:
            custody.stop()
        if pg is not None:
            try:
                pg.stop()
            except Exception as e:  # pragma: no cover
                print(f"stopping PostgreSQL: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{args.clients} clients × {args.duration:.0f} s, batches of {args.batch}, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine skews the figures)"
    )
    print(f"{'system':<8} {'requests':>9} {'metrics':>12} {'metrics/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:<8} {r.requests:>9,} {r.metrics:>12,} {r.rate:>12,.0f} {r.percentile(50) * 1e3:>8.1f} "
            f"{r.percentile(99) * 1e3:>8.1f} {r.errors:>7}"
        )
    for name, text in checks.items():
        print(f"check {name}: {text}")
    ratio = None
    if "Custody" in results and "MLflow" in results and results["MLflow"].rate > 0:
        ratio = results["Custody"].rate / results["MLflow"].rate
        print(f"ratio Custody/MLflow: {ratio:.1f}× (target ≥ 10×: {'met' if ratio >= 10 else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "clients": args.clients,
                    "duration": args.duration,
                    "batch": args.batch,
                    "results": {
                        n: {
                            "requests": r.requests,
                            "metrics": r.metrics,
                            "metrics_per_s": r.rate,
                            "p50_ms": r.percentile(50) * 1e3,
                            "p99_ms": r.percentile(99) * 1e3,
                            "errors": r.errors,
                        }
                        for n, r in results.items()
                    },
                    "checks": checks,
                    "ratio": ratio,
                },
                f,
                indent=2,
            )
    return 0 if all(r.errors == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
