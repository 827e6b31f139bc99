"""A node whose state silently diverged halts and drops no one; block sync never asks twice.

Two guards the simulator holds the real node to, each once the home of a bug it now finds
(`scripts/sim_mutants.py`): a certified block that does not fit a node's state is the node's
fault, not the serving peer's (`WRONG_BACKUP`: the state is restored from a wrong backup while
the node is down, which its start check cannot see); and block sync asks for a block only while
it lacks it (every GET_BLOCKS a correct node sends is checked against what it has committed, is
applying and holds downloaded, in a window that exists because offloaded work takes virtual
time).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from sim_support import sim_config

from medledger.chain.governance import GovernedApp
from medledger.chain.integrity import check_tail, get_validators_at
from medledger.chain.store import BlockStore
from medledger.network.blocksync import SyncedBlock
from medledger.network.sim import (
    Fault,
    FaultKind,
    InvariantChecker,
    InvariantViolation,
    Simulation,
    check_simulation,
    generate_fault_plan,
)
from medledger.network.simcluster import (
    OFFLOAD_MS,
    OFFLOAD_MS_PER_BLOCK,
    OFFLOAD_TXS_PER_MS,
    compute_offload_ms,
)
from medledger.network.siminvariants import Caches
from medledger.network.simreport import TimelineKind
from medledger.network.simstorage import SimDisk

#: Node 1 of four is down for long (it comes back behind by block sync's threshold), or briefly.
LONG_OUTAGE = Fault(FaultKind.WRONG_BACKUP, 300, 2_000, (1,))
SHORT_OUTAGE = Fault(FaultKind.WRONG_BACKUP, 300, 400, (1,))


def test_a_state_restored_from_a_wrong_backup_passes_the_start_check() -> None:
    simulation = Simulation(sim_config(4, 3, heights_after_gst=4))
    simulation.run()
    peer = simulation.peers[2]
    disk: SimDisk = peer.disk
    disk.crash()
    root = BlockStore.open_memory(disk.reopen(), "before").state_root
    key = disk.restore_wrong_backup()
    assert key is not None
    store = BlockStore.open_memory(disk.reopen(), "restored")
    assert store.height >= 4
    assert store.state_root != root
    assert len(store.state_root) == len(root)
    app = GovernedApp(simulation.config.app_factory(), simulation.genesis.validators)
    validators_at = get_validators_at(app, store, simulation.genesis)
    report = check_tail(store, simulation.genesis, blocks=16, validators_at=validators_at)
    assert report.is_clean  # only the next certified block can tell


@pytest.mark.parametrize("fault", [LONG_OUTAGE, SHORT_OUTAGE], ids=["far-behind", "one-behind"])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_node_whose_state_diverged_halts_and_drops_no_peer(fault: Fault, seed: int) -> None:
    result = check_simulation(sim_config(4, seed, faults=(fault,)))  # no correct peer dropped
    assert result.stats.states_diverged == 1
    assert result.stats.halts == 1
    events = [e for e in result.timeline.events if e.node == 1]
    halted = [e for e in events if e.kind is TimelineKind.CRASH and e.detail.startswith("halted")]
    assert len(halted) == 1
    assert "differs from the state the network certified" in halted[0].detail
    assert not any(e.kind is TimelineKind.PEER_DROPPED for e in events)
    assert result.stats.peers_dropped == 0
    # It stays down; the other three went on without it (liveness is not due from it).
    assert 1 not in result.heights
    assert len(set(result.heights.values())) == 1
    assert not any(e.kind is TimelineKind.RESTART and e.at_ms > halted[0].at_ms for e in events)


def test_diverging_faults_keep_within_what_the_twins_leave_of_f() -> None:
    for seed in range(200):
        for n, twins in ((1, ()), (4, ()), (4, (2,)), (7, (0,)), (7, (0, 5))):
            rng = random.Random(seed)
            plan = generate_fault_plan(rng, n=n, twins=twins, kinds=(FaultKind.WRONG_BACKUP,))
            struck = {i for fault in plan if fault.kind is FaultKind.WRONG_BACKUP for i in fault.nodes}
            assert len(struck) <= (n - 1) // 3 - len(twins)
            assert not struck & set(twins)
            if (n - 1) // 3 <= len(twins):
                kinds = {fault.kind for fault in plan} - {FaultKind.PARTITION}  # the twins' split
                assert kinds == {FaultKind.CRASH}  # no budget left: a plain crash


def test_block_requests_are_checked_and_hold_while_runs_are_applied() -> None:
    # Nodes come back ~20 blocks behind; the others keep committing while they catch up.
    runs = (
        (4, 7, (Fault(FaultKind.CRASH, 300, 2_500, (1,)), Fault(FaultKind.CRASH, 2_700, 4_000, (2,)))),
        (7, 11, (Fault(FaultKind.CRASH, 300, 2_500, (1, 4)),)),
    )
    requests = while_applying = 0
    for n, seed, plan in runs:
        result = check_simulation(sim_config(n, seed, faults=plan, client_tx_interval_ms=20))
        requests += result.stats.block_requests
        while_applying += result.stats.block_requests_while_applying
    assert requests > 0
    assert while_applying > 0  # the window exists, and what was asked in it was still lacking


@dataclasses.dataclass(frozen=True)
class _Node:
    id: int
    key: bytes


def _checker() -> InvariantChecker:
    return InvariantChecker(
        chain_id="test",
        faulty_keys=frozenset(),
        caches=Caches("test"),
        describe=lambda: "config",
        precision_ms=50,
        clock_offset_ms_max=0,
        message_delay_ms=lambda round_: 200,
    )


@pytest.mark.parametrize(
    ("first", "last", "downloaded", "what"),
    [
        (5, 9, (), "committed up to 5"),
        (7, 9, (), "while it applies the run up to 8"),
        (9, 12, (11,), "it holds 11 downloaded"),
    ],
)
def test_invalid_a_block_request_for_a_height_not_lacking_fails_the_run(
    first: int, last: int, downloaded: tuple[int, ...], what: str
) -> None:
    checker = _checker()
    node = _Node(1, b"\x01" * 32)
    with pytest.raises(InvariantViolation, match=what):
        checker.on_block_request(
            node,  # type: ignore[arg-type]
            first,
            last,
            committed=5,
            applying_through=8,
            is_downloaded=downloaded.__contains__,
        )
    # The heights it lacks may be asked (again, after a timeout) at any time.
    checker.on_block_request(
        node,  # type: ignore[arg-type]
        9,
        14,
        committed=5,
        applying_through=8,
        is_downloaded=(15,).__contains__,
    )


def test_invalid_a_block_request_for_the_block_consensus_decided_fails_the_run() -> None:
    checker = _checker()
    node = _Node(1, b"\x01" * 32)
    with pytest.raises(InvariantViolation, match="while it writes block 6"):
        checker.on_block_request(
            node,  # type: ignore[arg-type]
            6,
            6,
            committed=5,
            applying_through=0,
            decided=6,
            is_downloaded=().__contains__,
        )
    checker.on_block_request(
        node,  # type: ignore[arg-type]
        7,
        9,
        committed=5,
        applying_through=0,
        decided=6,
        is_downloaded=().__contains__,
    )


def test_offloaded_work_costs_virtual_time_by_its_blocks_and_txs() -> None:
    simulation = Simulation(sim_config(4, 3, heights_after_gst=3))
    simulation.run()
    store = simulation.peers[0].store
    run = []
    for height in range(1, 4):
        block, raw, commit = store.get_block(height), store.get_block_raw(height), store.get_commit(height)
        assert block is not None
        assert raw is not None
        assert commit is not None
        run.append(SyncedBlock(block, raw, commit, b"peer"))
    txs = sum(len(item.block.txs) for item in run)
    assert txs > 0
    assert compute_offload_ms((1, 2), {}) == OFFLOAD_MS  # a store write, a range read
    assert compute_offload_ms((run,), {}) == OFFLOAD_MS + 3 * OFFLOAD_MS_PER_BLOCK + txs // OFFLOAD_TXS_PER_MS
    first = run[0].block
    assert compute_offload_ms((first,), {"known": None}) == (
        OFFLOAD_MS + OFFLOAD_MS_PER_BLOCK + len(first.txs) // OFFLOAD_TXS_PER_MS
    )
    raws = [raw for item in run for raw in item.block.txs]
    assert compute_offload_ms((raws,), {"chain_id": "x"}) == OFFLOAD_MS + txs // OFFLOAD_TXS_PER_MS
