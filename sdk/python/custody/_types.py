"""Shapes of the dicts the client answers (GraphQL field names, camelCase as in the API)."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from typing import NotRequired, TypedDict
else:  # pragma: no cover
    from typing import TypedDict

    NotRequired = Optional  # close enough for annotations on 3.9/3.10

__all__ = [
    "Artifact",
    "AuditEntry",
    "CodeCommit",
    "Dataset",
    "DatasetVersion",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "Metric",
    "Model",
    "ModelVersion",
    "Param",
    "Project",
    "Promotion",
    "RunInfo",
]


class Project(TypedDict):
    id: str
    name: str
    description: Optional[str]
    createdAt: str


class ProjectRef(TypedDict):
    id: str
    name: str


class CodeCommit(TypedDict):
    id: str
    repository: str
    commit: str
    branch: Optional[str]
    dirty: bool
    author: Optional[str]
    message: Optional[str]


class DatasetVersion(TypedDict):
    id: str
    version: int
    uri: str
    sha256: str
    sizeBytes: Optional[int]
    tags: List[str]
    createdAt: str
    dataset: NotRequired[Dict[str, Any]]


class Dataset(TypedDict):
    id: str
    name: str
    description: Optional[str]
    createdAt: str
    versions: List[DatasetVersion]


class RunInfo(TypedDict):
    id: str
    name: Optional[str]
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    startedAt: str
    endedAt: Optional[str]
    tags: Dict[str, str]
    project: ProjectRef
    codeCommit: Optional[CodeCommit]


class Param(TypedDict):
    key: str
    value: str


class Metric(TypedDict):
    key: str
    value: float
    step: int
    timestamp: str


class Artifact(TypedDict):
    path: str
    sha256: str
    size: int


class ModelVersion(TypedDict):
    id: str
    version: int
    stage: Optional[str]
    description: Optional[str]
    artifactPath: Optional[str]
    manifestSha256: str
    createdAt: str
    artifacts: List[Artifact]
    run: Dict[str, str]


class Model(TypedDict):
    id: str
    name: str
    description: Optional[str]
    primaryMetric: Optional[str]
    higherIsBetter: bool
    createdAt: str
    versions: List[ModelVersion]


class LineageNode(TypedDict):
    kind: str
    id: str


class LineageEdge(TypedDict):
    id: str
    relation: str
    createdAt: str
    # "from" is a keyword: the dicts carry keys "from" and "to" (LineageNode each).


class LineageGraph(TypedDict):
    nodes: List[LineageNode]
    edges: List[Dict[str, Any]]


class Promotion(TypedDict):
    id: str
    status: str
    stage: str
    comment: Optional[str]
    createdAt: str
    expiresAt: str
    decidedAt: Optional[str]
    manifestSha256: str
    policyResult: Dict[str, Any]
    requiredApprovals: int
    approverGroup: Optional[str]
    modelVersion: Dict[str, Any]
    requestedBy: Dict[str, Any]
    approvals: List[Dict[str, Any]]


class AuditEntry(TypedDict):
    seq: int
    at: str
    actor: str
    action: str
    subjectId: str
    hash: str
    prevHash: str
