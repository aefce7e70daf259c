"""The one exception type of the SDK."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class CustodyError(Exception):
    """An error answered by the Custody server, or met while talking to it.

    ``code`` is the server's ``extensions.code`` (GraphQL) or ``error.code`` (HTTP routes):
    ``UNAUTHENTICATED``, ``FORBIDDEN``, ``NOT_FOUND``, ``INVALID_INPUT``, ``CONFLICT``,
    ``POLICY_DENIED``, ``TOO_LARGE``, ``INTERNAL``. The SDK adds its own codes for failures on the
    client side:

    - ``UNAVAILABLE``: the server could not be reached (connection refused, reset, timeout);
    - ``INVALID_RESPONSE``: the server answered something that is not the expected JSON;
    - ``INTEGRITY``: a downloaded file's SHA-256 differs from the one the server announced;
    - ``METRICS_LOST``: some logged metrics could not be stored (see ``errors``).

    ``status`` is the HTTP status when there was a response, ``errors`` the raw GraphQL errors,
    ``path`` the GraphQL path of the first error.
    """

    def __init__(
        self,
        message: str,
        code: str = "INTERNAL",
        *,
        status: Optional[int] = None,
        errors: Optional[List[Dict[str, Any]]] = None,
        path: Optional[List[Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors: List[Dict[str, Any]] = list(errors or [])
        self.path = path

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"CustodyError(code={self.code!r}, message={self.message!r}, status={self.status!r})"

    # Pickling keeps the keyword-only fields (exceptions cross process boundaries in ML code).
    def __reduce__(self):  # type: ignore[override]
        return (_rebuild, (self.message, self.code, self.status, self.errors, self.path))


def _rebuild(message: str, code: str, status: Optional[int], errors: Any, path: Any) -> CustodyError:
    return CustodyError(message, code, status=status, errors=errors, path=path)


RETRYABLE_CODES = frozenset({"UNAVAILABLE", "INTERNAL"})
