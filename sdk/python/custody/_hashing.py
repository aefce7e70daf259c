"""Content digests of local files and directories."""

from __future__ import annotations

import hashlib
import os
from typing import List, Tuple, Union

from ._client import sha256_file

__all__ = ["hash_path", "list_files"]

PathLike = Union[str, "os.PathLike[str]"]


def list_files(directory: PathLike) -> List[Tuple[str, str]]:
    """Every regular file under ``directory`` (symbolic links followed) as
    ``(relative path with '/', absolute path)``, sorted by relative path (by its UTF-8 bytes)."""
    root = os.path.abspath(os.fspath(directory))
    found: List[Tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):  # sockets, fifos, dangling links
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            found.append((rel, full))
    found.sort(key=lambda item: item[0].encode("utf-8", "surrogateescape"))
    return found


def hash_path(path: PathLike) -> Tuple[str, int]:
    """SHA-256 (64 lowercase hex) and total size in bytes of a file or a directory.

    A file's digest is the SHA-256 of its bytes. A directory's digest is deterministic: the
    SHA-256 of the lines ``"<file sha256>  <relative path>\\n"`` (the ``sha256sum`` format, paths
    relative to the directory with ``/`` separators, UTF-8), one per regular file, sorted by path.
    So ``cd DIR && find . -type f | sed 's|^./||' | LC_ALL=C sort | tr '\\n' '\\0' | xargs -0 sha256sum | sha256sum``
    gives the same digest (for trees without symbolic links, names without newlines or backslashes).
    """
    p = os.fspath(path)
    if os.path.isfile(p):
        return sha256_file(p)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"no file or directory at {p}")
    manifest = hashlib.sha256()
    total = 0
    for rel, full in list_files(p):
        digest, size = sha256_file(full)
        manifest.update(f"{digest}  {rel}\n".encode("utf-8", "surrogateescape"))
        total += size
    return manifest.hexdigest(), total
