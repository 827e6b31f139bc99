"""Proof routes for light clients (ADR 0008): what a patient's device needs to verify the node.

A light client believes nothing a node says unless it verifies against the genesis it pinned, so
these routes serve the raw material of proofs, never conclusions:

- `GET /v1/proofs/genesis`: the genesis, canonically encoded (the client checks its hash).
- `GET /v1/proofs/blocks?from=H&limit=N`: consecutive committed blocks from height H, each with
  its commit certificate and, when its header announces a validator-set change, the new set. The
  client checks each block's certificate against the set it trusts and its txs against the
  header's tx root, so the page proves every tx in it and that none was dropped.
- `GET /v1/proofs/txs/{tx_id}`: one committed tx with its Merkle audit path in its block (RFC 6962),
  which the client checks against a header it already verified.

All values are base64 of canonical encodings (JSON envelope); pages are bounded in blocks and in
bytes. Pages and tx proofs are built in a worker thread, a few at a time (any registered patient
may ask for them, and one built on the event loop would stall consensus for as long as it takes).
Like every handler, these only read the store and hand errors to the problem middleware.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any, Final

from aiohttp import web

from medledger.chain.codec import encode
from medledger.chain.errors import NotFoundError
from medledger.chain.integrity import get_validators_at
from medledger.chain.types import compute_tx_id, encode_genesis
from medledger.crypto import compute_merkle_proof
from medledger.node.auth import Access, add_route
from medledger.node.errors import BadRequestError
from medledger.node.node import Node

PROOF_NODE_KEY: Final = web.AppKey("proof_node", Node)
#: Blocks one page of `/v1/proofs/blocks` holds at most.
PROOF_BLOCKS_PER_PAGE_MAX: Final = 100
#: A page stops growing once it holds this many bytes of blocks (it always holds one block).
PROOF_PAGE_BYTES_MAX: Final = 8 * 1024 * 1024
HEIGHT_DIGITS_MAX: Final = 19
#: Pages of `/v1/proofs/blocks` (and tx proofs) built at once. A page is read, decoded and encoded in a worker
#: thread (up to ~25 MB: on the event loop it would stall consensus and the peer links, and any
#: registered patient may ask); more requests wait their turn, which bounds the memory they take.
PROOF_PAGES_CONCURRENT_MAX: Final = 2
PROOF_PAGE_SLOTS_KEY: Final = web.AppKey("proof_page_slots", asyncio.Semaphore)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


def _query_int(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name, str(default))
    if re.fullmatch(f"[0-9]{{1,{HEIGHT_DIGITS_MAX}}}", raw) is None or not minimum <= int(raw) <= maximum:
        raise BadRequestError(f"{name} must be an integer in [{minimum}, {maximum}]")
    return int(raw)


async def get_genesis(request: web.Request) -> web.Response:
    node = request.app[PROOF_NODE_KEY]
    return _json({"genesis": _b64(encode_genesis(node.genesis)), "hash": node.genesis.hash().hex()})


async def get_proof_blocks(request: web.Request) -> web.Response:
    node = request.app[PROOF_NODE_KEY]
    start = _query_int(request, "from", 1, 1, 2**63 - 1)
    limit = _query_int(request, "limit", PROOF_BLOCKS_PER_PAGE_MAX, 1, PROOF_BLOCKS_PER_PAGE_MAX)
    async with request.app[PROOF_PAGE_SLOTS_KEY]:
        text = await asyncio.to_thread(_build_block_page, node, start, limit)
    return web.Response(text=text, content_type="application/json")


def _build_block_page(node: Node, start: int, limit: int) -> str:
    """One page of blocks as JSON text (runs in a worker thread; the store's reads are safe there,
    as for the reactor's answers to peers' block requests)."""
    store = node.store
    latest = store.height
    validators_at = get_validators_at(node.app, store, node.genesis)
    blocks: list[dict[str, str]] = []
    size = 0
    for height in range(start, min(latest, start + limit - 1) + 1):
        raw, block, commit = store.get_block_raw(height), store.get_block(height), store.get_commit(height)
        if raw is None or block is None or commit is None:
            break
        header = block.header
        announced = b""
        if header.next_validators_hash != header.validators_hash:
            announced = encode(validators_at(height + 1))
        blocks.append(
            {"block": _b64(raw), "commit": _b64(encode(commit)), "next_validators": _b64(announced)}
        )
        size += len(raw)
        if size >= PROOF_PAGE_BYTES_MAX:
            break
    return json.dumps({"latest_height": latest, "blocks": blocks})


async def get_tx_proof(request: web.Request) -> web.Response:
    node = request.app[PROOF_NODE_KEY]
    raw_id = request.match_info["tx_id"]
    if re.fullmatch("[0-9a-fA-F]{64}", raw_id) is None:
        raise BadRequestError("tx id must be 64 hex characters")
    tx_id = bytes.fromhex(raw_id)
    # Reading the block and hashing its txs (up to 16 MB) is a worker thread's job, as for pages.
    async with request.app[PROOF_PAGE_SLOTS_KEY]:
        answer = await asyncio.to_thread(_build_tx_proof, node, tx_id)
    return _json(answer)


def _build_tx_proof(node: Node, tx_id: bytes) -> dict[str, Any]:
    location = node.store.get_tx_location(tx_id)
    block = node.store.get_block(location.height) if location is not None else None
    if location is None or block is None or not 0 <= location.index < len(block.txs):
        raise NotFoundError("no committed transaction has this id")
    tx_ids = [compute_tx_id(raw) for raw in block.txs]
    proof = compute_merkle_proof(tx_ids, location.index)
    return {
        "height": location.height,
        "tx": _b64(block.txs[location.index]),
        "proof": {
            "index": proof.index,
            "leaf_count": proof.leaf_count,
            "path": [p.hex() for p in proof.path],
        },
    }


def add_proof_routes(app: web.Application, node: Node) -> None:
    """Register the proof routes (one call from `node.api.build_app`)."""
    app[PROOF_NODE_KEY] = node
    app[PROOF_PAGE_SLOTS_KEY] = asyncio.Semaphore(PROOF_PAGES_CONCURRENT_MAX)
    # The genesis is public (a client pins it before it has registered, and every institution
    # holds it); blocks and tx proofs carry every patient's metadata, so they need credentials.
    add_route(app, "GET", "/v1/proofs/genesis", get_genesis, Access.PUBLIC)
    add_route(app, "GET", "/v1/proofs/blocks", get_proof_blocks, Access.READER)
    add_route(app, "GET", "/v1/proofs/txs/{tx_id}", get_tx_proof, Access.READER)


_B64: Final = {"type": "string", "format": "byte"}
_PROOF_PROBLEM: Final = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROOF_PROBLEM}}}


def proof_openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the proof routes (merged into the node's document)."""
    height = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    return {
        "/v1/proofs/genesis": {
            "get": {
                "operationId": "getProofGenesis",
                "summary": "The genesis, canonically encoded, for a light client to check against its pin.",
                "responses": {
                    "200": _ok(
                        "The genesis.",
                        {
                            "type": "object",
                            "required": ["genesis", "hash"],
                            "properties": {"genesis": _B64, "hash": {"type": "string"}},
                        },
                    )
                },
            }
        },
        "/v1/proofs/blocks": {
            "get": {
                "operationId": "getProofBlocks",
                "summary": "Consecutive blocks with commit certificates and announced validator sets.",
                "parameters": [
                    {"name": "from", "in": "query", "required": False, "schema": height},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": PROOF_BLOCKS_PER_PAGE_MAX},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "A page of blocks (at most the limit, and about 8 MB).",
                        {
                            "type": "object",
                            "required": ["latest_height", "blocks"],
                            "properties": {
                                "latest_height": {"type": "integer", "minimum": 0},
                                "blocks": {
                                    "type": "array",
                                    "maxItems": PROOF_BLOCKS_PER_PAGE_MAX,
                                    "items": {
                                        "type": "object",
                                        "required": ["block", "commit", "next_validators"],
                                        "properties": {
                                            "block": _B64,
                                            "commit": _B64,
                                            "next_validators": _B64,
                                        },
                                    },
                                },
                            },
                        },
                    ),
                    "400": _problem("A bad height or limit."),
                },
            }
        },
        "/v1/proofs/txs/{tx_id}": {
            "get": {
                "operationId": "getTxProof",
                "summary": "A committed tx and its Merkle audit path in its block (RFC 6962).",
                "parameters": [
                    {
                        "name": "tx_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                    }
                ],
                "responses": {
                    "200": _ok(
                        "The tx and its inclusion proof.",
                        {
                            "type": "object",
                            "required": ["height", "tx", "proof"],
                            "properties": {
                                "height": {"type": "integer", "minimum": 1},
                                "tx": _B64,
                                "proof": {
                                    "type": "object",
                                    "required": ["index", "leaf_count", "path"],
                                    "properties": {
                                        "index": {"type": "integer", "minimum": 0},
                                        "leaf_count": {"type": "integer", "minimum": 1},
                                        "path": {"type": "array", "items": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    ),
                    "400": _problem("Not a tx id."),
                    "404": _problem("No committed tx has this id."),
                },
            }
        },
    }
