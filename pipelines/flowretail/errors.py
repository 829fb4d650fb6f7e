"""Errors raised by the Flow Retail client. Messages name the operation, page and field, never the token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self


class FlowRetailError(Exception):
    """Base class for everything the client raises on purpose."""

    def redacted(self, scrub: Callable[[str], str]) -> Self:
        """This error with ``scrub`` applied to its message and every text attribute (``detail``, ...).

        Messages quote what the server sent (error bodies, schema-violating values), which may echo
        the token; the client passes every error it raises through here.
        """
        self.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in self.args)
        for name, value in vars(self).items():
            if isinstance(value, str):
                setattr(self, name, scrub(value))
        return self


class UnsafeIdentifierError(FlowRetailError, ValueError):
    """A tenant or group uid that would change the meaning of a URL path; no request was sent."""

    def __init__(self, kind: str, value: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(
            f"{kind} {shown!r} is not a valid UID (allowed: letters, digits, '-' and '_'); no request was sent"
        )
        self.kind = kind
        self.value = value


class SpecViolationError(FlowRetailError):
    """A response that breaks the OpenAPI spec of its operation."""

    def __init__(self, operation: str, field: str, problem: str, page: int | None = None) -> None:
        where = f"{operation}" + (f" page {page}" if page is not None else "")
        super().__init__(f"{where}: response breaks the spec at field '{field}': {problem}")
        self.operation = operation
        self.field = field
        self.problem = problem
        self.page = page

    def in_context(self, what: str) -> SpecViolationError:
        """The same error, saying which list it was reading (e.g. which tenant's group)."""
        if what not in self.args[0]:
            self.args = (f"{self.args[0]} (reading {what})",)
        return self


class ApiStatusError(FlowRetailError):
    """The API answered with a status the operation does not succeed with."""

    def __init__(self, operation: str, status_code: int, detail: str, page: int | None = None) -> None:
        where = f"{operation}" + (f" page {page}" if page is not None else "")
        super().__init__(f"{where}: HTTP {status_code}: {detail}")
        self.operation = operation
        self.status_code = status_code
        self.detail = detail
        self.page = page


class BadRequestError(ApiStatusError):
    """400: the request was refused as invalid; repeating it cannot help."""


class AuthenticationError(ApiStatusError):
    """401 or 403: the token is missing, wrong, revoked or lacks a permission."""


class NotFoundError(ApiStatusError):
    """404: the tenant, group or customer does not exist (any more)."""


class ConflictError(ApiStatusError):
    """409: a group with the requested uid already exists."""


class RetriesExhaustedError(FlowRetailError):
    """A retryable failure kept happening until the attempt or wait budget ran out."""

    def __init__(self, operation: str, attempts: int, cause: str) -> None:
        super().__init__(f"{operation}: gave up after {attempts} attempts; last error: {cause}")
        self.operation = operation
        self.attempts = attempts
        self.cause = cause


class PagingInconsistentError(FlowRetailError):
    """The list kept changing while it was paged, so no consistent snapshot could be read."""

    def __init__(self, what: str, expected: int, seen: int, attempts: int) -> None:
        super().__init__(
            f"{what}: paged {seen} unique items but the API reported totalCount {expected}; "
            f"the data kept changing during {attempts} scans"
        )
        self.what = what
        self.expected = expected
        self.seen = seen
        self.attempts = attempts
