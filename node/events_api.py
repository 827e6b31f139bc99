"""Event routes (DESIGN.md §8, docs/adr/0015-ledger-events.md): ledger events for their audience.

- `GET /v1/events?after=N&limit=L`: the events after number `N` (`health.events.compute_seq`),
  in chain order, at most `L`, scanning at most `EVENTS_SCAN_BLOCKS_MAX` blocks; `next` is where
  to continue (the last event sent, or the end of the last block scanned), so an empty page still
  moves the cursor and no call walks the whole chain.
- `GET /v1/events/stream`: the same events as Server-Sent Events (`id:` is the event number, so a
  browser's `EventSource` resumes with `Last-Event-ID`; `?after=N` does the same for other
  clients), with a comment line every `heartbeat_s` seconds (default 15) while nothing happens.

Who sees what: the API token is the institution running the node and sees the events that concern
it (`LedgerEvent.is_for_institution` with the node's signing key); a patient's signed request sees
the patient's own events. Both are `Access.READER` routes: the filter is by principal, here.

A stream outlives the request that opened it, so its right is checked again for each page it sends
(after the page is read, at the tip that page came from or a later one): a representative removed
on chain, or a patient signer who no longer acts for the patient, gets nothing of that page and the
stream ends. Streams are limited: `[api] event_streams_per_principal` open at once per principal
(the token; a patient's signing key) and `[api] event_streams_max` signed streams per node (the
token's are not counted there: self-registered patients cannot lock the institution out); beyond,
`429` with `Retry-After`. A stream's slot is freed when it ends or its client goes away.

Events are derived from the committed blocks and the state's fixed facts (`health.events`; a
block's grant expiries from its time window, so the parent block's time is read too), in a
worker thread (a block of 16 MB is decoded there), a few requests at a time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
from typing import Any, Final

from aiohttp import web

from medledger.chain.errors import InvalidTxError
from medledger.chain.execution import ExecutedBlock
from medledger.chain.types import Block, TxId, compute_tx_id
from medledger.chain.validation import decode_tx
from medledger.health.errors import HealthStateError
from medledger.health.events import (
    EVENT_INDEX_MAX,
    EVENT_KINDS,
    ID_FIELDS,
    SEQ_MAX,
    TX_INDEX_MAX,
    LedgerEvent,
    compute_block_events,
    compute_seq,
    get_seq_height,
)
from medledger.node.auth import API_AUTH_KEY, Access, Principal, add_route, get_principal
from medledger.node.config import ApiSection
from medledger.node.errors import BadRequestError
from medledger.node.mqtt import add_mqtt_publisher
from medledger.node.node import Node
from medledger.node.problems import problem_response

#: Most events one page holds.
EVENTS_PAGE_MAX: Final = 1000
EVENTS_PAGE_DEFAULT: Final = 100
#: Most blocks one page scans (a page over empty blocks stops here and says where to go on).
EVENTS_SCAN_BLOCKS_MAX: Final = 1000
#: Blocks whose events are kept in memory (recent blocks are asked for by every subscriber).
EVENTS_CACHE_BLOCKS_MAX: Final = 4096
#: Seconds between SSE comment lines while no event arrives (proxies close silent streams);
#: a client may ask for another interval with `heartbeat_s`.
EVENTS_HEARTBEAT_S_DEFAULT: Final = 15
EVENTS_HEARTBEAT_S_MAX: Final = 300
#: How often a stream looks for a new block, in seconds.
EVENTS_POLL_S: Final = 0.1
#: Pages built at once (each runs in a worker thread).
EVENTS_PAGES_CONCURRENT_MAX: Final = 2
SEQ_DIGITS_MAX: Final = 20
#: Executed blocks kept for the event derivation (a follower is at most a few blocks behind).
RECENT_BLOCKS_MAX: Final = 16
#: Seconds a client refused a stream (429) is told to wait before it tries again.
EVENTS_STREAM_RETRY_AFTER_S: Final = 5
#: The comment line a stream ends with when its principal lost the right to it.
SSE_ACCESS_ENDED: Final = b": access ended\n\n"


class EventLog:
    """The node's events, derived block by block from its store, with a bounded cache."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._cache: collections.OrderedDict[int, tuple[LedgerEvent, ...]] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: The latest committed blocks as the node executed them: their events are derived without
        #: reading the block and its txs' locations back from the store.
        self._recent: collections.OrderedDict[int, ExecutedBlock] = collections.OrderedDict()
        node.commit_listeners.append(self._note_committed)

    def _note_committed(self, executed: ExecutedBlock) -> None:
        with self._lock:
            self._recent[executed.block.header.height] = executed
            while len(self._recent) > RECENT_BLOCKS_MAX:
                self._recent.popitem(last=False)

    def _read_block(self, height: int) -> tuple[Block, list[tuple[bytes, TxId, bool]]] | None:
        """A committed block and, for each tx, its bytes, id and whether its rules passed."""
        with self._lock:
            executed = self._recent.get(height)
        if executed is not None:
            results = executed.execution.results
            block = executed.block
            return block, [
                (raw, tx_id, bool(results[i].ok))
                for i, (raw, tx_id) in enumerate(zip(block.txs, executed.tx_ids, strict=True))
            ]
        store = self.node.store
        stored = store.get_block(height)
        if stored is None:
            return None
        txs = []
        for raw in stored.txs:
            tx_id = compute_tx_id(raw)
            location = store.get_tx_location(tx_id)
            txs.append((raw, tx_id, location is not None and location.height == height and bool(location.ok)))
        return stored, txs

    def get_block_events(self, height: int) -> tuple[LedgerEvent, ...]:
        """The events of committed block `height` (the same on every node that committed it)."""
        with self._lock:
            cached = self._cache.get(height)
            if cached is not None:
                self._cache.move_to_end(height)
                return cached
        read = self._read_block(height)
        if read is None:
            return ()
        block, raw_txs = read
        txs = []
        for raw, tx_id, ok in raw_txs:
            try:
                tx, _ = decode_tx(raw, tx_id=tx_id)
            except InvalidTxError:
                continue  # a committed block's txs decode; one that does not carries no event
            txs.append((tx, tx_id, ok))
        events = tuple(
            compute_block_events(
                self.node.store,
                height,
                block.header.time_ms,
                txs,
                parent_time_ms=self._get_parent_time_ms(height),
            )
        )
        with self._lock:
            self._cache[height] = events
            while len(self._cache) > EVENTS_CACHE_BLOCKS_MAX:
                self._cache.popitem(last=False)
        return events

    def _get_parent_time_ms(self, height: int) -> int:
        """The time of block `height - 1` (the genesis time under block 1): where its window opens."""
        if height <= 1:
            return self.node.genesis.genesis_time_ms
        with self._lock:
            recent = self._recent.get(height - 1)
        if recent is not None:
            return recent.block.header.time_ms
        parent = self.node.store.get_block(height - 1)
        if parent is None:
            raise HealthStateError(f"committed block {height - 1} is missing from the store")
        return parent.header.time_ms

    def list_events(
        self, after: int, limit: int, audience: Principal | None
    ) -> tuple[list[LedgerEvent], int]:
        """Events after `after` that `audience` may see (None: all), and the cursor to go on from."""
        latest = self.node.store.height
        start = max(get_seq_height(after), 1)
        found: list[LedgerEvent] = []
        cursor = after
        for height in range(start, min(latest, start + EVENTS_SCAN_BLOCKS_MAX - 1) + 1):
            for event in self.get_block_events(height):
                if event.seq <= after or not self._is_visible(event, audience):
                    continue
                found.append(event)
                if len(found) >= limit:
                    return found, event.seq
            cursor = max(cursor, compute_seq(height, TX_INDEX_MAX, EVENT_INDEX_MAX))
        return found, cursor

    def _is_visible(self, event: LedgerEvent, audience: Principal | None) -> bool:
        if audience is None:
            return True
        if audience.kind == "token":
            return event.is_for_institution(self.node.identity.public.sign_key)
        return event.is_for_patient(audience.patient_id)


