"""The OpenAPI 3.0 document the node serves at `/openapi.json`; it describes every route of `api.py`."""

from __future__ import annotations

from typing import Any

from medledger import __version__
from medledger.chain.limits import API_BATCH_TXS_MAX, API_BLOCK_RANGE_MAX

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


def _ok(description: str, schema: dict[str, Any], *extra_types: str) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    for media_type in extra_types:
        content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"description": description, "content": content}


_WAIT = {
    "name": "wait_ms",
    "in": "query",
    "required": False,
    "description": "Wait up to this many milliseconds for the transactions to commit.",
    "schema": {"type": "integer", "minimum": 0, "maximum": 30000},
}
_SUBMIT_ERRORS = {
    "400": _problem("Malformed request or transaction."),
    "409": _problem("The transaction is already pending or committed (replay)."),
    "413": _problem("The transaction or body is too large."),
    "415": _problem("Unsupported content type."),
    "422": _problem(
        "The transaction is invalid (wrong chain, bad signature, stale, rejected by the application)."
    ),
    "429": _problem("The mempool is full; retry after the Retry-After delay."),
}


def build_openapi() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "medledger node API",
            "version": __version__,
            "description": "Submit signed transactions, read blocks and the node's status. Every error "
            "is application/problem+json (RFC 9457).",
        },
        "paths": {
            "/v1/txs": {
                "post": {
                    "operationId": "submitTx",
                    "summary": "Submit one signed transaction.",
                    "parameters": [_WAIT],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/TxSubmission"}},
                            "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": _ok("Committed (when waiting).", {"$ref": "#/components/schemas/TxStatus"}),
                        "202": _ok("Admitted to the mempool.", {"$ref": "#/components/schemas/TxStatus"}),
                        **_SUBMIT_ERRORS,
                    },
                }
            },
            "/v1/txs/batch": {
                "post": {
                    "operationId": "submitTxBatch",
                    "summary": "Submit a batch of signed transactions: all are admitted, or none.",
                    "parameters": [_WAIT],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/TxBatch"}},
                            "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": _ok(
                            "All committed (when waiting).", {"$ref": "#/components/schemas/TxResults"}
                        ),
                        "202": _ok("Admitted to the mempool.", {"$ref": "#/components/schemas/TxResults"}),
                        **_SUBMIT_ERRORS,
                    },
                }
            },
            "/v1/txs/{tx_id}": {
                "get": {
                    "operationId": "getTx",
                    "summary": "A transaction's status.",
                    "parameters": [{"name": "tx_id", "in": "path", "required": True, "schema": _HEX64}],
                    "responses": {
                        "200": _ok("Pending or committed.", {"$ref": "#/components/schemas/TxStatus"}),
                        "400": _problem("Not a tx id."),
                        "404": _problem("Unknown transaction."),
                    },
                }
            },
            "/v1/blocks": {
                "get": {
                    "operationId": "getBlocks",
                    "summary": f"A range of at most {API_BLOCK_RANGE_MAX} blocks with their certificates.",
                    "parameters": [
                        {"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                        {"name": "to", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    ],
                    "responses": {
                        "200": _ok(
                            "The blocks that exist in the range.",
                            {
                                "type": "object",
                                "required": ["latest_height", "blocks"],
                                "properties": {
                                    "latest_height": {"type": "integer"},
                                    "blocks": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Block"},
                                    },
                                },
                            },
                            "application/msgpack",
                        ),
                        "400": _problem("Bad range."),
                    },
                }
            },
            "/v1/blocks/{height}": {
                "get": {
                    "operationId": "getBlock",
                    "summary": "One block and its commit certificate.",
                    "parameters": [
                        {
                            "name": "height",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                    "responses": {
                        "200": _ok(
                            "The block.", {"$ref": "#/components/schemas/Block"}, "application/msgpack"
                        ),
                        "400": _problem("Not a height."),
                        "404": _problem("No block at this height."),
                    },
                }
            },
            "/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "The node's chain, height and mempool.",
                    "responses": {"200": _ok("Status.", {"$ref": "#/components/schemas/Status"})},
                }
            },
            "/livez": {
                "get": {
                    "operationId": "getLivez",
                    "summary": "The process is alive.",
                    "responses": {"200": _ok("Alive.", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "getReadyz",
                    "summary": "The node is ready to serve (store open, producing).",
                    "responses": {
                        "200": _ok("Ready.", {"type": "object"}),
                        "503": _ok("Not ready.", {"type": "object"}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document.",
                    "responses": {"200": _ok("The OpenAPI document.", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object"}},
                        "rule": {"type": "string"},
                    },
                },
                "TxSubmission": {
                    "type": "object",
                    "required": ["tx"],
                    "properties": {
                        "tx": {
                            "type": "string",
                            "format": "byte",
                            "description": "base64 of the canonical signed tx",
                        }
                    },
                },
                "TxBatch": {
                    "type": "object",
                    "required": ["txs"],
                    "properties": {
                        "txs": {
                            "type": "array",
                            "maxItems": API_BATCH_TXS_MAX,
                            "items": {"type": "string", "format": "byte"},
                        }
                    },
                },
                "TxStatus": {
                    "type": "object",
                    "required": ["tx_id", "status"],
                    "properties": {
                        "tx_id": _HEX64,
                        "status": {"type": "string", "enum": ["pending", "committed"]},
                        "height": {"type": "integer"},
                        "index": {"type": "integer"},
                        "result": {
                            "type": "object",
                            "properties": {"ok": {"type": "boolean"}, "code": {"type": "string"}},
                        },
                    },
                },
                "TxResults": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/TxStatus"}}
                    },
                },
                "Block": {
                    "type": "object",
                    "required": ["height", "hash", "header", "txs", "commit"],
                    "properties": {
                        "height": {"type": "integer"},
                        "hash": _HEX64,
                        "header": {"type": "object"},
                        "txs": {"type": "array", "items": {"type": "object"}},
                        "commit": {"type": "object"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["node", "chain_id", "height"],
                    "properties": {
                        "node": {"type": "string"},
                        "chain_id": {"type": "string"},
                        "height": {"type": "integer"},
                        "latest_block_hash": {"type": "string"},
                        "state_root": {"type": "string"},
                        "mempool": {"type": "object"},
                    },
                },
            }
        },
    }
