"""OpenLineage in, driven by the real `openlineage-python` client (pinned, installed by .ci/run):
a pipeline of several jobs (a DAG run, a cleaning job and a featurizing job, with parent run,
source-code and dataset-version facets) reports what it read and wrote; a Custody run trains on
the pipeline's output; then the lineage runs from the model version back to the first source
table, `impact` of that source finds the model version with its stage, a recall of the source
denies the version's promotion, and lifting it lets the promotion through. Malformed,
unauthenticated and unauthorized events are refused and change nothing; a replay changes nothing.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import uuid

import pytest
import requests

import custody
from helpers import raw_graphql
from test_mlflow import admin_gql, audit_actions, issue_token

from openlineage.client import OpenLineageClient  # noqa: E402  (installed by .ci/run)
from openlineage.client.event_v2 import (  # noqa: E402
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import (  # noqa: E402
    dataset_version_dataset,
    parent_run,
    source_code_location_job,
)
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport  # noqa: E402

PRODUCER = "https://github.com/example/pipelines/tree/v1"
COMMIT = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"


def ol_client(server, token: str, project: str | None = None) -> OpenLineageClient:
    """The client as a pipeline configures it: HTTP transport, Custody token as its API key."""
    endpoint = "api/v1/lineage" + (f"?project={project}" if project else "")
    config = HttpConfig(url=server.url, endpoint=endpoint, auth=ApiKeyTokenProvider({"apiKey": token}),
                        retry={"total": 0})
    return OpenLineageClient(transport=HttpTransport(config))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def event(state: RunState, run_id: str, namespace: str, job: str, *, inputs=(), outputs=(), parent=None,
          commit: str | None = None) -> RunEvent:
    job_facets = {}
    if commit:
        job_facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=f"https://git.example.com/pipelines/blob/{commit}/{job}.py",
            repoUrl="https://git.example.com/pipelines.git", version=commit, branch="main")
    run_facets = {}
    if parent:
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent[0]), job=parent_run.Job(namespace=namespace, name=parent[1]))
    return RunEvent(eventType=state, eventTime=now(), producer=PRODUCER,
                    run=Run(runId=run_id, facets=run_facets), job=Job(namespace=namespace, name=job, facets=job_facets),
                    inputs=list(inputs), outputs=list(outputs))


LINEAGE = """query($n: NodeRef!, $d: LineageDirection!, $k: Int) {
  lineage(node: $n, direction: $d, depth: $k) {
    nodes { kind id job { namespace name } datasetVersion { uri tags dataset { name } } codeCommit { commit } }
    edges { from { kind id } to { kind id } relation } } }"""
IMPACT = """query($n: NodeRef!, $k: Int) { impact(node: $n, depth: $k) {
  depth jobs { name namespace } runs { id name status }
  datasetVersions { id uri } modelVersions { id version stage }
  deployments { stage modelVersion { id } } } }"""
VERSIONS = """query($ns: String!, $n: String!) { openLineageDataset(namespace: $ns, name: $n) {
  name project { name } versions { id version uri tags recall { reason } } } }"""
RECALL = """mutation($id: ID!, $r: String!) { recallDatasetVersion(id: $id, reason: $r) {
  id recall { reason inForce recalledBy { email } } } }"""
LIFT = """mutation($id: ID!, $r: String!) { liftDatasetRecall(id: $id, reason: $r) {
  id recall { reason } recalls { reason inForce liftReason liftedBy { email } } } }"""


def versions_of(server, token: str, namespace: str, name: str) -> list:
    doc = raw_graphql(server.url, token, VERSIONS, {"ns": namespace, "n": name})
    assert not doc.get("errors"), doc["errors"]
    found = doc["data"]["openLineageDataset"]
    return found["versions"] if found else []


@pytest.fixture
def pipeline(server):
    """Two projects (the data platform's pipelines, the ML team's models) and their people: a
    pipeline service identity (contributor in pipelines), a data scientist (contributor in ml,
    viewer in pipelines), a data steward (approver in pipelines), an ML approver and an outsider."""
    suffix = uuid.uuid4().hex[:8]
    admin = custody.Client(server.url, server.admin_token)
    people = {}
    for who in ("etl", "scientist", "steward", "mlapprover", "mladmin", "outsider"):
        email = f"{who}-{suffix}@example.com"
        people[who] = (email, issue_token(server, email))
    pipelines, ml = f"pipelines-{suffix}", f"ml-{suffix}"
    admin.create_project(pipelines)
    admin.create_project(ml)
    admin.add_member(pipelines, people["etl"][0], "CONTRIBUTOR")
    admin.add_member(pipelines, people["steward"][0], "APPROVER")
    admin.add_member(pipelines, people["scientist"][0], "VIEWER")
    admin.add_member(ml, people["scientist"][0], "CONTRIBUTOR")
    admin.add_member(ml, people["mlapprover"][0], "APPROVER")
    admin.add_member(ml, people["mladmin"][0], "ADMIN")
    return {"pipelines": pipelines, "ml": ml, "people": people, "suffix": suffix,
            "namespace": f"airflow-{suffix}", "warehouse": f"postgres://warehouse-{suffix}:5432"}


def run_pipeline(server, p) -> dict:
    """The DAG: `etl.clean` reads the raw source table and writes a cleaned one, `etl.featurize`
    reads that and writes a versioned feature table; both are children of the DAG run."""
    ns, wh = p["namespace"], p["warehouse"]
    client = ol_client(server, p["people"]["etl"][1], p["pipelines"])
    dag, clean, featurize = (str(uuid.uuid4()) for _ in range(3))
    raw = InputDataset(namespace=wh, name="public.raw_events")
    cleaned_out = OutputDataset(namespace=wh, name="public.clean_events")
    cleaned_in = InputDataset(namespace=wh, name="public.clean_events")
    features = OutputDataset(namespace=wh, name="public.features", facets={
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="v42")})
    client.emit(event(RunState.START, dag, ns, "etl"))
    client.emit(event(RunState.START, clean, ns, "etl.clean", inputs=[raw], parent=(dag, "etl"), commit=COMMIT))
    client.emit(event(RunState.COMPLETE, clean, ns, "etl.clean", inputs=[raw], outputs=[cleaned_out],
                      parent=(dag, "etl"), commit=COMMIT))
    client.emit(event(RunState.START, featurize, ns, "etl.featurize", inputs=[cleaned_in], parent=(dag, "etl")))
    done = event(RunState.COMPLETE, featurize, ns, "etl.featurize", inputs=[cleaned_in], outputs=[features],
                 parent=(dag, "etl"))
    client.emit(done)
    client.emit(event(RunState.COMPLETE, dag, ns, "etl"))
    return {"client": client, "replay": done, "runs": (dag, clean, featurize)}


def train_on_features(server, p) -> dict:
    """The data scientist's Custody run reads the pipeline's feature table and a model version is
    registered from it."""
    scientist = custody.Client(server.url, p["people"]["scientist"][1])
    [features] = versions_of(server, p["people"]["scientist"][1], p["warehouse"], "public.features")
    run = scientist.start_run(p["ml"], "train", inputs=[features["id"]])
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"model-{p['suffix']}.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(2048))
    scientist.upload_artifact("run", run["id"], "model/weights.bin", path)
    os.remove(path)
    scientist.log_metrics(run["id"], [{"key": "auc", "value": 0.93}])
    scientist.finish_run(run["id"], "FINISHED")
    scientist.create_model(p["ml"], "churn")
    version = scientist.register_model_version(p["ml"], "churn", run["id"], "model")
    return {"scientist": scientist, "run": run, "version": version, "features": features}


def test_pipeline_lineage_reaches_from_model_version_to_first_source(server, pipeline):
    p = pipeline
    ran = run_pipeline(server, p)
    trained = train_on_features(server, p)
    token = p["people"]["scientist"][1]

    # The pipeline's jobs, runs and datasets landed in the pipelines project.
    [raw] = versions_of(server, token, p["warehouse"], "public.raw_events")
    assert raw["uri"] == f"{p['warehouse']}/public.raw_events"
    assert raw["tags"] == ["openlineage-external"]
    [cleaned] = versions_of(server, token, p["warehouse"], "public.clean_events")
    assert cleaned["tags"] == ["openlineage-run-output"]
    assert trained["features"]["tags"] == ["openlineage-version"]

    # One traversal from the model version back to the raw source table, through both jobs.
    doc = raw_graphql(server.url, token, LINEAGE, {
        "n": {"kind": "MODEL_VERSION", "id": trained["version"]["id"]}, "d": "UPSTREAM", "k": 10})
    assert not doc.get("errors"), doc["errors"]
    graph = doc["data"]["lineage"]
    ids = {n["id"] for n in graph["nodes"]}
    assert raw["id"] in ids and cleaned["id"] in ids and trained["features"]["id"] in ids
    jobs = {n["job"]["name"] for n in graph["nodes"] if n["kind"] == "JOB"}
    assert {"etl.clean", "etl.featurize", "etl"} <= jobs
    assert COMMIT in {n["codeCommit"]["commit"] for n in graph["nodes"] if n["kind"] == "CODE_COMMIT"}
    relations = {e["relation"] for e in graph["edges"]}
    assert {"consumed", "produced_by", "run_of", "child_of", "ran"} <= relations

    # The pipeline runs ended as the events said.
    runs = admin_gql(server, """query($p: String!) { searchRuns(projects: [$p]) { edges { node { name status } } } }""",
                     {"p": p["pipelines"]})["searchRuns"]["edges"]
    runs = [r["node"] for r in runs]
    assert sorted((r["name"], r["status"]) for r in runs) == [
        ("etl", "FINISHED"), ("etl.clean", "FINISHED"), ("etl.featurize", "FINISHED")]

    # A replay of an event is answered and changes nothing (no new audit entry).
    before = len(audit_actions(server, p["pipelines"]))
    ran["client"].emit(ran["replay"])
    assert len(audit_actions(server, p["pipelines"])) == before

    # Impact of the source: everything built on it, down to the model version and its stage.
    scientist = trained["scientist"]
    promotion = scientist.request_promotion(trained["version"]["id"], "staging")
    if promotion["status"] == "PENDING":
        approver = custody.Client(server.url, p["people"]["mlapprover"][1])
        promotion = approver.approve_promotion(promotion["id"], "features checked")
    assert promotion["status"] == "APPLIED", promotion
    doc = raw_graphql(server.url, token, IMPACT, {"n": {"kind": "DATASET_VERSION", "id": raw["id"]}, "k": 10})
    assert not doc.get("errors"), doc["errors"]
    impact = doc["data"]["impact"]
    assert [m["stage"] for m in impact["modelVersions"]] == ["staging"]
    assert impact["modelVersions"][0]["id"] == trained["version"]["id"]
    assert [d["stage"] for d in impact["deployments"]] == ["staging"]
    assert {j["name"] for j in impact["jobs"]} == {"etl.clean", "etl.featurize"}
    assert {r["name"] for r in impact["runs"]} == {"etl.clean", "etl.featurize", "train"}
    assert {d["id"] for d in impact["datasetVersions"]} == {cleaned["id"], trained["features"]["id"]}

    # The SDK asks the same.
    sdk_impact = custody.Client(server.url, token).impact(("DATASET_VERSION", raw["id"]))
    assert [(m["id"], m["stage"]) for m in sdk_impact["modelVersions"]] == [(trained["version"]["id"], "staging")]

    # An outsider learns nothing from the impact of the source table.
    outsider = p["people"]["outsider"][1]
    doc = raw_graphql(server.url, outsider, IMPACT, {"n": {"kind": "DATASET_VERSION", "id": raw["id"]}})
    assert doc["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # The data platform's etl identity sees the pipeline's part, not the ML project's model.
    doc = raw_graphql(server.url, p["people"]["etl"][1], IMPACT,
                      {"n": {"kind": "DATASET_VERSION", "id": raw["id"]}})
    assert not doc.get("errors"), doc["errors"]
    assert doc["data"]["impact"]["modelVersions"] == []
    assert {r["name"] for r in doc["data"]["impact"]["runs"]} == {"etl.clean", "etl.featurize"}


def test_recall_of_a_source_denies_promotion_until_lifted(server, pipeline):
    p = pipeline
    run_pipeline(server, p)
    trained = train_on_features(server, p)
    steward = p["people"]["steward"][1]
    [raw] = versions_of(server, steward, p["warehouse"], "public.raw_events")

    # Only an approver or admin of the dataset's project may recall it, with a reason.
    for token in (p["people"]["etl"][1], p["people"]["scientist"][1]):
        doc = raw_graphql(server.url, token, RECALL, {"id": raw["id"], "r": "pii found"})
        assert doc["errors"][0]["extensions"]["code"] == "FORBIDDEN", doc
    doc = raw_graphql(server.url, p["people"]["outsider"][1], RECALL, {"id": raw["id"], "r": "pii found"})
    assert doc["errors"][0]["extensions"]["code"] == "NOT_FOUND", doc
    doc = raw_graphql(server.url, steward, RECALL, {"id": raw["id"], "r": "  "})
    assert doc["errors"][0]["extensions"]["code"] == "INVALID_INPUT", doc
    assert versions_of(server, steward, p["warehouse"], "public.raw_events")[0]["recall"] is None

    doc = raw_graphql(server.url, steward, RECALL, {"id": raw["id"], "r": "consent withdrawn for EU rows"})
    assert not doc.get("errors"), doc["errors"]
    recall = doc["data"]["recallDatasetVersion"]["recall"]
    assert recall["inForce"] and recall["recalledBy"]["email"] == p["people"]["steward"][0]
    doc = raw_graphql(server.url, steward, RECALL, {"id": raw["id"], "r": "again"})
    assert doc["errors"][0]["extensions"]["code"] == "CONFLICT", doc

    # The ML project's admin is told (its model version is built on the recalled table).
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    mails = []
    while dt.datetime.now() < deadline and not mails:
        for path in glob.glob(os.path.join(server.data_dir, "outbox", "*.eml")):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if p["people"]["mladmin"][0] in text and "Recalled: " in text:
                mails.append(text)
        if not mails:
            import time
            time.sleep(0.5)
    assert mails and "consent withdrawn for EU rows" in mails[0]

    # The version's readers see the recalled ancestor they may read; the ML admin, who cannot
    # read the pipelines project, does not (the policy, which sees everything, still denies).
    recalled = """query($p: String!) { modelVersion(project: $p, model: "churn", version: 1) {
      recalledUpstream { id recall { reason } } } }"""
    doc = raw_graphql(server.url, p["people"]["scientist"][1], recalled, {"p": p["ml"]})
    assert [d["id"] for d in doc["data"]["modelVersion"]["recalledUpstream"]] == [raw["id"]]
    doc = raw_graphql(server.url, p["people"]["mladmin"][1], recalled, {"p": p["ml"]})
    assert doc["data"]["modelVersion"]["recalledUpstream"] == []
    assert versions_of(server, p["people"]["outsider"][1], p["warehouse"], "public.raw_events") == []

    # The promotion of the version built on it is denied, with the policy's reason.
    scientist = trained["scientist"]
    denied = scientist.request_promotion(trained["version"]["id"], "staging")
    assert denied["status"] == "DENIED", denied
    reasons = " ".join(denied["policyResult"]["deny"])
    assert "was recalled (consent withdrawn for EU rows)" in reasons

    # The signed compliance report of the version names the recall.
    report = requests.get(f"{server.url}/api/compliance/{trained['version']['id']}",
                          headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30)
    assert report.status_code == 200, report.text
    recalls = [r for d in report.json()["report"]["lineage"]["datasets"] for r in d["recalls"]]
    assert [(r["reason"], r["in_force"]) for r in recalls] == [("consent withdrawn for EU rows", True)]

    # Lifting is a recorded decision; then the promotion goes through the gate again.
    doc = raw_graphql(server.url, p["people"]["scientist"][1], LIFT, {"id": raw["id"], "r": "rows removed"})
    assert doc["errors"][0]["extensions"]["code"] == "FORBIDDEN", doc
    doc = raw_graphql(server.url, steward, LIFT, {"id": raw["id"], "r": "EU rows deleted upstream, re-verified"})
    assert not doc.get("errors"), doc["errors"]
    lifted = doc["data"]["liftDatasetRecall"]
    assert lifted["recall"] is None
    assert [(r["inForce"], r["liftReason"], r["liftedBy"]["email"]) for r in lifted["recalls"]] == [
        (False, "EU rows deleted upstream, re-verified", p["people"]["steward"][0])]
    doc = raw_graphql(server.url, steward, LIFT, {"id": raw["id"], "r": "twice"})
    assert doc["errors"][0]["extensions"]["code"] == "CONFLICT", doc
    allowed = scientist.request_promotion(trained["version"]["id"], "staging")
    assert allowed["status"] in ("PENDING", "APPLIED"), allowed

    actions = [e["action"] for e in audit_actions(server, p["pipelines"])]
    assert "dataset_version.recall" in actions and "dataset_version.lift_recall" in actions


def test_dataset_and_job_events_record_datasets_versions_and_jobs(server, pipeline):
    p = pipeline
    client = ol_client(server, p["people"]["etl"][1], p["pipelines"])
    wh = p["warehouse"]
    snapshot = StaticDataset(namespace=wh, name="public.snapshots", facets={
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="2026-12-01")})
    client.emit(DatasetEvent(eventTime=now(), producer=PRODUCER, dataset=snapshot))
    client.emit(DatasetEvent(eventTime=now(), producer=PRODUCER, dataset=snapshot))
    [version] = versions_of(server, p["people"]["etl"][1], wh, "public.snapshots")
    assert version["tags"] == ["openlineage-version"]
    # A dataset already known is found wherever it lives, even from a client naming no project.
    later = StaticDataset(namespace=wh, name="public.snapshots", facets={
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="2026-12-02")})
    ol_client(server, p["people"]["etl"][1]).emit(DatasetEvent(eventTime=now(), producer=PRODUCER, dataset=later))
    versions = versions_of(server, p["people"]["etl"][1], wh, "public.snapshots")
    assert [v["version"] for v in versions] == [1, 2]
    version = versions[-1]  # what a run reading the table without a version facet reads
    client.emit(JobEvent(eventTime=now(), producer=PRODUCER, job=Job(namespace=p["namespace"], name="export"),
                         inputs=[InputDataset(namespace=wh, name="public.snapshots")],
                         outputs=[OutputDataset(namespace=wh, name="public.exports")]))
    # The job's datasets are known (no version: nothing was written yet); its runs attach to it.
    doc = raw_graphql(server.url, p["people"]["etl"][1], VERSIONS, {"ns": wh, "n": "public.exports"})
    assert doc["data"]["openLineageDataset"]["versions"] == []
    run_id = str(uuid.uuid4())
    client.emit(event(RunState.COMPLETE, run_id, p["namespace"], "export",
                      inputs=[InputDataset(namespace=wh, name="public.snapshots")],
                      outputs=[OutputDataset(namespace=wh, name="public.exports")]))
    [exported] = versions_of(server, p["people"]["etl"][1], wh, "public.exports")
    doc = raw_graphql(server.url, p["people"]["etl"][1], LINEAGE, {
        "n": {"kind": "DATASET_VERSION", "id": exported["id"]}, "d": "UPSTREAM", "k": 3})
    nodes = doc["data"]["lineage"]["nodes"]
    assert version["id"] in {n["id"] for n in nodes}
    assert [n["job"]["name"] for n in nodes if n["kind"] == "JOB"] == ["export"]


def post_event(server, token: str | None, body, project: str | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = server.url + "/api/v1/lineage" + (f"?project={project}" if project else "")
    return requests.post(url, data=body if isinstance(body, (str, bytes)) else None,
                         json=None if isinstance(body, (str, bytes)) else body, headers=headers, timeout=30)


def test_malformed_and_unauthorized_events_are_refused_and_change_nothing(server, pipeline):
    p = pipeline
    etl = p["people"]["etl"][1]
    client = ol_client(server, etl, p["pipelines"])
    good = event(RunState.START, str(uuid.uuid4()), p["namespace"], "load",
                 inputs=[InputDataset(namespace=p["warehouse"], name="public.orders")])
    before = [len(audit_actions(server, project)) for project in (p["pipelines"], p["ml"])]

    # The real client raises on each refusal.
    outsider = ol_client(server, p["people"]["outsider"][1], p["pipelines"])
    with pytest.raises(requests.HTTPError) as refused:
        outsider.emit(good)
    assert refused.value.response.status_code == 404
    anonymous = ol_client(server, "not-a-token", p["pipelines"])
    with pytest.raises(requests.HTTPError) as refused:
        anonymous.emit(good)
    assert refused.value.response.status_code == 401
    # A viewer may not write lineage into the project.
    viewer = ol_client(server, p["people"]["scientist"][1], p["pipelines"])
    with pytest.raises(requests.HTTPError) as refused:
        viewer.emit(good)
    assert refused.value.response.status_code == 403
    # No rule, no same-named project, no ?project=: the namespace maps nowhere.
    unmapped = ol_client(server, etl)
    with pytest.raises(requests.HTTPError) as refused:
        unmapped.emit(good)
    assert refused.value.response.status_code == 400
    assert "maps to no project" in refused.value.response.json()["error"]["message"]

    # Malformed events: a clear 400 naming the field.
    from openlineage.client.serde import Serde
    import json
    doc = json.loads(Serde.to_json(good))
    bad_id = dict(doc, run={"runId": "not-a-uuid"})
    answer = post_event(server, etl, bad_id, p["pipelines"])
    assert answer.status_code == 400 and "/run/runId" in answer.json()["error"]["message"], answer.text
    no_job_name = dict(doc, job={"namespace": p["namespace"]})
    answer = post_event(server, etl, no_job_name, p["pipelines"])
    assert answer.status_code == 400 and "name" in answer.json()["error"]["message"], answer.text
    bad_type = dict(doc, eventType="DONE")
    answer = post_event(server, etl, bad_type, p["pipelines"])
    assert answer.status_code == 400 and "/eventType" in answer.json()["error"]["message"], answer.text
    too_many = dict(doc, inputs=[{"namespace": p["warehouse"], "name": f"t{i}"} for i in range(1001)])
    answer = post_event(server, etl, too_many, p["pipelines"])
    assert answer.status_code == 400 and "at most 1000" in answer.json()["error"]["message"], answer.text
    answer = post_event(server, etl, "{not json", p["pipelines"])
    assert answer.status_code == 400, answer.text
    answer = post_event(server, None, doc, p["pipelines"])
    assert answer.status_code == 401, answer.text

    assert [len(audit_actions(server, project)) for project in (p["pipelines"], p["ml"])] == before
    assert versions_of(server, server.admin_token, p["warehouse"], "public.orders") == []

    # The same event from the pipeline's identity lands, once.
    client.emit(good)
    client.emit(good)
    assert len(versions_of(server, server.admin_token, p["warehouse"], "public.orders")) == 1
    # A run id reused for another job is refused.
    clash = event(RunState.COMPLETE, good.run.runId, p["namespace"], "another-job")
    with pytest.raises(requests.HTTPError) as refused:
        client.emit(clash)
    assert refused.value.response.status_code == 409


def test_custody_emits_its_own_lineage_to_a_catalog(server, tmp):
    """OpenLineage out: a Custody configured with an endpoint sends its runs, dataset versions
    and model versions there. The catalog here is a second real Custody's `/api/v1/lineage`, which
    checks every event against the published schema and records what it says."""
    from serverproc import CustodyServer, find_server_bin

    catalog_project = f"catalog-{uuid.uuid4().hex[:8]}"
    custody.Client(server.url, server.admin_token).create_project(catalog_project)
    emitter = CustodyServer.start(find_server_bin(), timeout=90, extra_env={
        "CUSTODY_OPENLINEAGE_EMIT_URL": f"{server.url}/api/v1/lineage?project={catalog_project}",
        "CUSTODY_OPENLINEAGE_EMIT_API_KEY": server.admin_token,
        "CUSTODY_OUTBOX_INTERVAL": "1s",
    })
    try:
        local = custody.Client(emitter.url, emitter.admin_token)
        local.create_project("churn")
        local.create_dataset("churn", "customers")
        data = local.register_dataset_version("churn", "customers", "s3://lake/customers.parquet", "ab" * 32)
        run = local.start_run("churn", "train", inputs=[data["id"]])
        path = os.path.join(tmp, "weights.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(1024))
        local.upload_artifact("run", run["id"], "model/weights.bin", path)
        local.finish_run(run["id"], "FINISHED")
        local.create_model("churn", "churn-model")
        local.register_model_version("churn", "churn-model", run["id"], "model")

        namespace = f"custody://127.0.0.1:{emitter.port}/churn"
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while dt.datetime.now() < deadline:
            runs = admin_gql(server, """query($p: String!) { searchRuns(projects: [$p]) {
              edges { node { name status inputs { uri } } } } }""", {"p": catalog_project})["searchRuns"]["edges"]
            models = versions_of(server, server.admin_token, namespace, "models/churn-model")
            if runs and runs[0]["node"]["status"] == "FINISHED" and models:
                break
            import time
            time.sleep(0.5)
        assert [r["node"]["name"] for r in runs] == ["train"], runs
        assert runs[0]["node"]["status"] == "FINISHED"
        customers = versions_of(server, server.admin_token, namespace, "customers")
        assert [v["uri"] for v in customers] == [f"{namespace}/customers"]
        assert [v["uri"] for v in runs[0]["node"]["inputs"]] == [f"{namespace}/customers"]
        assert [v["tags"] for v in models] == [["openlineage-version"]]
        # The catalog's lineage: the model output, produced by the train run, which read customers.
        doc = raw_graphql(server.url, server.admin_token, LINEAGE, {
            "n": {"kind": "DATASET_VERSION", "id": models[0]["id"]}, "d": "UPSTREAM", "k": 3})
        assert not doc.get("errors"), doc["errors"]
        assert customers[0]["id"] in {n["id"] for n in doc["data"]["lineage"]["nodes"]}
    finally:
        emitter.stop()
