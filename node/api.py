"""The node's REST API (aiohttp): transactions, blocks and status; and its operations endpoints.

Two applications, two addresses (DESIGN.md §7): `build_app` is the API, where every read needs a
credential (`medledger.node.auth`: the API token or a patient's signed request; the route table
below says who may call what), optionally over TLS; `build_ops_app` serves `/livez`, `/readyz`,
`/metrics` and `/status` without credentials on the operator's own address (loopback by default),
and never on the API's.

Handlers only parse, validate and hand over to the `Node`; every error goes through
`problems.problem_from_error`, so clients always get `application/problem+json` with a 4xx status
for their mistakes. Transactions may be posted as JSON (base64 of the canonical bytes) or as
msgpack (`Content-Type: application/msgpack`); blocks are served as JSON or, with
`Accept: application/msgpack`, as their canonical bytes for machines.

What clients cause (a reset connection, a malformed request line, a TLS handshake of garbage) is
not the operator's error: `ClientNoiseFilter` keeps it out of the log but for a rate-limited
one-line summary, so nobody outside can fill the disk or drown a real error (issue 9, #13).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgpack
from aiohttp import http_exceptions, web

from medledger import __version__
from medledger.chain.codec import encode, encode_primitive
from medledger.chain.errors import MalformedTxError, NotFoundError
from medledger.chain.governance import GovernedApp
from medledger.chain.limits import API_BATCH_TXS_MAX, API_BLOCK_RANGE_MAX, TX_BYTES_MAX
from medledger.chain.store import TxLocation
from medledger.chain.types import Block, Commit, compute_tx_id
from medledger.chain.validation import decode_tx
from medledger.errors import MedledgerError
from medledger.health.app import HealthApp
from medledger.node.auth import (
    API_AUTH_KEY,
    Access,
    ApiAuth,
    add_route,
    auth_middleware,
    load_api_token,
    post_challenge,
)
from medledger.node.errors import BadRequestError
from medledger.node.events_api import add_event_routes
from medledger.node.health_api import add_health_routes
from medledger.node.health_reads import add_health_read_routes
from medledger.node.node import Node, TxStatus
from medledger.node.openapi import build_openapi
from medledger.node.problems import problem_from_error, problem_response
from medledger.node.proof_api import PROOF_PAGE_SLOTS_KEY, add_proof_routes
from medledger.node.web_app import add_app_routes

log = logging.getLogger("medledger.api")

NODE_KEY = web.AppKey("node", Node)
MSGPACK = "application/msgpack"
WAIT_MS_MAX = 30_000
HEIGHT_MAX = 2**63 - 1

#: Client-caused log records are summarised at most this often (one WARNING line each time).
#: A `/v1/blocks` page stops growing once it holds this many bytes of blocks (it always holds one;
#: the client asks again from the next height): 100 full blocks would be 1.6 GB for one request.
API_BLOCKS_PAGE_BYTES_MAX: Final = 8 * 1024 * 1024
CLIENT_NOISE_SUMMARY_INTERVAL_S: Final = 60.0
#: Loggers whose records about client mistakes are summarised (aiohttp's server and access
#: loggers, asyncio's transport errors, this module's own).
CLIENT_NOISE_LOGGERS: Final = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "asyncio", "medledger.api")
#: What a client can cause by its bytes or by hanging up: never a server error.
CLIENT_CAUSED: Final[tuple[type[BaseException], ...]] = (
    ConnectionError,  # reset, broken pipe, aiohttp's ClientConnectionResetError
    http_exceptions.HttpProcessingError,  # bad request line, header too long, bad chunking
    ssl.SSLError,  # a TLS handshake of garbage, plain HTTP to the TLS port
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientNoiseFilter(logging.Filter):
    """Drops log records caused by clients; every `interval_s` one WARNING says how many.

    A record is client noise when it carries an exception of `CLIENT_CAUSED` (aiohttp logs a bad
    request line, and asyncio a reset TLS transport, as an ERROR with a traceback). Everything
    else passes untouched, so real server errors stay at ERROR with their traceback.
    """

    def __init__(self, *, interval_s: float = CLIENT_NOISE_SUMMARY_INTERVAL_S) -> None:
        super().__init__("medledger.client-noise")
        self.interval_s = interval_s
        self.suppressed = 0
        self._since_summary = 0
        self._last_summary = time.monotonic() - interval_s
        self._kinds: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, CLIENT_CAUSED):
            return True
        self.suppressed += 1
        self._since_summary += 1
        kind = type(exc).__name__
        self._kinds[kind] = self._kinds.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last_summary < self.interval_s:
            return False
        kinds = ", ".join(f"{count} {name}" for name, count in sorted(self._kinds.items()))
        record.msg = "ignored %d client-caused connection error(s) (%s); at most one such line every %.0f s"
        record.args = (self._since_summary, kinds, self.interval_s)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self._since_summary, self._kinds, self._last_summary = 0, {}, now
        return True


_NOISE_FILTER: Final = ClientNoiseFilter()


def install_client_noise_filter() -> ClientNoiseFilter:
    """Attach the process's one `ClientNoiseFilter` to the loggers clients can reach (idempotent)."""
    for name in CLIENT_NOISE_LOGGERS:
        target = logging.getLogger(name)
        if _NOISE_FILTER not in target.filters:
            target.addFilter(_NOISE_FILTER)
    return _NOISE_FILTER


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except ConnectionError:
        # The client hung up (e.g. while its body was read): nobody to answer, nothing to log
        # above debug; aiohttp drops the connection when it cannot write this.
        log.debug("client went away during %s %s", request.method, route_name)
        response = problem_response(400, "Bad request", "the connection was lost", code="client_gone")
    except MedledgerError as exc:
        response = problem_from_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(
            exc.status,
            exc.reason,
            exc.text or exc.reason,
            code=exc.reason.lower().replace(" ", "_"),
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, route_name)
        response = problem_response(500, "Internal error", "internal error", code="internal")
    node.metrics.api_requests.labels(route_name, str(response.status)).inc()
    return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _is_msgpack(request: web.Request) -> bool:
    return request.content_type in (MSGPACK, "application/x-msgpack")


