"""Capturing the git commit of the calling code."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["GitInfo", "capture_git"]


@dataclass(frozen=True)
class GitInfo:
    """What :func:`capture_git` found about a working tree."""

    repository: str
    """The ``origin`` remote's URL (credentials removed), else the first remote's, else the
    absolute path of the working tree."""
    commit: str
    """The 40-hex id of ``HEAD``."""
    branch: Optional[str]
    """The checked-out branch; None when ``HEAD`` is detached."""
    dirty: bool
    """Whether ``git status --porcelain`` reports anything (changed, staged or untracked files)."""
    root: str
    """The working tree's top-level directory."""
    author: Optional[str] = None
    message: Optional[str] = None


def _git(cwd: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode("utf-8", "replace")


def strip_credentials(url: str) -> str:
    """``https://user:token@host/x.git`` → ``https://host/x.git``; other forms unchanged
    (``git@host:x.git`` holds no secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.scheme and parts.netloc and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        # ssh://git@host keeps its user name: it is not a secret and is part of the address.
        if parts.scheme == "ssh" and ":" not in parts.netloc.rsplit("@", 1)[0]:
            return url
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def capture_git(path: Optional[str] = None) -> Optional[GitInfo]:
    """The commit checked out in the git working tree holding ``path`` (a file or directory;
    default: the current directory). None when there is no git, no repository or no commit yet:
    capturing never raises."""
    start = os.path.abspath(path or os.getcwd())
    if not os.path.isdir(start):
        start = os.path.dirname(start)
    if not os.path.isdir(start):
        return None
    head = _git(start, "rev-parse", "--show-toplevel", "--verify", "HEAD")
    if head is None:
        return None
    lines = head.splitlines()
    if len(lines) < 2 or len(lines[1].strip()) != 40:
        return None
    root, commit = lines[0].strip(), lines[1].strip().lower()
    branch = (_git(root, "symbolic-ref", "--quiet", "--short", "HEAD") or "").strip() or None
    status = _git(root, "status", "--porcelain")
    dirty = bool(status and status.strip())
    remote = (_git(root, "config", "--get", "remote.origin.url") or "").strip()
    if not remote:
        remotes: List[str] = (_git(root, "remote") or "").split()
        if remotes:
            remote = (_git(root, "config", "--get", f"remote.{remotes[0]}.url") or "").strip()
    repository = strip_credentials(remote) if remote else root
    log = _git(root, "log", "-1", "--format=%an <%ae>%x00%B", "HEAD")
    author = message = None
    if log and "\x00" in log:
        author, message = log.split("\x00", 1)
        author, message = author.strip() or None, message.strip() or None
    return GitInfo(
        repository=_clean(repository, 2048) or root,
        commit=commit,
        branch=_clean(branch, 1024),
        dirty=dirty,
        root=root,
        author=_clean(author, 1024),
        message=_clean(message, 65_536),
    )


def _clean(text: Optional[str], max_bytes: int) -> Optional[str]:
    """Text the server accepts: no control characters but tab/newline/CR, at most `max_bytes`
    of UTF-8 (cut on a character boundary)."""
    if text is None:
        return None
    text = "".join(c for c in text if not ((ord(c) < 32 and c not in "\t\n\r") or 127 <= ord(c) <= 159))
    data = text.encode("utf-8", "replace")
    if len(data) > max_bytes:
        text = data[:max_bytes].decode("utf-8", "ignore")
    return text or None
