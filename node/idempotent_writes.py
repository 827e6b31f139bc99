"""The API side of idempotency keys (`node.idempotency`): the header, the store's life, replays.

`add_idempotency_store` opens the node's table when the API starts and closes it when the API
stops (aiohttp `cleanup_ctx`); `get_idempotency_key` reads and checks the header;
`replay_write` answers a retry from what was remembered (see `node.idempotency` for the rules).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from medledger.chain.errors import DuplicateTxError, StaleTxError, TxRejectedError
from medledger.chain.store import TxLocation
from medledger.node.errors import BadRequestError
from medledger.node.idempotency import (
    IDEMPOTENCY_DIR,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_CHARS_MAX,
    REPLAYED_HEADER,
    IdempotencyStore,
    IdempotentWrite,
    is_idempotency_key,
)
from medledger.node.node import Node

IDEMPOTENCY_STORE_KEY: Final = web.AppKey("idempotency_store", IdempotencyStore)


class IdempotencyKeyReusedError(BadRequestError):
    """The key was used for another request: nothing is written (the IETF draft's 422)."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            f"this {IDEMPOTENCY_HEADER} was used for a different request (another patient or other "
            "record bytes); use a new key for a new request",
            status=422,
        )


class IdempotentRetryExpiredError(BadRequestError):
    """The remembered transaction is neither committed nor pending and can no longer be admitted."""

    code = "idempotent_retry_expired"

    def __init__(self) -> None:
        super().__init__(
            "the first request's transaction was not committed and is too old to submit again; "
            "check its record_id later, or send the record with a new key",
            status=409,
        )


def get_idempotency_key(request: web.Request) -> str | None:
    """The request's `Idempotency-Key` (None without one); a malformed key is a 400."""
    values = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not values:
        return None
    if len(values) > 1 or not is_idempotency_key(values[0]):
        raise BadRequestError(
            f"{IDEMPOTENCY_HEADER} must be one value of 1 to {IDEMPOTENCY_KEY_CHARS_MAX} visible "
            "ASCII characters (e.g. a UUID)"
        )
    return values[0]


def add_idempotency_store(app: web.Application, node: Node) -> None:
    """The node's idempotency table, open while the API runs."""
    store = IdempotencyStore(node.config.resolve(IDEMPOTENCY_DIR))
    app[IDEMPOTENCY_STORE_KEY] = store

    async def life(_: web.Application) -> AsyncIterator[None]:
        store.open()
        yield
        store.close()

    app.cleanup_ctx.append(life)


async def replay_write(
    node: Node, store: IdempotencyStore, key: str, write: IdempotentWrite, fingerprint: bytes, wait_ms: int
) -> web.Response:
    """The answer to a retry of `write`: the same record, waited for as the first request was."""
    if write.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError()
    location = node.store.get_tx_location(write.tx_id)
    if location is None and write.raw and write.tx_id not in node.mempool:
        # This node lost the transaction (a restart empties its mempool): submit the very same
        # signed bytes again, so that it can commit at most once.
        try:
            await node.submit([write.raw])
        except DuplicateTxError:
            pass  # committed or admitted meanwhile
        except StaleTxError:
            raise IdempotentRetryExpiredError() from None
    if location is None and wait_ms:
        location = (await node.wait_committed([write.tx_id], wait_ms / 1000)).get(write.tx_id)
    if location is not None and not location.ok:
        raise TxRejectedError(f"the transaction was refused in block {location.height}", rule=location.code)
    if location is not None and write.raw:
        committed = IdempotentWrite(write.fingerprint, write.tx_id, b"", write.created_ms, write.answer)
        await asyncio.to_thread(store.put, key, committed)  # the signed tx is no longer needed
    return _answer(write, location)


def _answer(write: IdempotentWrite, location: TxLocation | None) -> web.Response:
    status = "pending" if location is None else "committed"
    body: dict[str, object] = {"tx_id": write.tx_id.hex(), "status": status}
    if location is not None:
        body["height"] = location.height
    body.update(write.answer)
    return web.Response(
        status=201 if location is not None else 202,
        text=json.dumps(body),
        content_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )
