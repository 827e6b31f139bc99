"""Crash safety and clean shutdown of a real node process.

A node acknowledges a tx as committed only after the block's synced write, so whatever it said it
committed must survive `kill -9` at any moment: same block, same position, same hashes and state
roots, and the node must carry on from there. A SIGTERM must end the process promptly with exit
code 0 and leave a store that reopens cleanly.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import threading
from pathlib import Path
from typing import Any

import msgpack
from node_harness import DEADLINE_S, NodeClient, SignedTx, StartNode, make_home, sign_kv, wait_until

from medledger.chain.store import BlockStore
from medledger.chain.types import Genesis
from medledger.crypto import Identity
from medledger.node.home import DATA_DIR, InitResult
from medledger.node.process import NodeProcess
from medledger.node.run import api_address_path

BATCH_TXS = 25
BLOCKS_BEFORE_KILL = 5
KILL_ROUNDS = 3
WAIT_COMMITTED = "wait_ms=10000"


@dataclasses.dataclass
class StreamRecord:
    """What the streaming client learnt from the node; shared with the test thread under `lock`."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: tx id → (height, index) for every tx the node reported committed.
    committed: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    #: Every tx the stream built, by id.
    sent: dict[str, SignedTx] = dataclasses.field(default_factory=dict)
    #: Txs sent (or about to be) without a committed answer: the node died or had not committed yet.
    unacknowledged: list[SignedTx] = dataclasses.field(default_factory=list)
    batches_acknowledged: int = 0
    failure: str | None = None

    def max_height(self) -> int:
        with self.lock:
            return max((height for height, _ in self.committed.values()), default=0)

    def acknowledged(self) -> int:
        with self.lock:
            return self.batches_acknowledged


def stream_batches(node: NodeClient, signer: Identity, stop: threading.Event, record: StreamRecord) -> None:
    """Submit batches of kv.set txs back to back (JSON and msgpack by turns) until stopped or cut off."""
    number = 0
    while not stop.is_set():
        txs = [
            sign_kv(signer, node.chain_id, b"crash-%d-%d" % (number, i), os.urandom(16))
            for i in range(BATCH_TXS)
        ]
        with record.lock:
            record.sent.update((t.tx_id, t) for t in txs)
        try:
            if number % 2:
                reply = node.post_msgpack(
                    f"/v1/txs/batch?{WAIT_COMMITTED}", msgpack.packb([t.raw for t in txs])
                )
            else:
                reply = node.post_json(f"/v1/txs/batch?{WAIT_COMMITTED}", {"txs": [t.b64 for t in txs]})
        except (OSError, http.client.HTTPException):
            # Killed mid-request (reset, refused or cut short): these txs may or may not be in.
            with record.lock:
                record.unacknowledged.extend(txs)
            return
        with record.lock:
            if reply.status not in (200, 202):
                record.failure = f"batch {number}: {reply.status} {reply.body[:300]!r}"
                return
            by_id = {t.tx_id: t for t in txs}
            for result in reply.json()["results"]:
                if result["status"] == "committed":
                    record.committed[result["tx_id"]] = (result["height"], result["index"])
                else:
                    record.unacknowledged.append(by_id[result["tx_id"]])
            record.batches_acknowledged += 1
        number += 1


def fetch_blocks(node: NodeClient, last: int) -> dict[int, dict[str, Any]]:
    """Blocks 1..last as the API shows them (JSON), in range requests of 100."""
    blocks: dict[int, dict[str, Any]] = {}
    for start in range(1, last + 1, 100):
        reply = node.get(f"/v1/blocks?from={start}&to={min(start + 99, last)}")
        assert reply.status == 200, reply
        for block in reply.json()["blocks"]:
            blocks[block["height"]] = block
    assert sorted(blocks) == list(range(1, last + 1))
    return blocks


@dataclasses.dataclass(frozen=True)
class BeforeKill:
    """What a client saw before the kill: the stream's record and the chain as served."""

    record: StreamRecord
    status: dict[str, Any]
    blocks: dict[int, dict[str, Any]]


def stream_then_kill(process: NodeProcess, node: NodeClient, signer: Identity, min_height: int) -> BeforeKill:
    """Stream batches until `min_height` is reported committed, read the chain, then SIGKILL mid-stream."""
    record = StreamRecord()
    stop = threading.Event()
    streamer = threading.Thread(target=stream_batches, args=(node, signer, stop, record), name="tx-stream")
    streamer.start()
    try:
        wait_until(
            lambda: record.max_height() >= min_height or not streamer.is_alive(), f"height {min_height}"
        )
        assert streamer.is_alive(), record.failure
        # The chain as the node serves it while the stream goes on: blocks and the state root.
        status = node.status()
        blocks = fetch_blocks(node, status["height"])
        # At least one more batch goes through after these reads, so the kill lands mid-stream.
        acknowledged = record.acknowledged()
        wait_until(lambda: record.acknowledged() > acknowledged or not streamer.is_alive(), "one more batch")
        assert streamer.is_alive(), record.failure
        process.kill()
    finally:
        stop.set()
        streamer.join(timeout=DEADLINE_S)
    assert not streamer.is_alive()
    assert record.failure is None, record.failure
    assert record.max_height() >= max(min_height, status["height"])
    return BeforeKill(record, status, blocks)


