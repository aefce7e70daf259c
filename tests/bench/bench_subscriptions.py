#!/usr/bin/env python3
"""Subscription fan-out benchmark: how long a logged metric takes to reach live subscribers.

Not run by CI. Run it from the repository root, with the venv of `.ci/run` (it has `gql`):

    CARGO_TARGET_DIR=/var/tmp/custody-target cargo build --release -p custody-server
    /var/tmp/custody-venv/bin/python tests/bench/bench_subscriptions.py

What it does: starts the release `custody-server` with its embedded defaults; opens `--idle`
WebSocket connections (graphql-transport-ws, through the `gql` client) each subscribed to
`runUpdates` of a run of its own that never logs, and `--active` connections subscribed to one
run; then logs one metric to that run every `--interval` seconds for `--rounds` rounds, the
metric's value being the wall-clock time of the request. Each active subscriber records, per
point, the time from the request to its arrival (and from the commit: the request's answer).
Connections are spread over users (a user holds at most 20). It reports p50/p99/max over all
(subscriber, point) pairs, events lost, and the server's resident memory before and after.
Target (issue 11): 1,000 idle and 100 active subscribers receive a metric within 100 ms p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
sys.path.insert(0, os.path.join(REPO, "sdk", "python"))

import custody  # noqa: E402
from gql import Client, GraphQLRequest  # noqa: E402
from gql.transport.websockets import WebsocketsTransport  # noqa: E402
from serverproc import CustodyServer, find_server_bin  # noqa: E402

RUN_UPDATES = "subscription($id: ID!) { runUpdates(runId: $id) { metrics { key value } } }"
PER_USER = 20


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def main_async(args: argparse.Namespace, server: CustodyServer) -> None:
    admin = custody.Client(server.url, server.admin_token)
    project = f"bench-{uuid.uuid4().hex[:8]}"
    admin.create_project(project)
    total = args.idle + args.active
    users = (total + PER_USER - 1) // PER_USER
    tokens = []
    for i in range(users):
        email = f"sub-{i}@bench.example"
        admin.add_member(project, email, "VIEWER")
        tokens.append(admin.graphql("mutation($e: String!) { issueToken(email: $e) }", {"e": email})["issueToken"])
    active_run = admin.start_run(project, name="active")["id"]
    idle_runs = [admin.start_run(project, name=f"idle-{i}")["id"] for i in range(args.idle)]
    url = server.url.replace("http://", "ws://") + "/graphql"

    committed: Dict[float, float] = {}  # request time -> answer time
    arrivals: List[tuple] = []
    warmed: set = set()

    async def subscriber(index: int, run_id: str, ready: asyncio.Event) -> None:
        transport = WebsocketsTransport(
            url=url,
            init_payload={"Authorization": f"Bearer {tokens[index // PER_USER]}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            connect_timeout=60,
            ack_timeout=60,
        )
        async with Client(transport=transport) as session:
            stream = session.subscribe(GraphQLRequest(RUN_UPDATES, variable_values={"id": run_id}))
            ready.set()
            # Read until cancelled: a timeout around the generator's next item would close it.
            async for item in stream:
                now = time.time()
                for m in item["runUpdates"]["metrics"]:
                    if m["key"] == "sent":
                        arrivals.append((index, m["value"], now))
                    elif m["key"] == "warmup":
                        warmed.add(index)

    readies = [asyncio.Event() for _ in range(total)]
    tasks = []
    for i in range(total):
        run_id = active_run if i >= args.idle else idle_runs[i]
        tasks.append(asyncio.create_task(subscriber(i, run_id, readies[i])))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    # Every active subscription is in place once a warm-up point reaches all of them.
    deadline = time.time() + 120
    while len(warmed) < args.active and time.time() < deadline:
        await asyncio.to_thread(admin.log_metrics, active_run, [{"key": "warmup", "value": 0.0}])
        await asyncio.sleep(0.5)
    print(f"{len(warmed)} of {args.active} active subscribers warmed up")
    await asyncio.sleep(1)
    rss_before = rss_mib(server.proc.pid)
    arrivals.clear()

    for r in range(args.rounds):
        sent = time.time()
        await asyncio.to_thread(admin.log_metrics, active_run, [{"key": "sent", "value": sent, "step": r}])
        committed[sent] = time.time()
        await asyncio.sleep(args.interval)
    await asyncio.sleep(2)
    rss_after = rss_mib(server.proc.pid)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    from_send = [(now - sent) * 1000 for _, sent, now in arrivals]
    from_commit = [(now - committed[sent]) * 1000 for _, sent, now in arrivals if sent in committed]
    expected = args.rounds * args.active
    print(f"subscribers: {args.idle} idle + {args.active} active connections ({users} users); "
          f"{args.rounds} points every {args.interval}s")
    print(f"deliveries: {len(arrivals)} of {expected} expected ({expected - len(arrivals)} lost)")
    if from_send:
        print(f"from request: p50 {statistics.median(from_send):.1f} ms, p99 {percentile(from_send, 99):.1f} ms, "
              f"max {max(from_send):.1f} ms")
        print(f"from commit:  p50 {statistics.median(from_commit):.1f} ms, p99 {percentile(from_commit, 99):.1f} ms, "
              f"max {max(from_commit):.1f} ms")
    print(f"server RSS: {rss_before:.0f} MiB subscribed, {rss_after:.0f} MiB after the rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    # Over a thousand sockets on each side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = CustodyServer.start(find_server_bin("release"), timeout=120)
    try:
        asyncio.run(main_async(args, server))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
