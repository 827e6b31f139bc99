"""A network partition on a local testnet: one validator cut off from the other three, then healed.

Every p2p link between validator3 and the others runs through a fault-injecting TCP proxy
(validator3 dials the others through proxies, and each other validator dials validator3 through
one), so cutting the proxies isolates validator3 while its process keeps running. The three others
are a quorum and go on committing; validator3 cannot commit anything on its own; once healed, it
catches up by block sync to the same chain and takes part again.
"""

from __future__ import annotations

import pytest
from cluster_harness import (
    FaultProxy,
    LoadStream,
    LocalCluster,
    MakeCluster,
    ProxyHub,
    assert_committed_everywhere,
    assert_same_chain,
    compute_positions,
    rewrite_peers,
    wait_until,
)

from medledger.crypto import Identity

pytestmark = pytest.mark.slow

ISOLATED = "validator3"


def route_through_proxies(cluster: LocalCluster, hub: ProxyHub, isolated: str) -> list[FaultProxy]:
    """Rewrite the configs so every link to or from `isolated` goes through a proxy of its own."""
    lonely = cluster[isolated].spec
    others = [n.spec for n in cluster.nodes if n.spec is not lonely]
    proxies: list[FaultProxy] = []
    outbound = [hub.open(other.p2p_port) for other in others]
    proxies += outbound
    rewrite_peers(lonely, [p.url for p in outbound])
    for other in others:
        inbound = hub.open(lonely.p2p_port)
        proxies.append(inbound)
        direct = [f"http://127.0.0.1:{n.p2p_port}" for n in others if n is not other]
        rewrite_peers(other, [*direct, inbound.url])
    return proxies


def test_partitioned_validator_stalls_then_catches_up_when_healed(
    fault_proxies: ProxyHub, cluster_factory: MakeCluster, signer: Identity
) -> None:
    proxies: list[FaultProxy] = []
    cluster = cluster_factory(
        configure=lambda c: proxies.extend(route_through_proxies(c, fault_proxies, ISOLATED))
    )
    assert len(proxies) == 6
    # The links really run through the proxies: each was dialled through.
    wait_until(lambda: all(p.connections_accepted > 0 for p in proxies), "a dial through every proxy")
    lonely = cluster[ISOLATED]
    majority = [n for n in cluster.nodes if n is not lonely]
    entry = majority[0]

    with LoadStream(entry, signer, "partition") as load:
        load.wait_committed_height(entry.height() + 3, "the load to commit a few blocks")

        for proxy in proxies:
            proxy.cut()
        wait_until(
            lambda: lonely.status()["peers"] == 0 and all(n.status()["peers"] == 2 for n in majority),
            "the partition to show in the peer counts",
        )
        cut_height = max(n.height() for n in majority)
        load.wait_committed_height(cut_height + 3, "the majority to commit without validator3")
        isolated_height = lonely.height()
        assert isolated_height <= cut_height + 1  # at most the block it was finishing at the cut
        # While the majority commits more blocks, validator3 stays where it is.
        seen: list[int] = []
        goal = entry.height() + 6

        def majority_progressed() -> bool:
            seen.append(lonely.height())
            return load.max_committed_height() >= goal or not load.alive

        wait_until(majority_progressed, "the majority to commit more blocks without validator3")
        assert load.alive, load.failure
        assert set(seen) == {isolated_height}
        assert lonely.status()["peers"] == 0

        for proxy in proxies:
            proxy.heal()
        cluster.wait_meshed()
        healed_at = entry.height()
        wait_until(lambda: lonely.height() >= healed_at, "validator3 to catch up by block sync")
        load.wait_committed_height(lonely.height() + 5, "the chain to go on with all four")
    assert load.failure is None, load.failure

    tip = cluster.wait_agreed()
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    committed, accepted = load.snapshot()
    assert_committed_everywhere(cluster.nodes, blocks, committed)
    assert accepted <= compute_positions(blocks).keys()
    # The blocks committed during the partition were certified without validator3 (at
    # `isolated_height + 1` its precommit from before the cut may still count).
    for height in range(isolated_height + 2, goal + 1):
        signers = {s["validator"] for s in blocks[height]["commit"]["signatures"]}
        assert lonely.key_hex not in signers, height