class StreamSlots:
    """Open event streams, counted per principal and in all, each count capped.

    The node's cap counts the patients' streams (a patient, or a representative, signs): anyone may
    register as a patient, so without this a few dozen self-registered keys could take every slot
    and lock the institution out of its own node. The token's streams are bounded by its own
    per-principal cap only.
    """

    def __init__(self, *, per_principal: int, total: int) -> None:
        self.per_principal = per_principal
        self.total = total
        self._open: collections.Counter[tuple[str, bytes]] = collections.Counter()
        self._signed = 0

    @property
    def open(self) -> int:
        return self._open.total()

    def acquire(self, key: tuple[str, bytes]) -> str | None:
        """Take a slot for `key`; None if taken, else why not (the caller answers 429)."""
        if self._open[key] >= self.per_principal:
            return (
                f"at most {self.per_principal} event streams may be open at once per principal; "
                "close one first"
            )
        signed = key[0] != TOKEN_STREAMS
        if signed and self._signed >= self.total:
            return f"this node serves at most {self.total} event streams at once; try again later"
        self._open[key] += 1
        self._signed += signed
        return None

    def release(self, key: tuple[str, bytes]) -> None:
        self._open[key] -= 1
        self._signed -= key[0] != TOKEN_STREAMS
        if self._open[key] <= 0:
            del self._open[key]


TOKEN_STREAMS: Final = "token"


