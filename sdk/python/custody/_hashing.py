"""Content digests of local files and directories (the same rules as the Rust SDK and CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Dict, List, Tuple, Union

from ._client import sha256_file

__all__ = ["hash_path", "list_files", "manifest", "manifest_json"]

PathLike = Union[str, "os.PathLike[str]"]

_MAX_DEPTH = 64


def list_files(directory: PathLike) -> List[Tuple[str, str]]:
    """Every regular file under ``directory`` as ``(relative path with '/', absolute path)``,
    sorted by relative path (UTF-8 byte order). Symbolic links are followed; sockets, fifos and
    dangling links are skipped. Raises ``ValueError`` for names that are not UTF-8 and for
    directories nested deeper than 64 levels (a symlink loop)."""
    root = os.path.abspath(os.fspath(directory))
    found: List[Tuple[str, str]] = []

    def walk(path: str, parts: List[str]) -> None:
        if len(parts) > _MAX_DEPTH:
            raise ValueError(f"{path} nests deeper than {_MAX_DEPTH} directories (a symlink loop?)")
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    mode = os.stat(entry.path).st_mode  # follows symbolic links
                except FileNotFoundError:  # a dangling link
                    continue
                try:
                    entry.name.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"{entry.path!r} is not a UTF-8 path; rename it to digest the directory") from None
                if stat.S_ISDIR(mode):
                    walk(entry.path, parts + [entry.name])
                elif stat.S_ISREG(mode):
                    found.append(("/".join(parts + [entry.name]), entry.path))

    walk(root, [])
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return found


def manifest(directory: PathLike) -> List[Dict[str, object]]:
    """The files of a directory as ``[{"path", "sha256", "size"}]``, sorted by path."""
    entries: List[Dict[str, object]] = []
    for rel, full in list_files(directory):
        digest, size = sha256_file(full)
        entries.append({"path": rel, "sha256": digest, "size": size})
    return entries


def manifest_json(entries: List[Dict[str, object]]) -> str:
    """The canonical manifest text: a JSON array of ``{"path","sha256","size"}`` objects in
    that key order, no whitespace, non-ASCII characters unescaped."""
    return "[" + ",".join(
        '{"path":%s,"sha256":"%s","size":%d}' % (json.dumps(e["path"], ensure_ascii=False), e["sha256"], e["size"])
        for e in entries
    ) + "]"


def hash_path(path: PathLike) -> Tuple[str, int]:
    """SHA-256 (64 lowercase hex) and total size in bytes of a file or a directory.

    A file's digest is the SHA-256 of its bytes. A directory's digest is deterministic and is the
    rule of the Rust SDK/CLI and of the server's model-version ``manifestSha256``: every regular
    file under it (symbolic links followed) with its path relative to the directory (UTF-8, ``/``
    separators), its SHA-256 and its size, sorted by path (byte order), written as the canonical
    JSON array ``[{"path":"a/b.csv","sha256":"<hex>","size":123},...]`` (keys in this order, no
    whitespace); the digest is the SHA-256 of that text. Renaming, adding, removing or changing
    a file changes it; timestamps and permissions do not.
    """
    p = os.fspath(path)
    if os.path.isfile(p):
        return sha256_file(p)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"no file or directory at {p}")
    entries = manifest(p)
    digest = hashlib.sha256(manifest_json(entries).encode("utf-8")).hexdigest()
    return digest, sum(int(e["size"]) for e in entries)  # type: ignore[call-overload]
