"""The node's REST API, end to end over HTTP: submission, tx and block reads, status, health, metrics,
the OpenAPI document, and every way a request can be refused.

Most tests run a real `Node` and its aiohttp app in the test's event loop (a fresh chain each);
one runs the same flow against a real node process. Every rejection goes through
`assert_rejected`, which also checks that the request left the chain and the mempool untouched.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import msgpack
import schemathesis
from node_harness import (
    DEADLINE_S,
    MSGPACK,
    PROBLEM,
    InProcessClient,
    NodeClient,
    SignedTx,
    make_home,
    serve_in_process,
    sign_kv,
    status_snapshot,
)
from prometheus_client.parser import text_string_to_metric_families

from medledger.chain.codec import decode, encode
from medledger.chain.limits import (
    API_BATCH_TXS_MAX,
    API_BLOCK_RANGE_MAX,
    BLOCK_BYTES_MAX,
    CONSENSUS_MESSAGE_BYTES_MAX,
    TX_BYTES_MAX,
    TX_CLOCK_SKEW_MS_MAX,
)
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Block, Commit, compute_tx_id
from medledger.chain.validation import validate_commit
from medledger.crypto import Identity
from medledger.node.api import build_app
from medledger.node.fixture_app import KIND_SET, encode_set_body

WAIT = "wait_ms=5000"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def submit_committed(api: InProcessClient, tx: SignedTx) -> dict[str, Any]:
    reply = await api.post_json(f"/v1/txs?{WAIT}", {"tx": tx.b64})
    assert reply.status == 200, reply
    result: dict[str, Any] = reply.json()
    assert result["status"] == "committed"
    return result


def assert_committed_result(result: dict[str, Any], tx: SignedTx) -> None:
    assert result["tx_id"] == tx.tx_id
    assert result["status"] == "committed"
    assert isinstance(result["height"], int)
    assert result["height"] >= 1
    assert isinstance(result["index"], int)
    assert result["index"] >= 0
    assert result["result"] == {"ok": True, "code": "ok"}


async def assert_rejected(
    api: InProcessClient,
    method: str,
    path: str,
    *,
    status: int,
    code: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    not_admitted: tuple[SignedTx, ...] = (),
) -> dict[str, Any]:
    """The request gets a problem+json 4xx, and the chain and the mempool are exactly as before."""
    before = status_snapshot(await api.status())
    reply = await api.request(method, path, body=body, headers=headers)
    assert reply.status == status, reply
    assert reply.content_type == PROBLEM, reply
    problem: dict[str, Any] = reply.json()
    assert problem["type"] == f"urn:medledger:problem:{code}", problem
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert problem["status"] == status
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert status_snapshot(await api.status()) == before
    for tx in not_admitted:
        assert (await api.get(f"/v1/txs/{tx.tx_id}")).status == 404, tx
    return problem


async def post_json_rejected(
    api: InProcessClient,
    path: str,
    data: Any,
    *,
    status: int,
    code: str,
    not_admitted: tuple[SignedTx, ...] = (),
) -> dict[str, Any]:
    return await assert_rejected(
        api,
        "POST",
        path,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json"},
        status=status,
        code=code,
        not_admitted=not_admitted,
    )


async def post_msgpack_rejected(
    api: InProcessClient,
    path: str,
    body: bytes,
    *,
    status: int,
    code: str,
    not_admitted: tuple[SignedTx, ...] = (),
) -> dict[str, Any]:
    return await assert_rejected(
        api,
        "POST",
        path,
        body=body,
        headers={"Content-Type": MSGPACK},
        status=status,
        code=code,
        not_admitted=not_admitted,
    )


# -- submission ------------------------------------------------------------------------------


async def test_submit_json_commits_and_reports_the_height(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"alice", b"1")
    reply = await api.post_json(f"/v1/txs?{WAIT}", {"tx": tx.b64})
    assert reply.status == 200
    assert reply.content_type == "application/json"
    result = reply.json()
    assert_committed_result(result, tx)
    status = await api.status()
    assert status["height"] == result["height"]
    assert status["mempool"] == {"txs": 0, "bytes": 0}
    lookup = await api.get(f"/v1/txs/{tx.tx_id}")
    assert lookup.status == 200
    assert lookup.json() == result


async def test_submit_msgpack_commits_and_reports_the_height(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"bob", b"2")
    reply = await api.post_msgpack(f"/v1/txs?{WAIT}", tx.raw)
    assert reply.status == 200
    result = reply.json()
    assert_committed_result(result, tx)
    assert (await api.get(f"/v1/txs/{tx.tx_id}")).json() == result
    # The older media type name is accepted as well.
    other = sign_kv(signer, api.chain_id, b"carol", b"3")
    reply = await api.request(
        "POST", f"/v1/txs?{WAIT}", body=other.raw, headers={"Content-Type": "application/x-msgpack"}
    )
    assert reply.status == 200
    assert_committed_result(reply.json(), other)


async def test_submit_batch_json_commits_every_tx_in_order(api: InProcessClient, signer: Identity) -> None:
    txs = [sign_kv(signer, api.chain_id, b"k%d" % i, b"v%d" % i) for i in range(10)]
    reply = await api.post_json(f"/v1/txs/batch?{WAIT}", {"txs": [t.b64 for t in txs]})
    assert reply.status == 200
    results = reply.json()["results"]
    assert [r["tx_id"] for r in results] == [t.tx_id for t in txs]
    for result, tx in zip(results, txs, strict=True):
        assert_committed_result(result, tx)
    # A batch is admitted atomically, so one block carries all of it, in order.
    assert {r["height"] for r in results} == {results[0]["height"]}
    assert [r["index"] for r in results] == list(range(len(txs)))


async def test_submit_batch_msgpack_commits_every_tx(api: InProcessClient, signer: Identity) -> None:
    txs = [sign_kv(signer, api.chain_id, b"m%d" % i) for i in range(7)]
    reply = await api.post_msgpack(f"/v1/txs/batch?{WAIT}", msgpack.packb([t.raw for t in txs]))
    assert reply.status == 200
    results = reply.json()["results"]
    assert [r["tx_id"] for r in results] == [t.tx_id for t in txs]
    for result, tx in zip(results, txs, strict=True):
        assert_committed_result(result, tx)
        assert (await api.get(f"/v1/txs/{tx.tx_id}")).json() == result


async def test_submit_without_waiting_is_pending_until_the_next_block(
    tmp_path: Path, signer: Identity
) -> None:
    # A long block interval holds the second tx in the mempool after the first block.
    home = make_home(tmp_path / "slow", block_interval_ms=3_000).home
    async with serve_in_process(home) as api:
        first = sign_kv(signer, api.chain_id, b"first")
        await submit_committed(api, first)
        second = sign_kv(signer, api.chain_id, b"second")
        reply = await api.post_json("/v1/txs", {"tx": second.b64})
        assert reply.status == 202
        assert reply.json() == {"tx_id": second.tx_id, "status": "pending"}
        lookup = await api.get(f"/v1/txs/{second.tx_id}")
        assert lookup.status == 200
        assert lookup.json() == {"tx_id": second.tx_id, "status": "pending"}
        status = await api.status()
        assert status["mempool"] == {"txs": 1, "bytes": len(second.raw)}
        # Submitting it again while pending is a duplicate, and changes nothing.
        await post_json_rejected(api, "/v1/txs", {"tx": second.b64}, status=409, code="duplicate_tx")

        # The node's own commit notification (what `?wait_ms=` uses) tells when the block is in.
        located = await api.node.wait_committed([bytes.fromhex(second.tx_id)], DEADLINE_S)
        assert set(located) == {bytes.fromhex(second.tx_id)}
        result = (await api.get(f"/v1/txs/{second.tx_id}")).json()
        assert result["status"] == "committed"
        assert result["height"] == status["height"] + 1
        assert result["index"] == 0


async def test_submit_batch_without_waiting_is_accepted(api: InProcessClient, signer: Identity) -> None:
    txs = [sign_kv(signer, api.chain_id, b"p%d" % i) for i in range(3)]
    reply = await api.post_json("/v1/txs/batch", {"txs": [t.b64 for t in txs]})
    assert reply.status in (200, 202)
    results = reply.json()["results"]
    assert [r["tx_id"] for r in results] == [t.tx_id for t in txs]
    assert {r["status"] for r in results} <= {"pending", "committed"}
    located = await api.node.wait_committed([bytes.fromhex(t.tx_id) for t in txs], DEADLINE_S)
    assert len(located) == len(txs)
    for tx in txs:
        result = (await api.get(f"/v1/txs/{tx.tx_id}")).json()
        assert result["status"] == "committed"
        assert result["height"] == located[bytes.fromhex(tx.tx_id)].height


async def test_node_process_commits_json_and_msgpack_txs(node_process: NodeClient, signer: Identity) -> None:
    api = node_process
    first = sign_kv(signer, api.chain_id, b"proc-json")
    reply = api.post_json(f"/v1/txs?{WAIT}", {"tx": first.b64})
    assert reply.status == 200, reply
    assert reply.json()["status"] == "committed"
    batch = [sign_kv(signer, api.chain_id, b"proc-%d" % i) for i in range(5)]
    reply = api.post_msgpack(f"/v1/txs/batch?{WAIT}", msgpack.packb([t.raw for t in batch]))
    assert reply.status == 200, reply
    assert [r["status"] for r in reply.json()["results"]] == ["committed"] * 5
    assert api.status()["height"] >= 2


# -- blocks ------------------------------------------------------------------------------------


async def test_get_block_as_json_and_msgpack_describe_the_same_certified_block(
    api: InProcessClient, signer: Identity
) -> None:
    tx = sign_kv(signer, api.chain_id, b"blocky", b"value")
    result = await submit_committed(api, tx)
    height = result["height"]

    reply = await api.get(f"/v1/blocks/{height}")
    assert reply.status == 200
    assert reply.content_type == "application/json"
    block_json = reply.json()
    assert block_json["height"] == height == block_json["header"]["height"]
    assert block_json["header"]["chain_id"] == api.chain_id
    assert block_json["header"]["tx_count"] == len(block_json["txs"])
    assert block_json["commit"]["block_hash"] == block_json["hash"]
    (tx_json,) = [t for t in block_json["txs"] if t["id"] == tx.tx_id]
    assert tx_json["kind"] == KIND_SET
    assert tx_json["sender"] == signer.public.sign_key.hex()
    assert base64.b64decode(tx_json["body"]) == encode_set_body(b"blocky", b"value")
    assert height == 1
    assert block_json["header"]["parent_hash"] == api.node.genesis.hash().hex()

    packed = await api.get(f"/v1/blocks/{height}", accept=MSGPACK)
    assert packed.status == 200
    assert packed.content_type == MSGPACK
    data = msgpack.unpackb(packed.body, raw=False)
    assert set(data) == {"block", "commit"}
    block = decode(Block, data["block"], max_bytes=BLOCK_BYTES_MAX)
    commit = decode(Commit, data["commit"], max_bytes=CONSENSUS_MESSAGE_BYTES_MAX)
    assert block.hash().hex() == block_json["hash"]
    assert block.header.state_root.hex() == block_json["header"]["state_root"]
    assert tx.raw in block.txs
    assert commit.block_hash == block.hash()
    validate_commit(
        commit,
        chain_id=api.chain_id,
        validators=api.node.genesis.validators,
        block_hash=block.hash(),
        height=height,
    )


async def test_get_blocks_returns_ranges_within_the_limits(api: InProcessClient, signer: Identity) -> None:
    for i in range(3):
        await submit_committed(api, sign_kv(signer, api.chain_id, b"r%d" % i))
    latest = (await api.status())["height"]
    assert latest == 3

    everything = (await api.get("/v1/blocks")).json()
    assert everything["latest_height"] == latest
    assert [b["height"] for b in everything["blocks"]] == [1, 2, 3]
    hashes = [api.node.genesis.hash().hex()] + [b["hash"] for b in everything["blocks"]]
    for block, parent in zip(everything["blocks"], hashes, strict=False):
        assert block["header"]["parent_hash"] == parent

    async def heights(query: str) -> list[int]:
        reply = await api.get(f"/v1/blocks?{query}")
        assert reply.status == 200, reply
        return [b["height"] for b in reply.json()["blocks"]]

    assert await heights("from=2&to=3") == [2, 3]
    assert await heights("from=2") == [2, 3]
    assert await heights("to=1") == [1]
    assert await heights("from=3&to=3") == [3]
    assert await heights(f"from=1&to={API_BLOCK_RANGE_MAX}") == [1, 2, 3]  # clamped to the tip
    assert await heights("from=4") == []
    assert await heights("from=1000&to=1005") == []

    packed = await api.get("/v1/blocks?from=1&to=3", accept=MSGPACK)
    assert packed.content_type == MSGPACK
    items = msgpack.unpackb(packed.body, raw=False)
    decoded = [decode(Block, item["block"], max_bytes=BLOCK_BYTES_MAX) for item in items]
    assert [b.hash().hex() for b in decoded] == [b["hash"] for b in everything["blocks"]]


async def test_get_blocks_on_an_empty_chain_is_empty(api: InProcessClient) -> None:
    reply = await api.get("/v1/blocks")
    assert reply.status == 200
    assert reply.json() == {"latest_height": 0, "blocks": []}


# -- status, health, metrics, OpenAPI --------------------------------------------------------------


async def test_status_describes_the_chain_and_this_validator(api: InProcessClient) -> None:
    status = await api.status()
    genesis = api.node.genesis
    assert status["chain_id"] == genesis.chain_id
    assert status["node"] == "node0"
    assert status["height"] == 0
    assert status["latest_block_hash"] == genesis.hash().hex()
    assert status["latest_block_time_ms"] == genesis.genesis_time_ms
    assert len(bytes.fromhex(status["state_root"])) == 32
    assert status["validator"] is True
    assert status["validator_key"] == api.node.identity.public.sign_key.hex()
    assert status["validators"] == 1
    assert status["mempool"] == {"txs": 0, "bytes": 0}
    assert status["uptime_s"] >= 0


async def test_status_follows_each_commit(api: InProcessClient, signer: Identity) -> None:
    before = await api.status()
    result = await submit_committed(api, sign_kv(signer, api.chain_id, b"s"))
    after = await api.status()
    assert after["height"] == before["height"] + 1 == result["height"]
    block = (await api.get(f"/v1/blocks/{result['height']}")).json()
    assert after["latest_block_hash"] == block["hash"]
    assert after["latest_block_time_ms"] == block["header"]["time_ms"]
    # The header carries the state root *before* its block; the block changed the state.
    assert block["header"]["state_root"] == before["state_root"]
    assert after["state_root"] != before["state_root"]


async def test_livez_and_readyz_answer_ok(api: InProcessClient) -> None:
    livez = await api.ops_get("/livez")
    assert (livez.status, livez.json()) == (200, {"status": "ok"})
    readyz = await api.ops_get("/readyz")
    assert readyz.status == 200
    assert readyz.json()["status"] == "ready"


async def test_metrics_are_prometheus_text_with_the_height(api: InProcessClient, signer: Identity) -> None:
    await submit_committed(api, sign_kv(signer, api.chain_id, b"metric"))
    reply = await api.ops_get("/metrics")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    text = reply.body.decode()
    assert "medledger_height" in text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["medledger_height"] == (await api.status())["height"] == 1
    assert samples["medledger_blocks_committed_total"] == 1
    assert samples["medledger_txs_committed_total"] == 1
    assert samples["medledger_mempool_txs"] == 0


async def test_openapi_is_a_valid_document_listing_every_route(api: InProcessClient) -> None:
    reply = await api.get("/openapi.json")
    assert reply.status == 200
    assert reply.content_type == "application/json"
    document = reply.json()
    assert document["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.0 meta-schema

    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = set()
    for route in build_app(api.node).router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        assert route.resource.canonical
        served.add((route.resource.canonical, route.method))
    assert documented == served
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            assert operation["operationId"], (path, method)


# -- rejections: transactions -----------------------------------------------------------------


async def test_invalid_malformed_tx_bytes(api: InProcessClient) -> None:
    garbage = b"\xc1 not a transaction"
    await post_json_rejected(
        api, "/v1/txs", {"tx": base64.b64encode(garbage).decode()}, status=400, code="malformed_tx"
    )
    await post_msgpack_rejected(api, "/v1/txs", garbage, status=400, code="malformed_tx")
    await post_msgpack_rejected(api, "/v1/txs", b"", status=400, code="malformed_tx")


async def test_invalid_non_canonical_tx_encoding(api: InProcessClient, signer: Identity) -> None:
    _tx, raw, _ = sign_tx(signer, chain_id=api.chain_id, kind=KIND_SET, body=encode_set_body(b"k", b"v"))
    # The same fields in reverse key order: valid msgpack, valid signature, not the one encoding.
    fields = msgpack.unpackb(raw, raw=False)
    reordered = msgpack.packb(dict(reversed(list(fields.items()))), use_bin_type=True)
    assert reordered != raw
    await post_msgpack_rejected(api, "/v1/txs", reordered, status=400, code="malformed_tx")


def sign_kv_of_size(signer: Identity, chain_id: str, size: int) -> SignedTx:
    """A signed kv.set tx whose canonical encoding is exactly `size` bytes (for size > 64 KiB)."""
    probe = sign_kv(signer, chain_id, b"big", bytes(70_000))
    overhead = len(probe.raw) - 70_000
    tx = sign_kv(signer, chain_id, b"big", bytes(size - overhead))
    assert len(tx.raw) == size
    return tx


async def test_invalid_oversized_tx(api: InProcessClient, signer: Identity) -> None:
    big = sign_kv_of_size(signer, api.chain_id, TX_BYTES_MAX + 1)
    await post_msgpack_rejected(api, "/v1/txs", big.raw, status=413, code="tx_too_large", not_admitted=(big,))
    await post_json_rejected(
        api, "/v1/txs", {"tx": big.b64}, status=413, code="tx_too_large", not_admitted=(big,)
    )
    much_bigger = sign_kv(signer, api.chain_id, b"big", bytes(2 * TX_BYTES_MAX))
    await post_msgpack_rejected(
        api, "/v1/txs", much_bigger.raw, status=413, code="tx_too_large", not_admitted=(much_bigger,)
    )
    # A base64 string too long to hold any allowed tx is refused before it is decoded.
    await post_json_rejected(api, "/v1/txs", {"tx": "A" * (TX_BYTES_MAX * 2)}, status=413, code="bad_request")


async def test_invalid_signature_byte_flipped(api: InProcessClient, signer: Identity) -> None:
    tx, _, _ = sign_tx(signer, chain_id=api.chain_id, kind=KIND_SET, body=encode_set_body(b"k", b"v"))
    signature = bytes([tx.signature[0] ^ 0x01]) + tx.signature[1:]
    forged = encode(dataclasses.replace(tx, signature=signature))
    bad = SignedTx(forged, compute_tx_id(forged).hex())
    await post_msgpack_rejected(api, "/v1/txs", forged, status=422, code="bad_signature", not_admitted=(bad,))


async def test_invalid_body_changed_after_signing(api: InProcessClient, signer: Identity) -> None:
    tx, _, _ = sign_tx(signer, chain_id=api.chain_id, kind=KIND_SET, body=encode_set_body(b"k", b"v"))
    forged = encode(dataclasses.replace(tx, body=encode_set_body(b"k", b"mallory")))
    bad = SignedTx(forged, compute_tx_id(forged).hex())
    await post_json_rejected(
        api,
        "/v1/txs",
        {"tx": base64.b64encode(forged).decode()},
        status=422,
        code="bad_signature",
        not_admitted=(bad,),
    )


async def test_invalid_sender_swapped_after_signing(api: InProcessClient, signer: Identity) -> None:
    tx, _, _ = sign_tx(signer, chain_id=api.chain_id, kind=KIND_SET, body=encode_set_body(b"k", b"v"))
    forged = encode(dataclasses.replace(tx, sender=Identity.generate().public.sign_key))
    await post_msgpack_rejected(api, "/v1/txs", forged, status=422, code="bad_signature")


async def test_invalid_replayed_tx(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"once")
    first = await submit_committed(api, tx)
    problem = await post_json_rejected(
        api, f"/v1/txs?{WAIT}", {"tx": tx.b64}, status=409, code="duplicate_tx"
    )
    assert "replay" in problem["detail"]
    await post_msgpack_rejected(api, "/v1/txs", tx.raw, status=409, code="duplicate_tx")
    # The original stays where it was committed.
    assert (await api.get(f"/v1/txs/{tx.tx_id}")).json() == first


async def test_invalid_wrong_chain_id(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, "another-chain", b"k")
    await post_msgpack_rejected(api, "/v1/txs", tx.raw, status=422, code="wrong_chain", not_admitted=(tx,))


async def test_invalid_stale_and_future_timestamps(api: InProcessClient, signer: Identity) -> None:
    skew = TX_CLOCK_SKEW_MS_MAX + 60_000
    old = sign_kv(signer, api.chain_id, b"k", timestamp_ms=now_ms() - skew)
    await post_msgpack_rejected(api, "/v1/txs", old.raw, status=422, code="stale_tx", not_admitted=(old,))
    future = sign_kv(signer, api.chain_id, b"k", timestamp_ms=now_ms() + skew)
    await post_json_rejected(
        api, "/v1/txs", {"tx": future.b64}, status=422, code="stale_tx", not_admitted=(future,)
    )


async def test_invalid_unknown_kind_names_the_rule(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"k", kind="kv.delete")
    problem = await post_msgpack_rejected(
        api, "/v1/txs", tx.raw, status=422, code="tx_rejected", not_admitted=(tx,)
    )
    assert problem["rule"] == "kv.kind"


async def test_invalid_kv_body_names_the_rule(api: InProcessClient, signer: Identity) -> None:
    _, raw, tx_id = sign_tx(signer, chain_id=api.chain_id, kind=KIND_SET, body=b"\x80")
    problem = await post_msgpack_rejected(
        api, "/v1/txs", raw, status=422, code="tx_rejected", not_admitted=(SignedTx(raw, tx_id.hex()),)
    )
    assert problem["rule"] == "kv.body"


# -- rejections: request shape -----------------------------------------------------------------


async def test_invalid_json_body(api: InProcessClient) -> None:
    for path in ("/v1/txs", "/v1/txs/batch"):
        for body in (b"{not json", b"\xff\xfe", b"", b"[" * 100_000):
            await assert_rejected(
                api,
                "POST",
                path,
                body=body,
                headers={"Content-Type": "application/json"},
                status=400,
                code="bad_request",
            )
        not_an_object_with_txs: tuple[Any, ...] = ([], "tx", 5, None, {}, {"tx": None}, {"txs": "AA=="})
        for data in not_an_object_with_txs:
            await post_json_rejected(api, path, data, status=400, code="bad_request")


async def test_invalid_content_type(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"k")
    body = json.dumps({"tx": tx.b64}).encode()
    for path in ("/v1/txs", "/v1/txs/batch"):
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/xml"}, {}):
            await assert_rejected(
                api,
                "POST",
                path,
                body=body,
                headers=headers,
                status=415,
                code="bad_request",
                not_admitted=(tx,),
            )


async def test_invalid_base64(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"k")
    for value in ("not base64!", tx.b64[:-2] + "=", tx.b64 + "A", "é" * 8, 12):
        await post_json_rejected(api, "/v1/txs", {"tx": value}, status=400, code="bad_request")
    await post_json_rejected(
        api, "/v1/txs/batch", {"txs": [tx.b64, "%%%"]}, status=400, code="bad_request", not_admitted=(tx,)
    )


async def test_invalid_wait_ms(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"k")
    for value in ("-1", "abc", "1.5", "30001", "", "0x10"):
        await post_json_rejected(
            api,
            f"/v1/txs?wait_ms={value}",
            {"tx": tx.b64},
            status=400,
            code="bad_request",
            not_admitted=(tx,),
        )


async def test_invalid_wait_ms_with_non_ascii_digits(api: InProcessClient, signer: Identity) -> None:
    # "²" and "١" (Arabic-Indic one) are str.isdigit(); the API must refuse them as it refuses "abc".
    tx = sign_kv(signer, api.chain_id, b"k")
    for value in ("%C2%B2", "%D9%A1"):
        await post_json_rejected(
            api,
            f"/v1/txs?wait_ms={value}",
            {"tx": tx.b64},
            status=400,
            code="bad_request",
            not_admitted=(tx,),
        )


async def test_invalid_json_number_too_long_to_convert(api: InProcessClient) -> None:
    # Python refuses to convert integers of more than 4300 digits; the API must say 400, not 500.
    body = b'{"tx": ' + b"1" * 5000 + b"}"
    for path in ("/v1/txs", "/v1/txs/batch"):
        await assert_rejected(
            api,
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json"},
            status=400,
            code="bad_request",
        )


async def test_invalid_tx_id(api: InProcessClient) -> None:
    for value in ("abc", "0" * 63, "0" * 65, "g" * 64, "é" * 64):
        await assert_rejected(api, "GET", f"/v1/txs/{value}", status=400, code="bad_request")


async def test_invalid_tx_id_with_whitespace(api: InProcessClient) -> None:
    # 64 characters, but not 64 hex digits: bytes.fromhex skips the spaces and yields 31 bytes.
    value = "ab" * 31 + "%20%20"
    await assert_rejected(api, "GET", f"/v1/txs/{value}", status=400, code="bad_request")


async def test_invalid_unknown_tx_id_is_not_found(api: InProcessClient) -> None:
    await assert_rejected(api, "GET", f"/v1/txs/{'ab' * 32}", status=404, code="not_found")


async def test_invalid_height(api: InProcessClient) -> None:
    for value in ("0", "-1", "abc", "1.0", "0x1", str(2**63)):
        await assert_rejected(api, "GET", f"/v1/blocks/{value}", status=400, code="bad_request")
    await assert_rejected(api, "GET", "/v1/blocks/1", status=404, code="not_found")
    await assert_rejected(api, "GET", f"/v1/blocks/{2**63 - 1}", status=404, code="not_found")


async def test_invalid_height_with_non_ascii_or_too_many_digits(api: InProcessClient) -> None:
    for value in ("%C2%B2", "%D9%A1", "9" * 5000):
        await assert_rejected(api, "GET", f"/v1/blocks/{value}", status=400, code="bad_request")
        await assert_rejected(api, "GET", f"/v1/blocks?from={value}", status=400, code="bad_request")


async def test_invalid_block_range(api: InProcessClient) -> None:
    for query in (
        "from=0",
        "from=",
        "to=x",
        "from=3&to=2",
        f"from=1&to={API_BLOCK_RANGE_MAX + 1}",
        f"from=10&to={10 + API_BLOCK_RANGE_MAX}",
    ):
        await assert_rejected(api, "GET", f"/v1/blocks?{query}", status=400, code="bad_request")


async def test_invalid_route_and_method(api: InProcessClient) -> None:
    await assert_rejected(api, "GET", "/v1/nothing-here", status=404, code="not_found")
    problem = await assert_rejected(api, "DELETE", "/status", status=405, code="method_not_allowed")
    assert problem["status"] == 405
    reply = await api.request("PUT", "/v1/txs", body=b"{}", headers={"Content-Type": "application/json"})
    assert reply.status == 405
    assert "POST" in reply.headers["allow"]


# -- rejections: batches --------------------------------------------------------------------------


async def test_invalid_batch_with_one_bad_tx_admits_none(api: InProcessClient, signer: Identity) -> None:
    good = [sign_kv(signer, api.chain_id, b"g%d" % i) for i in range(4)]
    bad = sign_kv(signer, "another-chain", b"bad")
    txs = [*good[:2], bad, *good[2:]]
    problem = await post_json_rejected(
        api,
        f"/v1/txs/batch?{WAIT}",
        {"txs": [t.b64 for t in txs]},
        status=422,
        code="batch_rejected",
        not_admitted=(*good, bad),
    )
    assert [(e["index"], e["code"], e["status"]) for e in problem["errors"]] == [(2, "wrong_chain", 422)]
    assert "none was admitted" in problem["detail"]

    problem = await post_msgpack_rejected(
        api,
        "/v1/txs/batch",
        msgpack.packb([t.raw for t in txs]),
        status=422,
        code="batch_rejected",
        not_admitted=(*good, bad),
    )
    assert [e["index"] for e in problem["errors"]] == [2]


async def test_invalid_batch_lists_every_bad_index(api: InProcessClient, signer: Identity) -> None:
    committed = sign_kv(signer, api.chain_id, b"committed")
    await submit_committed(api, committed)
    fresh = sign_kv(signer, api.chain_id, b"fresh")
    unknown_kind = sign_kv(signer, api.chain_id, b"x", kind="kv.nope")
    txs = [fresh, committed, SignedTx(b"\x00", ""), fresh, unknown_kind]
    problem = await post_msgpack_rejected(
        api,
        "/v1/txs/batch",
        msgpack.packb([t.raw for t in txs]),
        status=422,
        code="batch_rejected",
        not_admitted=(fresh, unknown_kind),
    )
    errors = [(e["index"], e["code"], e["status"]) for e in problem["errors"]]
    assert errors == [
        (1, "duplicate_tx", 409),
        (2, "malformed_tx", 400),
        (3, "duplicate_tx", 409),
        (4, "tx_rejected", 422),
    ]


async def test_invalid_batch_shape(api: InProcessClient, signer: Identity) -> None:
    tx = sign_kv(signer, api.chain_id, b"k")
    await post_json_rejected(api, "/v1/txs/batch", {"txs": []}, status=400, code="bad_request")
    await post_json_rejected(api, "/v1/txs/batch", {"tx": tx.b64}, status=400, code="bad_request")
    await post_json_rejected(
        api, "/v1/txs/batch", {"txs": [tx.b64, 7]}, status=400, code="bad_request", not_admitted=(tx,)
    )
    await post_json_rejected(
        api, "/v1/txs/batch", {"txs": ["AA=="] * (API_BATCH_TXS_MAX + 1)}, status=400, code="bad_request"
    )
    for body in (
        msgpack.packb([]),
        msgpack.packb(tx.raw),
        msgpack.packb([tx.raw, "text"]),
        msgpack.packb({}),
        msgpack.packb([tx.raw]) + b"\x00",
        b"\xc1",
        msgpack.packb([b"\x00"] * (API_BATCH_TXS_MAX + 1)),
        msgpack.packb([[[[tx.raw]]]]),
    ):
        await post_msgpack_rejected(
            api, "/v1/txs/batch", body, status=400, code="bad_request", not_admitted=(tx,)
        )


async def test_invalid_batch_with_an_oversized_tx(api: InProcessClient, signer: Identity) -> None:
    good = sign_kv(signer, api.chain_id, b"small")
    big = sign_kv_of_size(signer, api.chain_id, TX_BYTES_MAX + 1)
    problem = await post_msgpack_rejected(
        api,
        "/v1/txs/batch",
        msgpack.packb([good.raw, big.raw]),
        status=422,
        code="batch_rejected",
        not_admitted=(good, big),
    )
    assert [(e["index"], e["code"], e["status"]) for e in problem["errors"]] == [(1, "tx_too_large", 413)]
