"""Validators crashing and coming back, on a local testnet of four real node processes.

Four validators tolerate one fault (quorum 3). With one validator killed (-9) under load the chain
goes on and the validator catches up when it returns; with two down the chain stalls (without
forking) and resumes when they return; with all four killed at once every node resumes from its
own disk. Whatever any client was told is committed stays committed, at the same height and index,
on every node.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster_harness import (
    LoadStream,
    LocalCluster,
    assert_committed_everywhere,
    assert_same_chain,
    compute_positions,
    fetch_blocks,
    get_chain_view,
    make_batch,
    observe,
    submit_committed,
    wait_tx_committed,
    wait_until,
)

from medledger.crypto import Identity

pytestmark = pytest.mark.slow


def signers_of(block: dict[str, Any]) -> set[str]:
    return {s["validator"] for s in block["commit"]["signatures"]}


def test_kill_9_of_one_validator_under_load_loses_nothing_and_it_catches_up(
    local_cluster: LocalCluster, signer: Identity
) -> None:
    cluster = local_cluster
    target, victim = cluster["validator0"], cluster["validator2"]
    survivors = [n for n in cluster.validators if n is not victim]
    with LoadStream(target, signer, "kill9") as load:
        load.wait_committed_height(target.height() + 3, "the load to commit a few blocks")

        victim.kill()
        down_at = max(n.height() for n in survivors)
        # Three of four are a quorum: the chain goes on without the victim.
        load.wait_committed_height(down_at + 8, "blocks committed while validator2 is down")
        assert not victim.running

        cluster.start([victim])
        behind_at = target.height()
        wait_until(lambda: victim.height() >= behind_at, "validator2 to catch up by block sync")
        cluster.wait_meshed()
        # And the chain goes on with it.
        load.wait_committed_height(victim.height() + 5, "blocks committed after validator2 returned")
    assert load.failure is None, load.failure

    tip = cluster.wait_agreed()
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    committed, accepted = load.snapshot()
    assert_committed_everywhere(cluster.nodes, blocks, committed)
    # The target never went down, so every tx it accepted (even one still pending when it
    # answered) is in the chain by now.
    assert accepted <= compute_positions(blocks).keys()
    # The blocks committed while it was down were certified without it (at `down_at + 1` its
    # last precommit may still count).
    for height in range(down_at + 2, down_at + 9):
        assert victim.key_hex not in signers_of(blocks[height]), height


def test_two_of_four_validators_down_stalls_without_forking_then_resumes(
    local_cluster: LocalCluster, signer: Identity
) -> None:
    cluster = local_cluster
    live = [cluster["validator0"], cluster["validator1"]]
    down = [cluster["validator2"], cluster["validator3"]]
    history = submit_committed(live[0], make_batch(signer, "before"))
    before = cluster.wait_agreed()
    history_blocks = fetch_blocks(live[0].api, before["height"])

    down[0].kill()
    down[1].stop()  # one crash, one orderly stop: both leave the two others short of a quorum
    wait_until(lambda: all(n.status()["peers"] == 1 for n in live), "the live validators to notice")

    stuck = {n.name: make_batch(signer, f"stuck-{n.name}") for n in live}
    for node in live:
        results = node.api.submit(stuck[node.name], wait_ms=1_000)
        assert {r["status"] for r in results} == {"pending"}, results
    # Observation window: however long we look, two validators commit nothing and stay together.
    tips = observe(3.0, lambda: [n.tip() for n in live])
    assert {tip for sample in tips for tip in sample} == {(before["height"], before["latest_block_hash"])}
    for node in live:
        for tx in stuck[node.name]:
            assert node.api.get_tx(tx.tx_id).json()["status"] == "pending"

    cluster.start(down)
    cluster.wait_meshed()
    stuck_ids = [tx.tx_id for txs in stuck.values() for tx in txs]
    positions = {tx_id: wait_tx_committed(live[0], tx_id) for tx_id in stuck_ids}
    tip = cluster.wait_agreed()
    assert tip["height"] > before["height"]
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    # No fork: the chain before the outage is unchanged, and everything is committed exactly once.
    for height, block in history_blocks.items():
        assert get_chain_view(blocks[height]) == get_chain_view(block), height
    assert_committed_everywhere(cluster.nodes, blocks, {**history, **positions}, sample_every=1)


def test_all_validators_killed_at_once_resume_from_disk(
    local_cluster: LocalCluster, signer: Identity
) -> None:
    cluster = local_cluster
    entry = cluster["validator0"]
    with LoadStream(entry, signer, "crash-all", until_disconnected=True) as load:
        load.wait_committed_height(entry.height() + 5, "the load to commit a few blocks")
        before = {n.name: n.status() for n in cluster.nodes}
        common = min(s["height"] for s in before.values())
        history = fetch_blocks(entry.api, common)
        # One more batch goes through after these reads, so the kill lands mid-stream.
        batches = load.batches_acknowledged()
        wait_until(lambda: load.batches_acknowledged() > batches or not load.alive, "one more batch")
        assert load.alive, load.failure
        cluster.kill_all_at_once()
        wait_until(lambda: not load.alive, "the load stream to lose its node")
    assert load.failure is None, load.failure
    assert load.disconnected

    cluster.start()
    cluster.wait_meshed()
    for node in cluster.nodes:
        status = node.status()
        assert status["height"] >= before[node.name]["height"], node.name
        assert status["mempool"]["txs"] == 0  # a mempool does not outlive its process
    # They go on committing.
    fresh = submit_committed(cluster["validator1"], make_batch(signer, "after"))
    tip = cluster.wait_agreed()
    assert tip["height"] > max(s["height"] for s in before.values())
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    for height, block in history.items():
        assert get_chain_view(blocks[height]) == get_chain_view(block), height
    committed, _ = load.snapshot()
    assert_committed_everywhere(cluster.nodes, blocks, {**committed, **fresh})
