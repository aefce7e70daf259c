#!/usr/bin/env python3
"""Python-SDK overhead per `Run.log_metric` call in a tight loop (target: < 5 µs per call).

Not run by CI. Run it from the repository root:

    CARGO_TARGET_DIR=/var/tmp/custody-target cargo build --release -p custody-server
    python3 tests/bench/bench_sdk_overhead.py [--calls 1000000] [--repeat 3]

It starts the release `custody-server` with its embedded defaults (or uses `CUSTODY_URL` +
`CUSTODY_TOKEN` when both are set; `CUSTODY_SERVER_BIN` picks another binary), imports the SDK from
`sdk/python` (or the installed `custody`), and for each repetition starts a run, calls
`run.log_metric(key, value, step=i)` `--calls` times over 10 keys, and reports the wall time per
call of the loop while the background thread really sends batches of 1,000 to the server (the
loop's share of the GIL included), the same loop without the call (the bare Python loop), the
time the final flush took, and the sender's acknowledged count (every metric must be stored).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
sys.path.insert(0, os.path.join(REPO, "sdk", "python"))

import custody  # noqa: E402
from serverproc import CustodyServer, find_server_bin  # noqa: E402

KEYS = [f"metric_{k}" for k in range(10)]


def one_round(client: "custody.Client", project: str, calls: int, max_queue: int) -> dict:
    keys = KEYS
    nkeys = len(keys)
    run = custody.start_run(project, client=client, git=False, max_queue=max_queue)
    log_metric = run.log_metric
    t0 = time.perf_counter()
    for i in range(calls):
        log_metric(keys[i % nkeys], i * 0.001, step=i)
    loop = time.perf_counter() - t0
    queued_at_end = run.pending_metrics
    t1 = time.perf_counter()
    run.finish()  # flushes everything, then finishRun
    flush = time.perf_counter() - t1
    sender = run._sender
    # The bare loop, for reference.
    t2 = time.perf_counter()
    for i in range(calls):
        keys[i % nkeys], i * 0.001, i  # noqa: B018
    bare = time.perf_counter() - t2
    return {
        "us_per_call": loop / calls * 1e6,
        "bare_us": bare / calls * 1e6,
        "loop_s": loop,
        "flush_s": flush,
        "queued_at_end": queued_at_end,
        "sent": sender.sent,
        "lost": sender.lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-queue", type=int, default=1_000_000, help="the Run's back-pressure threshold")
    args = parser.parse_args()

    server = None
    if os.environ.get("CUSTODY_URL") and os.environ.get("CUSTODY_TOKEN"):
        client = custody.Client()
        print(f"server: {client.url} (from CUSTODY_URL)")
    else:
        try:
            binary = find_server_bin("release")
        except RuntimeError:
            binary = find_server_bin("debug")
            print("warning: no release binary; measuring against the debug server", file=sys.stderr)
        server = CustodyServer.start(binary, extra_env={"RUST_LOG": "warn"})
        client = custody.Client(server.url, server.admin_token)
        print(f"server: {binary} on {server.url} (embedded PostgreSQL)")
    try:
        project = f"sdk-overhead-{int(time.time())}"
        client.create_project(project)
        print(f"python {sys.version.split()[0]}, custody SDK from {os.path.dirname(custody.__file__)}")
        print(
            f"{args.calls:,} log_metric calls per round, {len(KEYS)} keys, step=i; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        rounds = []
        for r in range(args.repeat):
            res = one_round(client, project, args.calls, args.max_queue)
            rounds.append(res)
            print(
                f"round {r + 1}: {res['us_per_call']:.2f} µs/call (bare loop {res['bare_us']:.2f} µs), "
                f"loop {res['loop_s']:.2f} s, {res['queued_at_end']:,} still queued at the end, "
                f"final flush {res['flush_s']:.2f} s, sent {res['sent']:,}, lost {res['lost']}"
            )
            if res["sent"] != args.calls or res["lost"]:
                print("ERROR: not every metric was stored", file=sys.stderr)
                return 1
        per_call = [r["us_per_call"] for r in rounds]
        net = [r["us_per_call"] - r["bare_us"] for r in rounds]
        print()
        print(
            f"log_metric: median {statistics.median(per_call):.2f} µs/call "
            f"(min {min(per_call):.2f}, max {max(per_call):.2f}); "
            f"without the bare loop {statistics.median(net):.2f} µs; target < 5 µs: "
            f"{'met' if statistics.median(per_call) < 5 else 'NOT met'}"
        )
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
