"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Every client mistake maps to a 4xx status; an unexpected exception is a bug and becomes a 500
whose detail says nothing about internals (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from medledger.chain.errors import (
    CodecError,
    DuplicateTxError,
    InvalidBlockError,
    InvalidTxError,
    MalformedTxError,
    MempoolFullError,
    NotFoundError,
    TxRejectedError,
    TxTooLargeError,
)
from medledger.errors import MedledgerError
from medledger.node.backpressure import OverloadedError
from medledger.node.errors import BadRequestError

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Most specific first: the first matching class gives the status.
_STATUS: tuple[tuple[type[MedledgerError], int, str], ...] = (
    (BadRequestError, 400, "Bad request"),
    (MalformedTxError, 400, "Malformed transaction"),
    (CodecError, 400, "Malformed data"),
    (TxTooLargeError, 413, "Transaction too large"),
    (DuplicateTxError, 409, "Duplicate transaction"),
    (TxRejectedError, 422, "Transaction rejected by the application"),
    (InvalidTxError, 422, "Invalid transaction"),
    (InvalidBlockError, 422, "Invalid block"),
    (MempoolFullError, 429, "Too many pending transactions"),
    (NotFoundError, 404, "Not found"),
)


def problem_response(
    status: int, title: str, detail: str, *, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"type": f"urn:medledger:problem:{code}", "title": title, "status": status, "detail": detail}
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def status_of(error: MedledgerError) -> tuple[int, str]:
    for cls, status, title in _STATUS:
        if isinstance(error, cls):
            if isinstance(error, BadRequestError):
                return error.status, title
            return status, title
    return 500, "Internal error"


def problem_from_error(error: MedledgerError) -> web.Response:
    status, title = status_of(error)
    extra: dict[str, Any] = {}
    failures = getattr(error, "failures", None)
    if failures:
        extra["errors"] = [
            {"index": index, "code": exc.code, "status": status_of(exc)[0], "detail": exc.message}
            for index, exc in failures
        ]
    if isinstance(error, TxRejectedError):
        extra["rule"] = error.rule
    headers = None
    if isinstance(error, OverloadedError):
        headers = {"Retry-After": str(error.retry_after_s)}
        extra["retry_after_s"] = error.retry_after_s
    elif isinstance(error, MempoolFullError):
        headers = {"Retry-After": "1"}
    if status >= 500:
        return problem_response(500, title, "internal error", code="internal")
    return problem_response(status, title, error.message, code=error.code, headers=headers, **extra)
