"""GraphQL subscriptions through a standard graphql-transport-ws client (gql, pinned in .ci/run):
live metric points and status of a run, a project's promotions and audit entries, across
replicas; and the refusals: anonymous, outsiders, removed members, limits, silent connections.

A subscription starts when the server first runs its resolver, which the protocol does not
acknowledge; so each test "pokes" (makes a harmless change that the subscription reports) until
the first event arrives, and only then does what it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import pytest

import custody
from helpers import raw_graphql
from serverproc import CustodyServer

gql_client = pytest.importorskip("gql")
from gql import Client, GraphQLRequest  # noqa: E402
from gql.transport.exceptions import TransportQueryError  # noqa: E402
from gql.transport.websockets import WebsocketsTransport  # noqa: E402

RUN_UPDATES = """subscription($id: ID!) {
  runUpdates(runId: $id) { truncated metrics { key value step } run { id status } } }"""
AUDIT_EVENTS = """subscription($p: String!) {
  auditEvents(project: $p) { seq action subjectKind subjectId actor } }"""
PROMOTION_EVENTS = """subscription($p: String!) {
  promotionEvents(project: $p) { action actor seq promotion { id status stage } } }"""


def ws_url(server: CustodyServer) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


def session_of(server: CustodyServer, token: Optional[str]) -> Client:
    payload = {"Authorization": f"Bearer {token}"} if token else {}
    transport = WebsocketsTransport(
        url=ws_url(server),
        init_payload=payload,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        connect_timeout=20,
        ack_timeout=20,
    )
    return Client(transport=transport)


def token_for(admin: custody.Client, email: str) -> str:
    return admin.graphql("mutation($e: String!) { issueToken(email: $e) }", {"e": email})["issueToken"]


async def first_after_pokes(stream: AsyncIterator[Dict[str, Any]], poke: Callable[[], None]) -> Dict[str, Any]:
    """Pokes every 0.2 s (in a thread: the SDK blocks) until the subscription yields; answers that."""
    stop = threading.Event()

    async def poker() -> None:
        while not stop.is_set():
            await asyncio.to_thread(poke)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(poker())
    try:
        return await asyncio.wait_for(stream.__anext__(), 30)
    finally:
        stop.set()
        await task


async def next_matching(stream: AsyncIterator[Dict[str, Any]], keep: Callable[[Dict[str, Any]], bool],
                        timeout: float = 20) -> Dict[str, Any]:
    """The next item `keep` accepts (pokes still in flight are skipped)."""

    async def scan() -> Dict[str, Any]:
        while True:
            item = await stream.__anext__()
            if keep(item):
                return item

    return await asyncio.wait_for(scan(), timeout)


@contextlib.asynccontextmanager
async def live(server: CustodyServer, token: Optional[str]) -> AsyncIterator[Callable[..., Any]]:
    """A connection; yields `subscribe(query, variables)`. Streams still open at the end are
    closed (completed) before the connection, as a client should: gql waits for that."""
    streams: List[Any] = []
    async with session_of(server, token) as session:

        def subscribe(query: str, variables: Dict[str, Any]) -> Any:
            stream = session.subscribe(GraphQLRequest(query, variable_values=variables)).__aiter__()
            streams.append(stream)
            return stream

        try:
            yield subscribe
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    await stream.aclose()


def code_of(error: TransportQueryError) -> Optional[str]:
    errors = error.errors or []
    return (errors[0].get("extensions") or {}).get("code") if errors else None


def poke_dataset(client: custody.Client, project: str) -> Callable[[], None]:
    return lambda: client.create_dataset(project, f"poke-{uuid.uuid4().hex[:8]}")


# ------------------------------------------------------------------------------------------ runs


def test_run_updates_carry_points_batches_and_status(server, admin, project):
    run = admin.start_run(project, name="live")
    run_id = run["id"]

    async def scenario() -> None:
        async with live(server, server.admin_token) as subscribe:
            updates = subscribe(RUN_UPDATES, {"id": run_id})
            await first_after_pokes(updates, lambda: admin.log_metrics(run_id, [{"key": "poke", "value": 0.0}]))

            admin.log_metrics(run_id, [{"key": "loss", "value": 0.5, "step": 1}, {"key": "auc", "value": 0.75, "step": 1}])
            got = await next_matching(updates, lambda u: any(m["key"] == "loss" for m in u["runUpdates"]["metrics"]))
            update = got["runUpdates"]
            assert [(m["key"], m["value"], m["step"]) for m in update["metrics"]] == [("loss", 0.5, 1), ("auc", 0.75, 1)]
            assert update["truncated"] is False and update["run"] == {"id": run_id, "status": "RUNNING"}

            # A batch too large for one notification is announced without its points.
            admin.log_metrics(run_id, [{"key": f"k{i}", "value": float(i), "step": 2} for i in range(1000)])
            got = await next_matching(updates, lambda u: u["runUpdates"]["truncated"])
            assert got["runUpdates"]["metrics"] == []

            admin.finish_run(run_id, "FINISHED")
            got = await next_matching(updates, lambda u: u["runUpdates"]["run"]["status"] != "RUNNING")
            assert got["runUpdates"] == {"truncated": False, "metrics": [], "run": {"id": run_id, "status": "FINISHED"}}

    asyncio.run(scenario())
    # The history has every point, whatever was announced.
    assert len(admin.run_metrics(run_id, "k999")) == 1


def test_events_cross_replicas(server, admin, project):
    """A subscriber on one replica sees a metric logged through another (LISTEN/NOTIFY)."""
    replica = CustodyServer.start(work_dir=server.work_dir, stop_cluster=False)
    try:
        run = admin.start_run(project, name="cross")
        run_id = run["id"]

        async def scenario() -> None:
            async with live(replica, server.admin_token) as subscribe:
                updates = subscribe(RUN_UPDATES, {"id": run_id})
                await first_after_pokes(updates, lambda: admin.log_metrics(run_id, [{"key": "poke", "value": 0.0}]))
                admin.log_metrics(run_id, [{"key": "from-a", "value": 1.5, "step": 7}])
                got = await next_matching(updates, lambda u: any(m["key"] == "from-a" for m in u["runUpdates"]["metrics"]))
                assert got["runUpdates"]["metrics"] == [{"key": "from-a", "value": 1.5, "step": 7}]

        asyncio.run(scenario())
    finally:
        replica.stop(remove=False)


# ------------------------------------------------------------------------------------ promotions


def _version(admin: custody.Client, project: str, tmp: str, model: str) -> str:
    path = os.path.join(tmp, f"{model}.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(64))
    with custody.start_run(project, client=admin, git=False) as run:
        run.log_artifact(path)
        run_id = run.id
    admin.create_model(project, model)
    return admin.register_model_version(project, model, run_id)["id"]


def test_promotion_events_follow_requests(server, admin, project, tmp):
    poke_version = _version(admin, project, tmp, "poke")
    version = _version(admin, project, tmp, "real")

    async def scenario() -> None:
        async with live(server, server.admin_token) as subscribe:
            events = subscribe(PROMOTION_EVENTS, {"p": project})
            # Production without an evaluation dataset is denied at once by the default policy.
            await first_after_pokes(events, lambda: admin.request_promotion(poke_version, "production"))
            promotion = admin.request_promotion(version, "production", comment="ship it")
            got = await next_matching(events, lambda e: e["promotionEvents"]["promotion"]["id"] == promotion["id"])
            event = got["promotionEvents"]
            assert event["action"] == "promotion.deny" and event["actor"] == "admin@localhost"
            assert event["promotion"] == {"id": promotion["id"], "status": "DENIED", "stage": "production"}

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ audit


def test_audit_events_report_each_entry_of_the_project(server, admin, project):
    other = f"t-{uuid.uuid4().hex[:12]}"
    admin.create_project(other)

    async def scenario() -> None:
        async with live(server, server.admin_token) as subscribe:
            events = subscribe(AUDIT_EVENTS, {"p": project})
            await first_after_pokes(events, poke_dataset(admin, project))
            elsewhere = admin.create_dataset(other, "elsewhere")["id"]  # another project's: not reported
            dataset = admin.create_dataset(project, "features")["id"]
            seen: List[Dict[str, Any]] = []

            def target(e: Dict[str, Any]) -> bool:
                seen.append(e["auditEvents"])
                return e["auditEvents"]["subjectId"] == dataset

            entry = (await next_matching(events, target))["auditEvents"]
            assert entry["action"] == "dataset.create" and entry["subjectKind"] == "dataset"
            assert all(e["subjectId"] != elsewhere for e in seen)
            # It is the entry the log holds, at the same position.
            log, _ = admin.audit_log(project=project, subject_id=dataset)
            assert [(e["seq"], e["action"]) for e in log] == [(entry["seq"], "dataset.create")]

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------- refusals


def test_subscriptions_need_a_valid_token(server):
    async def connect(token: Optional[str]) -> None:
        async with session_of(server, token) as session:
            await session.execute(GraphQLRequest("{ me { email } }"))

    for token in (None, "not-a-token"):
        with pytest.raises(Exception) as err:
            asyncio.run(connect(token))
        assert "token" in str(err.value).lower() or "closed" in str(err.value).lower(), err.value


def test_outsiders_cannot_subscribe_to_a_project_or_its_runs(server, admin, project):
    run = admin.start_run(project, name="secret")
    run_id = run["id"]
    outsider = token_for(admin, f"outsider-{uuid.uuid4().hex[:6]}@example.com")

    async def refused(query: str, variables: Dict[str, Any]) -> Optional[str]:
        async with live(server, outsider) as subscribe:
            with pytest.raises(TransportQueryError) as err:
                await asyncio.wait_for(subscribe(query, variables).__anext__(), 20)
            return code_of(err.value)

    for query, variables in ((RUN_UPDATES, {"id": run_id}), (AUDIT_EVENTS, {"p": project}),
                             (PROMOTION_EVENTS, {"p": project})):
        # Exactly like a project or run that does not exist.
        assert asyncio.run(refused(query, variables)) == "NOT_FOUND"
    assert asyncio.run(refused(AUDIT_EVENTS, {"p": "no-such-project"})) == "NOT_FOUND"


def test_a_removed_member_stops_hearing(server, admin, project):
    email = f"viewer-{uuid.uuid4().hex[:6]}@example.com"
    viewer = token_for(admin, email)
    admin.add_member(project, email, "VIEWER")

    async def scenario() -> None:
        async with live(server, viewer) as subscribe:
            events = subscribe(AUDIT_EVENTS, {"p": project})
            await first_after_pokes(events, poke_dataset(admin, project))
            admin.remove_member(project, email)
            with pytest.raises(TransportQueryError) as err:
                await next_matching(events, lambda e: False)
            assert code_of(err.value) == "FORBIDDEN", err.value
            # Nothing of the project reaches the former member afterwards: the stream is over.
            admin.create_dataset(project, "after-removal")
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(events.__anext__(), 5)

    asyncio.run(scenario())


def test_remove_member_refusals_change_nothing(admin, project):
    with pytest.raises(custody.CustodyError) as err:
        admin.remove_member(project, "admin@localhost")
    assert err.value.code == "CONFLICT"  # the last admin stays
    with pytest.raises(custody.CustodyError) as err:
        admin.remove_member(project, "nobody@example.com")
    assert err.value.code == "NOT_FOUND"
    outsider = custody.Client(admin.url, token_for(admin, f"not-admin-{uuid.uuid4().hex[:6]}@example.com"))
    with pytest.raises(custody.CustodyError) as err:
        outsider.remove_member(project, "admin@localhost")
    assert err.value.code == "NOT_FOUND"
    members = admin.graphql('query($p: String!) { project(name: $p) { members { user { email } role } } }',
                            {"p": project})["project"]["members"]
    assert {"user": {"email": "admin@localhost"}, "role": "ADMIN"} in members


def test_subscriptions_per_connection_are_bounded(server, admin, project):
    async def scenario() -> List[str]:
        async with live(server, server.admin_token) as subscribe:
            streams = [subscribe(AUDIT_EVENTS, {"p": project}) for _ in range(101)]
            tasks = [asyncio.create_task(s.__anext__()) for s in streams]
            # The refused one answers at once; the others wait for events (none come).
            await asyncio.wait(tasks, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            done, pending = await asyncio.wait(tasks, timeout=1)
            errors = []
            for task in done:
                with contextlib.suppress(Exception):
                    task.result()
                if task.exception() is not None:
                    errors.append(str(task.exception()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return errors

    errors = asyncio.run(scenario())
    assert len(errors) == 1 and "at most 100 subscriptions" in errors[0], errors


def test_connections_per_user_are_bounded(server, admin):
    token = token_for(admin, f"many-{uuid.uuid4().hex[:6]}@example.com")

    async def scenario() -> None:
        opened = asyncio.Semaphore(0)
        release = asyncio.Event()

        async def hold() -> None:
            async with session_of(server, token):
                opened.release()
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(20)]
        for _ in range(20):
            await asyncio.wait_for(opened.acquire(), 30)
        with pytest.raises(Exception) as err:
            async with session_of(server, token):
                pass
        assert "at most 20" in str(err.value) or "closed" in str(err.value).lower(), err.value
        release.set()
        await asyncio.gather(*holders)
        # Closed connections give their slots back.
        async with session_of(server, token) as session:
            await session.execute(GraphQLRequest("{ me { email } }"))

    asyncio.run(scenario())


def test_a_silent_connection_is_closed(server):
    """No connection_init within 10 s: closed with 4408, as graphql-transport-ws says."""
    import websockets

    async def scenario() -> int:
        async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as err:
                await asyncio.wait_for(ws.recv(), 20)
            return err.value.rcvd.code

    assert asyncio.run(scenario()) == 4408


def test_subscriptions_are_refused_over_post(server):
    doc = raw_graphql(server.url, server.admin_token, 'subscription { auditEvents(project: "x") { seq } }')
    assert doc.get("errors"), doc
