"""Every GraphQL document the SDKs send is valid against `sdk/schema.graphql` (itself checked to be
what `custody-server schema` prints: sdk/rust/tests/schema.rs).

The Python SDK builds its documents as string constants and f-strings over module constants; the
documents are found in its source by parsing it (``ast``), so a new method is checked without being
listed here. Validation is graphql-core's full set of rules: fields, arguments (names, types,
required ones), variables (declared, used, compatible types), fragments.

The Rust SDK's documents (`sdk/rust/graphql/*.graphql`) are validated the same way: its
`graphql_client` derive resolves every selected field and type at compile time, but it does not
check arguments or variable types.
"""

from __future__ import annotations

import ast
import glob
import os
import re
from typing import Dict, List, Tuple

import pytest

from serverproc import REPO_ROOT

graphql = pytest.importorskip("graphql", reason="graphql-core is installed by .ci/run")

SCHEMA_PATH = os.path.join(REPO_ROOT, "sdk", "schema.graphql")
PYTHON_SDK = os.path.join(REPO_ROOT, "sdk", "python", "custody")
RUST_DOCUMENTS = os.path.join(REPO_ROOT, "sdk", "rust", "graphql")

# The start of an operation: its keyword, then a name, its variables or its selection set.
OPERATION = re.compile(r"^\s*(query|mutation|subscription)\s*([_A-Za-z]\w*\s*)?[({]")


@pytest.fixture(scope="module")
def schema() -> "graphql.GraphQLSchema":
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return graphql.build_schema(f.read())


def _module_namespace(tree: ast.Module) -> Dict[str, object]:
    """The module-level string constants (what the SDK's f-strings interpolate)."""
    ns: Dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    ns[target.id] = node.value.value
    return ns


def _string_value(node: ast.AST, ns: Dict[str, object], where: str) -> "str | None":
    """The text of a string literal or of an f-string over module constants; None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        try:
            return eval(compile(ast.Expression(node), where, "eval"), {"__builtins__": {}}, dict(ns))  # noqa: S307
        except NameError as e:
            raise AssertionError(f"{where}: a GraphQL f-string uses something other than module constants ({e})")
    return None


def _enclosing_assignments(tree: ast.Module) -> Dict[Tuple[int, str], ast.AST]:
    """`name = <expr>` inside each function, keyed by (function line, name)."""
    out: Dict[Tuple[int, str], ast.AST] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            out[(fn.lineno, target.id)] = node.value
    return out


def _looks_like_operation(node: ast.AST) -> bool:
    """A string literal, or an f-string whose literal start, that opens a GraphQL operation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(OPERATION.match(node.value))
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return isinstance(first, ast.Constant) and bool(OPERATION.match(str(first.value)))
    return False


def python_sdk_documents() -> List[Tuple[str, str]]:
    """(where, document) for every GraphQL operation in the Python SDK's source."""
    docs: List[Tuple[str, str]] = []
    for path in sorted(glob.glob(os.path.join(PYTHON_SDK, "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        ns = _module_namespace(tree)
        rel = os.path.relpath(path, REPO_ROOT)
        # The literal parts of an f-string are Constant nodes too: the f-string is taken whole.
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if id(node) in parts or not _looks_like_operation(node):
                continue
            where = f"{rel}:{node.lineno}"
            docs.append((where, _string_value(node, ns, where)))
    return docs


def graphql_call_sites() -> List[Tuple[str, str]]:
    """(where, document) for every `….graphql(document, …)` call of the Python SDK, its first
    argument resolved through the function's own assignments and the module constants."""
    sites: List[Tuple[str, str]] = []
    for path in sorted(glob.glob(os.path.join(PYTHON_SDK, "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        ns = _module_namespace(tree)
        assigned = _enclosing_assignments(tree)
        rel = os.path.relpath(path, REPO_ROOT)
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for call in ast.walk(fn):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "graphql"
                    and call.args
                ):
                    continue
                where = f"{rel}:{call.lineno}"
                arg = call.args[0]
                if isinstance(arg, ast.Name) and fn.name == "graphql":
                    continue  # the method itself passing its parameter on
                if isinstance(arg, ast.Name):
                    arg = assigned.get((fn.lineno, arg.id)) or arg
                    if isinstance(arg, ast.Name) and isinstance(ns.get(arg.id), str):
                        sites.append((where, str(ns[arg.id])))
                        continue
                text = _string_value(arg, ns, where)
                assert text is not None, f"{where}: cannot resolve the document passed to graphql()"
                sites.append((where, text))
    return sites


def _validate(schema: "graphql.GraphQLSchema", where: str, text: str) -> List[str]:
    try:
        document = graphql.parse(text)
    except graphql.GraphQLError as e:
        return [f"{where}: does not parse: {e.message}\n{text}"]
    return [f"{where}: {e.message}\n{text.strip()}" for e in graphql.validate(schema, document)]


def test_every_python_sdk_document_is_valid_against_the_schema(schema: "graphql.GraphQLSchema") -> None:
    docs = python_sdk_documents()
    # The SDK has some thirty operations: finding few means the extraction broke, not that all is well.
    assert len(docs) >= 20, f"only {len(docs)} GraphQL documents found in {PYTHON_SDK}: {docs}"
    problems = [p for where, text in docs for p in _validate(schema, where, text)]
    assert not problems, "\n\n".join(problems)


def test_every_graphql_call_of_the_python_sdk_sends_a_checked_document() -> None:
    checked = {text for _, text in python_sdk_documents()}
    sites = graphql_call_sites()
    assert len(sites) >= 20, f"only {len(sites)} graphql() call sites found: {sites}"
    unchecked = [where for where, text in sites if text not in checked]
    assert not unchecked, f"documents sent but not found by the extraction: {unchecked}"


def test_every_rust_sdk_document_is_valid_against_the_schema(schema: "graphql.GraphQLSchema") -> None:
    files = sorted(glob.glob(os.path.join(RUST_DOCUMENTS, "*.graphql")))
    assert files, f"no documents under {RUST_DOCUMENTS}"
    problems: List[str] = []
    operations = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        rel = os.path.relpath(path, REPO_ROOT)
        problems += _validate(schema, rel, text)
        operations += sum(
            isinstance(d, graphql.OperationDefinitionNode) for d in graphql.parse(text).definitions
        )
    assert operations >= 20, f"only {operations} operations in {RUST_DOCUMENTS}"
    assert not problems, "\n\n".join(problems)


def test_validation_catches_a_wrong_document(schema: "graphql.GraphQLSchema") -> None:
    """The check itself can fail: a wrong argument, an unknown field, a mistyped variable."""
    for bad in (
        "query { me { id nosuchfield } }",
        'query { project(nam: "x") { id } }',
        "query($n: Int!) { project(name: $n) { id } }",
        "mutation($p: String!) { createProject(name: $p) }",
    ):
        assert _validate(schema, "probe", bad), f"accepted: {bad}"
