"""Partitions across real interfaces: four validators, each in a network namespace of its own.

Each validator's node runs inside its namespace (`scripts/netlab.py`: a veth pair to the root
namespace); every peer link crosses the interfaces through a userspace proxy that delays it 5 ms
one way. Then, with a load client:
- 1|3: the isolated validator's link is taken down (no one reaches it, it reaches no one); the
  other three are a quorum and go on committing; once the link is up it catches up by block sync.
- 2|2: the proxy cuts every link between {0, 1} and {2, 3}; neither half is a quorum, so nothing
  commits anywhere (a tx sent to each half waits); once healed, both txs commit and the chain goes
  on.
After each heal all four hold the same chain, link by link, each block with a quorum certificate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cluster_harness import (
    NODE_ENV,
    ClusterNode,
    assert_committed_everywhere,
    assert_same_chain,
    create_local_testnet,
    fetch_blocks,
    has_peers,
    make_batch,
    observe,
    submit_committed,
    wait_tx_committed,
    wait_until,
)

from medledger.crypto import Identity

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from netlab import NamespacedCluster

pytestmark = pytest.mark.slow

#: An observation window in which a partitioned network must not commit.
STALL_WINDOW_S = 3.0


def test_four_validators_in_namespaces_survive_1_3_and_2_2_partitions(
    tmp_path: Path, signer: Identity
) -> None:
    specs = [n.spec for n in create_local_testnet(tmp_path / "net", validators=4, observers=0).nodes]
    with NamespacedCluster(specs, delay_ms=5, env=dict(NODE_ENV), prefix="mlp", net=204) as net:
        nodes = []
        for spec, process in zip(specs, net.processes, strict=True):
            node = ClusterNode(spec)
            node.process = process  # started by the cluster, inside its namespace
            node.wait_serving()
            nodes.append(node)
        wait_until(lambda: all(has_peers(n, 3) for n in nodes), "every link up across the namespaces")
        keys = {n.key_hex for n in nodes}
        committed = submit_committed(nodes[0], make_batch(signer, "before"))

        # 1|3: validator3 is cut off; the three others commit without it.
        net.isolate(3)
        majority = nodes[:3]
        committed |= submit_committed(nodes[1], make_batch(signer, "one-three"))
        top = max(height for height, _ in committed.values())
        wait_until(lambda: all(n.height() >= top for n in majority), "the three to commit on their own")
        net.heal()
        wait_until(lambda: nodes[3].height() >= top, "validator3 to catch up once its link is up")
        committed |= submit_committed(nodes[3], make_batch(signer, "after-one-three"))
        last = min(n.height() for n in nodes)
        blocks = fetch_blocks(nodes[0].api, last)
        assert_same_chain(nodes, last, keys)
        assert_committed_everywhere(nodes, blocks, {t: p for t, p in committed.items() if p[0] <= last})

        # 2|2: no half is a quorum: nothing commits, anywhere, until the halves meet again.
        net.partition([{0, 1}, {2, 3}])
        heights = [n.height() for n in nodes]
        left, right = make_batch(signer, "left", 1), make_batch(signer, "right", 1)
        assert nodes[0].api.submit(left, wait_ms=0)[0]["status"] == "pending"
        assert nodes[2].api.submit(right, wait_ms=0)[0]["status"] == "pending"
        samples = observe(STALL_WINDOW_S, lambda: [n.height() for n in nodes])
        assert all(sample == heights for sample in samples), samples
        net.heal()
        for tx, node in ((left[0], nodes[0]), (right[0], nodes[2])):
            committed[tx.tx_id] = wait_tx_committed(node, tx.tx_id)
        committed |= submit_committed(nodes[2], make_batch(signer, "after-two-two"))
        top = max(height for height, _ in committed.values())
        wait_until(lambda: all(n.height() >= top for n in nodes), "all four at the same height again")
        blocks = fetch_blocks(nodes[0].api, top)
        assert_same_chain(nodes, top, keys)
        assert_committed_everywhere(nodes, blocks, committed)
