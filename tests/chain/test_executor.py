"""The block pipeline (`chain/executor.py`) on its own: what a proposal and a certified block must
satisfy, that a refusal names its rule and changes nothing, and the cases only a certificate
changes (no tx signatures; a block that does not fit our tip is our divergence, not the peer's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chain_testkit import (
    NOW_MS,
    LocalChain,
    StoreSnapshot,
    make_kv_tx,
    make_tx,
    snapshot_store,
)

from medledger.chain.codec import encode
from medledger.chain.errors import BlockRule, InvalidBlockError, StateDivergedError
from medledger.chain.execution import ExecutedBlock, build_block
from medledger.chain.types import Block
from medledger.chain.validation import CheckedTx, compute_tx_root
from medledger.crypto import Identity
from medledger.node.fixture_app import KIND_SET, encode_set_body

IDENTITY = Identity.generate()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[LocalChain]:
    local_chain = LocalChain.create(tmp_path / "db", IDENTITY)
    try:
        yield local_chain
    finally:
        local_chain.close()


def assert_refused(chain: LocalChain, rule: BlockRule, attempt: Callable[[], ExecutedBlock]) -> None:
    """`attempt` is refused with `rule`, and not one byte of the store changed."""
    before: StoreSnapshot = snapshot_store(chain.store)
    with pytest.raises(InvalidBlockError) as refused:
        attempt()
    assert refused.value.rule is rule, refused.value
    assert snapshot_store(chain.store) == before


def with_txs(chain: LocalChain, txs: list[CheckedTx], raws: tuple[bytes, ...]) -> Block:
    """The next block as an honest proposer builds it for `txs`, then carrying `raws` instead (the
    tx root recomputed, so only the txs themselves are wrong)."""
    honest = build_block(
        store=chain.store,
        validators=chain.genesis.validators,
        proposer=IDENTITY.public.sign_key,
        round_=0,
        time_ms=NOW_MS,
        txs=txs,
    ).header
    header = dataclasses.replace(honest, tx_count=len(raws), tx_root=compute_tx_root(raws))
    return Block(header, raws)


def test_a_proposal_and_its_certified_twin_execute_alike(chain: LocalChain) -> None:
    executed = chain.propose([make_kv_tx(IDENTITY, b"k", b"v", nonce=1)], time_ms=NOW_MS)
    as_proposal = chain.executor.validate_proposal(executed.block)
    as_certified = chain.executor.validate_certified(executed.block, chain.certify(executed))
    assert as_proposal.execution == as_certified.execution == executed.execution


def test_invalid_proposal_with_a_forged_tx_signature(chain: LocalChain) -> None:
    good = make_kv_tx(IDENTITY, b"k", b"v", nonce=1)
    forged = dataclasses.replace(good.tx, signature=bytes(64))
    block = with_txs(chain, [good], (encode(forged),))
    assert_refused(chain, BlockRule.TX_SIGNATURE, lambda: chain.executor.validate_proposal(block))


def test_invalid_certified_block_with_a_tx_of_another_chain(chain: LocalChain) -> None:
    """A certificate vouches for signatures, not for the chain a tx was signed for."""
    other = make_tx(
        IDENTITY, kind=KIND_SET, body=encode_set_body(b"k", b"v"), nonce=1, chain_id="another-chain"
    )
    block = with_txs(chain, [], (other.raw,))
    commit = chain.certify(ExecutedBlock(block, b"", [], chain.propose([], time_ms=NOW_MS).execution))
    assert_refused(chain, BlockRule.CHAIN_ID, lambda: chain.executor.validate_certified(block, commit))


def test_invalid_certified_block_repeating_a_committed_tx(chain: LocalChain) -> None:
    tx = make_kv_tx(IDENTITY, b"k", b"v", nonce=1)
    chain.produce([tx], time_ms=NOW_MS)
    block = with_txs(chain, [], (tx.raw,))
    commit = chain.certify(ExecutedBlock(block, b"", [], chain.propose([], time_ms=NOW_MS + 1).execution))
    assert_refused(chain, BlockRule.REPEATED_TX, lambda: chain.executor.validate_certified(block, commit))


def test_invalid_certified_block_on_another_parent_is_our_divergence(chain: LocalChain) -> None:
    """A quorum certified it, so the serving peer is not at fault: `StateDivergedError` halts."""
    executed = chain.propose([], time_ms=NOW_MS)
    header = dataclasses.replace(executed.block.header, parent_hash=b"\x01" * 32)
    block = Block(header, executed.block.txs)
    before = snapshot_store(chain.store)
    with pytest.raises(StateDivergedError) as diverged:
        chain.executor.validate_certified(block, chain.certify(dataclasses.replace(executed, block=block)))
    assert diverged.value.rule is BlockRule.PARENT
    assert snapshot_store(chain.store) == before


def test_invalid_proposal_on_another_parent_is_the_proposers_fault(chain: LocalChain) -> None:
    executed = chain.propose([], time_ms=NOW_MS)
    block = Block(dataclasses.replace(executed.block.header, parent_hash=b"\x01" * 32), executed.block.txs)
    assert_refused(chain, BlockRule.PARENT, lambda: chain.executor.validate_proposal(block))


def test_invalid_certified_block_with_a_short_certificate(chain: LocalChain) -> None:
    executed = chain.propose([], time_ms=NOW_MS)
    commit = dataclasses.replace(chain.certify(executed), signatures=())
    assert_refused(
        chain, BlockRule.CERTIFICATE, lambda: chain.executor.validate_certified(executed.block, commit)
    )


def test_committing_moves_the_tip_and_the_next_block_builds_on_it(chain: LocalChain) -> None:
    first = chain.produce([], time_ms=NOW_MS)
    second = chain.propose([], time_ms=NOW_MS)  # our clock went back: block time still moves on
    assert chain.store.height == 1
    assert second.block.header.parent_hash == first.executed.block.hash()
    assert second.block.header.time_ms > first.executed.block.header.time_ms