def get_stream_key(principal: Principal | None) -> tuple[str, bytes]:
    """Whose slot a stream takes: the token's, or the signing key's (a patient or representative)."""
    if principal is None or principal.kind == "token":
        return (TOKEN_STREAMS, b"")
    return ("signer", principal.signer)


EVENT_LOG_KEY: Final = web.AppKey("event_log", EventLog)
EVENT_PAGE_SLOTS_KEY: Final = web.AppKey("event_page_slots", asyncio.Semaphore)
EVENT_STREAM_SLOTS_KEY: Final = web.AppKey("event_stream_slots", StreamSlots)


def _parse_seq(raw: str, what: str) -> int:
    if re.fullmatch(f"[0-9]{{1,{SEQ_DIGITS_MAX}}}", raw) is None or int(raw) > SEQ_MAX:
        raise BadRequestError(f"{what} must be an event number in [0, {SEQ_MAX}]")
    return int(raw)


def _parse_limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(EVENTS_PAGE_DEFAULT))
    if re.fullmatch("[0-9]{1,4}", raw) is None or not 1 <= int(raw) <= EVENTS_PAGE_MAX:
        raise BadRequestError(f"limit must be an integer in [1, {EVENTS_PAGE_MAX}]")
    return int(raw)


async def _list(request: web.Request, after: int, limit: int) -> tuple[list[LedgerEvent], int]:
    log = request.app[EVENT_LOG_KEY]
    async with request.app[EVENT_PAGE_SLOTS_KEY]:
        return await asyncio.to_thread(log.list_events, after, limit, get_principal(request))


async def get_events(request: web.Request) -> web.Response:
    after = _parse_seq(request.query.get("after", "0"), "after")
    limit = _parse_limit(request)
    events, cursor = await _list(request, after, limit)
    # As for a stream's page: the signer was checked when the request came in, and a block that
    # removed them may have been committed while the page was read.
    if not is_still_allowed(request, get_principal(request)):
        return problem_response(
            403,
            "Forbidden",
            "the signing key is neither the registered patient's nor one of their representatives'",
            code="not_patient",
        )
    body: dict[str, Any] = {
        "events": [e.to_payload() for e in events],
        "next": cursor,
        "latest_height": request.app[EVENT_LOG_KEY].node.store.height,
    }
    return web.Response(text=json.dumps(body), content_type="application/json")


def format_sse(event: LedgerEvent) -> bytes:
    """One SSE message: `id` the event number, `event` its kind, `data` its payload (one line)."""
    data = json.dumps(event.to_payload(), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


def is_still_allowed(request: web.Request, principal: Principal | None) -> bool:
    """Whether the stream's principal may still read its events at the current tip.

    The token always may; a patient signer must still be the patient or one of their current
    representatives (the check a new request passes in `node.auth`).
    """
    if principal is None or principal.kind == "token":
        return True
    check = request.app[API_AUTH_KEY].patient_check
    return check is not None and check(principal.signer, principal.patient_id)


def _is_client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def get_event_stream(request: web.Request) -> web.StreamResponse:
    last_id = request.headers.get("Last-Event-ID")
    after = (
        _parse_seq(last_id, "Last-Event-ID")
        if last_id
        else _parse_seq(request.query.get("after", "0"), "after")
    )
    raw_beat = request.query.get("heartbeat_s", str(EVENTS_HEARTBEAT_S_DEFAULT))
    if re.fullmatch("[0-9]{1,3}", raw_beat) is None or not 1 <= int(raw_beat) <= EVENTS_HEARTBEAT_S_MAX:
        raise BadRequestError(f"heartbeat_s must be an integer in [1, {EVENTS_HEARTBEAT_S_MAX}]")
    slots = request.app[EVENT_STREAM_SLOTS_KEY]
    key = get_stream_key(get_principal(request))
    metrics = request.app[EVENT_LOG_KEY].node.metrics
    refusal = slots.acquire(key)
    if refusal is not None:
        metrics.event_streams_refused.inc()
        return problem_response(
            429,
            "Too many requests",
            refusal,
            code="too_many_streams",
            headers={"Retry-After": str(EVENTS_STREAM_RETRY_AFTER_S)},
        )
    metrics.event_streams.set(slots.open)
    try:
        return await _stream_events(request, after, int(raw_beat))
    finally:
        slots.release(key)
        metrics.event_streams.set(slots.open)


async def _stream_events(request: web.Request, after: int, heartbeat_s: int) -> web.StreamResponse:
    node = request.app[EVENT_LOG_KEY].node
    principal = get_principal(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b": medledger events\n\n")
    loop = asyncio.get_running_loop()
    last_beat = loop.time()
    seen_height = -1
    while not _is_client_gone(request):
        height = node.store.height
        if height != seen_height or get_seq_height(after) < height:
            events, cursor = await _list(request, after, EVENTS_PAGE_MAX)
            # Checked after the page was read: the state is then at least at the page's last block
            # (a block's state is written before its height is published), so a representative
            # removed in any block of this page gets none of it.
            if not is_still_allowed(request, principal):
                await response.write(SSE_ACCESS_ENDED)
                await response.write_eof()
                return response
            for event in events:
                await response.write(format_sse(event))
            after = cursor
            if events:
                last_beat = loop.time()
            seen_height = height
            if get_seq_height(after) < height:
                continue  # more blocks to scan
        if loop.time() - last_beat >= heartbeat_s:
            await response.write(b": heartbeat\n\n")
            last_beat = loop.time()
        await asyncio.sleep(EVENTS_POLL_S)
    return response


def add_event_routes(app: web.Application, node: Node) -> None:
    """Register the event routes (health nodes: one call from `node.api.build_app`)."""
    app[EVENT_LOG_KEY] = EventLog(node)
    add_mqtt_publisher(app, node, app[EVENT_LOG_KEY])  # when `[mqtt] url` is set (ADR 0015)
    app[EVENT_PAGE_SLOTS_KEY] = asyncio.Semaphore(EVENTS_PAGES_CONCURRENT_MAX)
    app[EVENT_STREAM_SLOTS_KEY] = StreamSlots(
        per_principal=node.config.api.event_streams_per_principal, total=node.config.api.event_streams_max
    )
    add_route(app, "GET", "/v1/events", get_events, Access.READER)
    add_route(app, "GET", "/v1/events/stream", get_event_stream, Access.READER)


_PROBLEM_SCHEMA: Final = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}
_HEX_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SEQ: Final = {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}
_STREAMS_PER_PRINCIPAL: Final = ApiSection().event_streams_per_principal
_STREAMS_MAX: Final = ApiSection().event_streams_max


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}