def _wants_msgpack(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return MSGPACK in accept or "application/x-msgpack" in accept


async def _read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequestError(
            f"unsupported content type: use application/json or {MSGPACK}",  # never echo the header
            status=415,
        )
    try:
        data = json.loads(await request.read())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object")
    return data


def _b64_tx(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequestError(f"{where} must be a base64 string")
    if len(value) > (TX_BYTES_MAX * 4) // 3 + 8:
        raise BadRequestError(f"{where} exceeds {TX_BYTES_MAX} bytes", status=413)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{where} is not valid base64") from None


def _is_decimal(value: str, max_digits: int) -> bool:
    """ASCII digits only (`str.isdigit` also accepts '²' and other scripts' digits)."""
    return re.fullmatch(f"[0-9]{{1,{max_digits}}}", value) is not None


def _wait_ms(request: web.Request) -> int:
    raw = request.query.get("wait_ms", "0")
    if not _is_decimal(raw, 6) or int(raw) > WAIT_MS_MAX:
        raise BadRequestError(f"wait_ms must be an integer in [0, {WAIT_MS_MAX}]")
    return int(raw)


def _location_json(location: TxLocation) -> dict[str, Any]:
    return {
        "height": location.height,
        "index": location.index,
        "result": {"ok": bool(location.ok), "code": location.code},
    }


def _status_json(status: TxStatus) -> dict[str, Any]:
    body: dict[str, Any] = {"tx_id": status.tx_id.hex(), "status": status.status}
    if status.location is not None:
        body.update(_location_json(status.location))
    return body


async def _submit(request: web.Request, raws: list[bytes]) -> list[dict[str, Any]]:
    node = request.app[NODE_KEY]
    wait_ms = _wait_ms(request)
    tx_ids = await node.submit(raws)
    committed = await node.wait_committed(tx_ids, wait_ms / 1000) if wait_ms else {}
    results = []
    for tx_id in tx_ids:
        location = committed.get(tx_id)
        if location is None:
            results.append({"tx_id": tx_id.hex(), "status": "pending"})
        else:
            results.append({"tx_id": tx_id.hex(), "status": "committed", **_location_json(location)})
    return results


async def post_tx(request: web.Request) -> web.Response:
    if _is_msgpack(request):
        raw = await request.read()
    else:
        raw = _b64_tx((await _read_json_object(request)).get("tx"), "tx")
    (result,) = await _submit(request, [raw])
    return _json(result, 200 if result["status"] == "committed" else 202)


async def post_tx_batch(request: web.Request) -> web.Response:
    raws: list[bytes]
    if _is_msgpack(request):
        body = await request.read()
        try:
            items = msgpack.unpackb(
                body,
                raw=False,
                max_array_len=API_BATCH_TXS_MAX,
                max_bin_len=TX_BYTES_MAX + 1,
                max_str_len=0,
                max_map_len=0,
                max_ext_len=0,
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BadRequestError(f"the body is not a msgpack array of transactions: {exc}") from None
        if not isinstance(items, list) or not all(type(i) is bytes for i in items):
            raise BadRequestError("the body must be a msgpack array of binary transactions")
        raws = items
    else:
        txs = (await _read_json_object(request)).get("txs")
        if not isinstance(txs, list):
            raise BadRequestError('the body must be {"txs": [base64, ...]}')
        if len(txs) > API_BATCH_TXS_MAX:
            raise BadRequestError(f"a batch holds at most {API_BATCH_TXS_MAX} transactions")
        raws = [_b64_tx(t, f"txs[{i}]") for i, t in enumerate(txs)]
    if not raws:
        raise BadRequestError("the batch is empty")
    results = await _submit(request, raws)
    all_committed = all(r["status"] == "committed" for r in results)
    return _json({"results": results}, 200 if all_committed else 202)


def _hex_id(value: str, what: str) -> bytes:
    # bytes.fromhex skips whitespace, so the shape is checked first.
    if re.fullmatch("[0-9a-fA-F]{64}", value) is None:
        raise BadRequestError(f"{what} must be 64 hex characters")
    return bytes.fromhex(value)


async def get_tx(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    tx_id = _hex_id(request.match_info["tx_id"], "tx id")
    status = node.get_tx_status(tx_id)
    if status is None:
        raise NotFoundError("no pending or committed transaction has this id")
    return _json(_status_json(status))


def _height(value: str, what: str) -> int:
    if not _is_decimal(value, 19) or not 1 <= int(value) <= HEIGHT_MAX:
        raise BadRequestError(f"{what} must be a positive integer")
    return int(value)


def block_json(block: Block, commit: Commit) -> dict[str, Any]:
    header = block.header
    txs: list[dict[str, Any]] = []
    for raw in block.txs:
        try:
            tx, tx_id = decode_tx(raw)
        except MalformedTxError:  # cannot happen for a committed tx; never fail a read on it
            txs.append({"id": compute_tx_id(raw).hex(), "raw": base64.b64encode(raw).decode()})
            continue
        txs.append(
            {
                "id": tx_id.hex(),
                "kind": tx.kind,
                "sender": tx.sender.hex(),
                "nonce": tx.nonce,
                "timestamp_ms": tx.timestamp_ms,
                "body": base64.b64encode(tx.body).decode(),
                "signature": tx.signature.hex(),
            }
        )
    return {
        "height": header.height,
        "hash": block.hash().hex(),
        "header": {
            "chain_id": header.chain_id,
            "height": header.height,
            "round": header.round,
            "parent_hash": header.parent_hash.hex(),
            "time_ms": header.time_ms,
            "proposer": header.proposer.hex(),
            "tx_count": header.tx_count,
            "tx_root": header.tx_root.hex(),
            "state_root": header.state_root.hex(),
            "validators_hash": header.validators_hash.hex(),
            "next_validators_hash": header.next_validators_hash.hex(),
        },
        "txs": txs,
        "commit": {
            "height": commit.height,
            "round": commit.round,
            "block_hash": commit.block_hash.hex(),
            "signatures": [
                {"validator": s.validator.hex(), "signature": s.signature.hex()} for s in commit.signatures
            ],
        },
    }


def _load_block(node: Node, height: int) -> tuple[bytes, Block, Commit]:
    store = node.store
    raw = store.get_block_raw(height)
    block = store.get_block(height)
    commit = store.get_commit(height)
    if raw is None or block is None or commit is None:
        raise NotFoundError(f"no block at height {height} (latest is {store.height})")
    return raw, block, commit


async def get_block(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    height = _height(request.match_info["height"], "height")
    async with request.app[PROOF_PAGE_SLOTS_KEY]:
        return await asyncio.to_thread(_build_block_answer, node, height, _wants_msgpack(request))


def _build_block_answer(node: Node, height: int, packed: bool) -> web.Response:
    raw, block, commit = _load_block(node, height)
    if packed:
        return web.Response(
            body=encode_primitive({"block": raw, "commit": encode(commit)}), content_type=MSGPACK
        )
    return _json(block_json(block, commit))


async def get_blocks(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    start = _height(request.query.get("from", "1"), "from")
    latest = node.store.height
    default_end = min(start + API_BLOCK_RANGE_MAX - 1, max(latest, start))
    end = _height(request.query.get("to", str(default_end)), "to")
    if end < start:
        raise BadRequestError("to must not be below from")
    if end - start + 1 > API_BLOCK_RANGE_MAX:
        raise BadRequestError(f"a range holds at most {API_BLOCK_RANGE_MAX} blocks")
    end = min(end, latest)
    packed = _wants_msgpack(request)
    # A range of full blocks is 1.6 GB: it is read and encoded in a worker thread, a few at a time
    # (any registered patient may ask), and ends early once it holds `API_BLOCKS_PAGE_BYTES_MAX`.
    async with request.app[PROOF_PAGE_SLOTS_KEY]:
        return await asyncio.to_thread(_build_blocks_page, node, start, end, latest, packed)


def _build_blocks_page(node: Node, start: int, end: int, latest: int, packed: bool) -> web.Response:
    loaded: list[tuple[bytes, Block, Commit]] = []
    size = 0
    for height in range(start, end + 1):
        loaded.append(_load_block(node, height))
        size += len(loaded[-1][0])
        if size >= API_BLOCKS_PAGE_BYTES_MAX:
            break  # a page holds at least one block; the client asks again from the next height
    if packed:
        body = encode_primitive([{"block": raw, "commit": encode(commit)} for raw, _, commit in loaded])
        return web.Response(body=body, content_type=MSGPACK)
    return _json({"latest_height": latest, "blocks": [block_json(b, c) for _, b, c in loaded]})


async def get_status(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    store = node.store
    validators = node.reactor.validators if node.reactor is not None else node.genesis.validators
    return _json(
        {
            "node": node.config.node.name,
            "version": __version__,
            "chain_id": node.genesis.chain_id,
            "height": store.height,
            "latest_block_hash": store.last_block_hash.hex(),
            "latest_block_time_ms": store.last_block_time_ms,
            "state_root": store.state_root.hex(),
            "validator": validators.contains(node.identity.public.sign_key),
            "validator_key": node.identity.public.sign_key.hex(),
            "validators": len(validators),
            "peers": len(node.peers.links) if node.peers is not None else 0,
            "round": node.reactor.core.round if node.reactor is not None else 0,
            "sync_lag_blocks": node.reactor.sync_lag if node.reactor is not None else 0,
            "last_commit_time_ms": node.last_commit_time_ms,
            "mempool": {"txs": len(node.mempool), "bytes": node.mempool.size_bytes},
            "uptime_s": round(time.monotonic() - node.started_at, 3),
        }
    )


async def get_livez(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    ready = node.is_ready
    body = {
        "status": "ready" if ready else "not ready",
        "peers": len(node.peers.links) if node.peers is not None else 0,
        "sync_lag_blocks": node.reactor.sync_lag if node.reactor is not None else 0,
    }
    return _json(body, 200 if ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.Response(
        body=node.render_metrics(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def get_openapi(request: web.Request) -> web.Response:
    return _json(build_openapi(access_of=request.app[API_AUTH_KEY].access_of))


async def get_health_openapi(request: web.Request) -> web.Response:
    return _json(build_openapi(health=True, access_of=request.app[API_AUTH_KEY].access_of))


def build_app(node: Node) -> web.Application:
    """The API: every read route needs the API token or a patient's signed request."""
    install_client_noise_filter()
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware], client_max_size=node.config.api.max_body_bytes
    )
    app[NODE_KEY] = node
    app[API_AUTH_KEY] = ApiAuth(
        token=load_api_token(node.config.api_token_file),
        chain_id=node.genesis.chain_id,
        clock_ms=node.clock_ms,
    )
    is_health = isinstance(node.app.inner if isinstance(node.app, GovernedApp) else node.app, HealthApp)
    # Who may call what: the one table of the core routes (the health routes have their own).
    add_route(app, "POST", "/v1/auth/challenge", post_challenge, Access.PUBLIC)
    add_route(app, "POST", "/v1/txs", post_tx, Access.PUBLIC)
    add_route(app, "POST", "/v1/txs/batch", post_tx_batch, Access.PUBLIC)
    add_route(app, "GET", "/v1/txs/{tx_id}", get_tx, Access.READER)
    add_route(app, "GET", "/v1/blocks", get_blocks, Access.READER)
    add_route(app, "GET", "/v1/blocks/{height}", get_block, Access.READER)
    add_route(app, "GET", "/status", get_status, Access.READER)
    add_route(app, "GET", "/openapi.json", get_health_openapi if is_health else get_openapi, Access.PUBLIC)
    add_proof_routes(app, node)
    if is_health:
        add_health_routes(app, node)
        add_health_read_routes(app)
        add_event_routes(app, node)
        add_app_routes(app, node.config)
    return app


def build_ops_app(node: Node) -> web.Application:
    """The operations endpoints, without credentials, for the `[api] ops_host:ops_port` address."""
    install_client_noise_filter()
    app = web.Application(middlewares=[problem_middleware], client_max_size=1024)
    app[NODE_KEY] = node
    app.router.add_get("/livez", get_livez)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/status", get_status)
    return app
