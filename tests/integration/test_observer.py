"""An observer on a local testnet: a member of the network that verifies but does not vote.

It follows the chain the four validators commit (checking each block against its certificate and
re-executing it), ends on the same block hash and state root, never signs a block, and relays a
transaction its API accepts to the validators by gossip.
"""

from __future__ import annotations

import pytest
from cluster_harness import (
    LoadStream,
    MakeCluster,
    assert_committed_everywhere,
    assert_same_chain,
    make_batch,
    submit_committed,
    wait_until,
)

from medledger.crypto import Identity

pytestmark = pytest.mark.slow


def test_observer_follows_the_chain_and_relays_txs_to_the_validators(
    cluster_factory: MakeCluster, signer: Identity
) -> None:
    cluster = cluster_factory(validators=4, observers=1)
    observer = cluster["observer0"]
    status = observer.status()
    assert status["validator"] is False
    assert status["validators"] == 4
    assert observer.key_hex not in cluster.validator_keys

    # A tx submitted to the observer reaches the validators (gossip) and is committed.
    relayed = submit_committed(observer, make_batch(signer, "via-observer"))

    # It follows the chain the validators commit under load.
    entry = cluster["validator0"]
    with LoadStream(entry, signer, "observed") as load:
        goal = entry.height() + 10
        load.wait_committed_height(goal, "the validators to commit under load")
        wait_until(lambda: observer.height() >= goal, "the observer to follow")
    assert load.failure is None, load.failure

    tip = cluster.wait_agreed()
    # Same blocks everywhere, every certificate signed by validators only (never the observer).
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    for block in blocks.values():
        assert block["header"]["proposer"] in cluster.validator_keys
    committed, _ = load.snapshot()
    assert_committed_everywhere(cluster.nodes, blocks, {**relayed, **committed})
    assert_committed_everywhere(cluster.nodes, blocks, relayed, sample_every=1)