def events_openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the event routes (merged into a health node's document)."""
    event = {
        "type": "object",
        "required": ["seq", "kind", "height", "tx_index", "event_index", "tx_id", "time_ms"],
        "additionalProperties": False,
        "properties": {
            "seq": _SEQ,
            "kind": {"type": "string", "enum": sorted(EVENT_KINDS)},
            "height": {"type": "integer", "minimum": 1},
            "tx_index": {"type": "integer", "minimum": 0, "maximum": TX_INDEX_MAX},
            "event_index": {"type": "integer", "minimum": 0, "maximum": EVENT_INDEX_MAX},
            "tx_id": _HEX_ID,
            "time_ms": {"type": "integer", "minimum": 0},
            **{name: _HEX_ID for name in ID_FIELDS},
        },
    }
    after = {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "Return events whose number is greater than this (0: from the start).",
        "schema": _SEQ,
    }
    return {
        "/v1/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "Ledger events after a number: the token sees its institution's, a patient "
                "(signed request) their own. Kinds and ledger ids only.",
                "parameters": [
                    after,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": EVENTS_PAGE_MAX},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of events in chain order; continue with `after=next`.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events", "next", "latest_height"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "maxItems": EVENTS_PAGE_MAX,
                                            "items": event,
                                        },
                                        "next": _SEQ,
                                        "latest_height": {"type": "integer", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Bad `after` or `limit`."),
                },
            }
        },
        "/v1/events/stream": {
            "get": {
                "operationId": "streamEvents",
                "summary": "The same events as Server-Sent Events (`id:` is the event number; resume "
                "with `Last-Event-ID` or `after`), with comment-line heartbeats.",
                "description": "Open until the client leaves, or until its principal may no longer read "
                "these events: the right is checked again for each page sent (a representative removed "
                "on chain, a patient signer who no longer acts for the patient), and the stream then "
                "ends with the comment `: access ended` and nothing of that page. At most "
                f"{_STREAMS_PER_PRINCIPAL} streams are open at once per principal (the API token; a "
                f"signing key) and {_STREAMS_MAX} signed (patients' and representatives') streams per "
                "node by default (`[api] event_streams_per_principal`, `event_streams_max`); beyond, "
                "`429` with `Retry-After`.",
                "parameters": [
                    after,
                    {
                        "name": "heartbeat_s",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": EVENTS_HEARTBEAT_S_MAX},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": f"^[0-9]{{1,{SEQ_DIGITS_MAX}}}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "An endless `text/event-stream`.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _problem("Bad `after` or `Last-Event-ID`."),
                    "429": {
                        **_problem("Too many streams open (per principal or on the node); retry later."),
                        "headers": {
                            "Retry-After": {
                                "description": "Seconds to wait before trying again.",
                                "schema": {"type": "integer", "minimum": 1},
                            }
                        },
                    },
                },
            }
        },
    }