def assert_recovered(
    node: NodeClient, genesis: Genesis, before: BeforeKill, committed: dict[str, tuple[int, int]]
) -> None:
    """The restarted node serves everything it served or acknowledged before the kill, unchanged."""
    status = node.status()
    assert status["chain_id"] == genesis.chain_id
    assert status["height"] >= before.record.max_height()
    assert status["mempool"] == {"txs": 0, "bytes": 0}  # the mempool does not outlive the process
    blocks = fetch_blocks(node, status["height"])

    # Every block served before the kill is served again, exactly the same.
    for height, block in before.blocks.items():
        assert blocks[height] == block, height
    # The chain still links up from genesis to the tip.
    parent = genesis.hash().hex()
    for height in range(1, status["height"] + 1):
        assert blocks[height]["header"]["parent_hash"] == parent, height
        parent = blocks[height]["hash"]
    assert status["latest_block_hash"] == parent
    # The state root after the height read before the kill is unchanged (the next header has it).
    height_before = before.status["height"]
    if height_before < status["height"]:
        assert blocks[height_before + 1]["header"]["state_root"] == before.status["state_root"]
    else:
        assert status["state_root"] == before.status["state_root"]

    # Every tx ever reported committed is in the block and at the index the node reported.
    positions = {
        tx["id"]: (height, index) for height, block in blocks.items() for index, tx in enumerate(block["txs"])
    }
    for tx_id, place in committed.items():
        assert positions.get(tx_id) == place, tx_id
    for tx_id, (height, index) in list(before.record.committed.items())[:: BATCH_TXS // 5]:
        lookup = node.get(f"/v1/txs/{tx_id}").json()
        assert (lookup["status"], lookup["height"], lookup["index"]) == ("committed", height, index)
    # What was in flight is either committed (in a block) or unknown; never pending after a restart.
    for tx in before.record.unacknowledged:
        lookup = node.get(f"/v1/txs/{tx.tx_id}")
        if tx.tx_id in positions:
            assert lookup.json()["status"] == "committed"
        else:
            assert lookup.status == 404, lookup


def test_kill_9_mid_stream_loses_nothing_the_node_reported_committed(
    node_home: InitResult, start_node: StartNode, signer: Identity
) -> None:
    home = node_home.home
    process, node = start_node(home)
    committed: dict[str, tuple[int, int]] = {}
    sent: dict[str, SignedTx] = {}
    for _ in range(KILL_ROUNDS):
        start_height = node.status()["height"]
        before = stream_then_kill(process, node, signer, start_height + BLOCKS_BEFORE_KILL)
        committed.update(before.record.committed)
        sent.update(before.record.sent)
        process, node = start_node(home)
        assert_recovered(node, node_home.genesis, before, committed)
    assert len(committed) >= KILL_ROUNDS * BLOCKS_BEFORE_KILL * BATCH_TXS

    # And the node carries on: new txs commit on top of the recovered chain.
    height = node.status()["height"]
    fresh = [sign_kv(signer, node.chain_id, b"after-%d" % i) for i in range(10)]
    reply = node.post_json(f"/v1/txs/batch?{WAIT_COMMITTED}", {"txs": [t.b64 for t in fresh]})
    assert reply.status == 200, reply
    results = reply.json()["results"]
    assert all(r["status"] == "committed" for r in results)
    assert min(r["height"] for r in results) > height
    # Txs committed before the crashes are still known after them: replaying one is refused.
    for tx_id in list(committed)[:: len(committed) // 4]:
        reply = node.post_msgpack("/v1/txs", sent[tx_id].raw)
        assert reply.status == 409, reply


def test_sigterm_stops_the_node_with_exit_code_0_and_the_store_reopens(
    node_home: InitResult, start_node: StartNode, signer: Identity
) -> None:
    home = node_home.home
    process, node = start_node(home)
    for batch in range(3):
        txs = [sign_kv(signer, node.chain_id, b"t-%d-%d" % (batch, i)) for i in range(5)]
        reply = node.post_json(f"/v1/txs/batch?{WAIT_COMMITTED}", {"txs": [t.b64 for t in txs]})
        assert reply.status == 200, reply
    before = node.status()
    assert before["height"] == 3

    # `stop` sends SIGTERM and escalates to SIGKILL (exit code -9) if the node lingers 5 s.
    assert process.stop(timeout_s=5) == 0
    assert not api_address_path(home).exists()
    assert "stopped at height 3" in process.read_log()

    store = BlockStore.open(home / DATA_DIR, create=False)
    try:
        assert store.height == before["height"]
        assert store.last_block_hash.hex() == before["latest_block_hash"]
        assert store.state_root.hex() == before["state_root"]
        assert store.genesis == node_home.genesis
    finally:
        store.close()

    _, node = start_node(home)
    after = node.status()
    assert {k: after[k] for k in ("height", "latest_block_hash", "state_root")} == {
        k: before[k] for k in ("height", "latest_block_hash", "state_root")
    }


def test_sigterm_during_the_block_interval_stops_promptly_without_committing_pending_txs(
    tmp_path: Path, start_node: StartNode, signer: Identity
) -> None:
    # With a long block interval, a tx submitted right after a block waits in the mempool. Shutting
    # down must not wait out the interval (Node.stop: "Pending txs are not committed"; run.py: the
    # first signal bounds the whole shutdown sequence).
    home = make_home(tmp_path / "slow", block_interval_ms=30_000).home
    process, node = start_node(home)
    first = sign_kv(signer, node.chain_id, b"first")
    reply = node.post_json(f"/v1/txs?{WAIT_COMMITTED}", {"tx": first.b64})
    assert reply.status == 200, reply
    pending = sign_kv(signer, node.chain_id, b"pending")
    reply = node.post_json("/v1/txs", {"tx": pending.b64})
    assert (reply.status, reply.json()["status"]) == (202, "pending")

    assert process.stop(timeout_s=5) == 0

    store = BlockStore.open(home / DATA_DIR, create=False)
    try:
        assert store.height == 1
        assert not store.has_tx(bytes.fromhex(pending.tx_id))
    finally:
        store.close()
