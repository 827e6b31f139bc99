"""`medledger verify` refuses every block a live node refuses: one test per block rule.

Each test writes a governed 4-validator chain of honest blocks into a real LevelDB store, then one
block on top that breaks exactly one rule yet carries a certificate a quorum of the validators
validly signed (`forged_chain`): only the rule is wrong, so a verifier that skips the rule calls
the store clean. The forged block is refused three ways:

(a) `check_all` (what `medledger verify` runs) reports a problem at that height, and nowhere else;
(b) the `medledger verify --home` command exits 1 and prints that problem;
(c) the live pipeline (`BlockExecutor.validate_certified`, after decoding the bytes as block sync
    does) refuses the same block on the same tip, for the same `BlockRule`.

One positive test shows an honest chain that changes its validator set by governance verifies
clean, so the next-validators and validators rules are checked against the right sets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Final

import pytest
from click.testing import CliRunner
from forged_chain import DATA_DIR, ChainWriter, ForgedBlock, make_chain_app, make_validator

from medledger.chain.errors import (
    BlockRule,
    InvalidBlockError,
    InvalidCommitError,
    StateDivergedError,
    StoreCorruptedError,
)
from medledger.chain.executor import BlockExecutor
from medledger.chain.governance import HISTORY_MAX
from medledger.chain.integrity import IntegrityReport, check_all
from medledger.chain.limits import BLOCK_BYTES_MAX
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_commit
from medledger.chain.types import ValidatorSet
from medledger.chain.validation import decode_block
from medledger.crypto import Identity
from medledger.node.cli import main

#: The CLI's line for a problem (`node/cli/verify.py` `_print_report`).
PROBLEM_LINE: Final = "problem:     height {height}: "


@pytest.fixture
def chain(tmp_path: Path) -> ChainWriter:
    """Honest blocks committed; the next block is the test's to forge."""
    writer = ChainWriter(tmp_path / "home" / DATA_DIR)
    writer.commit_honest_blocks()
    return writer


def run_verify(chain: ChainWriter) -> tuple[IntegrityReport, str, int]:
    """Close the chain's store; `check_all` on it, then `medledger verify` on a home holding it."""
    chain.close()
    home = chain.make_home(chain.path.parent)
    result = CliRunner().invoke(main, ["verify", "--home", str(home)])
    store = BlockStore.open(chain.path, create=False)
    try:
        report = check_all(store, chain.genesis, lambda: make_chain_app(chain.genesis))
    finally:
        store.close()
    return report, result.output, result.exit_code


def pipeline_refusal(chain: ChainWriter, forged: ForgedBlock) -> InvalidBlockError | StateDivergedError:
    """(c) `forged` as a peer would serve it (bytes and certificate) on the chain's tip, its parent:
    decoded, then `BlockExecutor.validate_certified`; the refusal, and nothing applied."""
    executor = BlockExecutor(store=chain.store, app=chain.app, genesis=chain.genesis)
    tip = (chain.store.height, chain.store.last_block_hash, chain.store.state_root)

    def offer() -> None:
        block = decode_block(forged.raw, max_bytes=BLOCK_BYTES_MAX)
        executor.validate_certified(block, forged.commit, raw=forged.raw)

    with pytest.raises((InvalidBlockError, StateDivergedError)) as refused:
        offer()
    assert (chain.store.height, chain.store.last_block_hash, chain.store.state_root) == tip
    error = refused.value
    assert isinstance(error, InvalidBlockError | StateDivergedError)
    return error


def assert_verify_refuses(
    chain: ChainWriter,
    forged: ForgedBlock,
    rule: BlockRule,
    *,
    on_top: tuple[ForgedBlock, ...] = (),
    also_at: frozenset[int] = frozenset(),
    unreadable_in_store: bool = False,
) -> InvalidBlockError | StateDivergedError:
    """`forged` is refused for `rule` by the live pipeline on its parent; written on top of the
    honest chain (and `on_top` over it), by `check_all` and by the CLI, at its height (and at most
    `also_at` besides). Returns the pipeline's refusal.

    `unreadable_in_store`: the store cannot read it as the block at its height (its bytes do not
    decode, or its header names another height), so verify reports store damage (rule None, as for
    any record the store cannot read) where the pipeline names `rule`.
    """
    height = forged.height
    assert height == chain.next_height
    refused = pipeline_refusal(chain, forged)
    assert refused.rule is rule, refused
    for block in (forged, *on_top):
        chain.save(block)
    report, output, exit_code = run_verify(chain)
    assert not report.is_clean, f"verify accepted a block breaking rule {rule}"
    heights = {p.height for p in report.problems}
    assert height in heights, report.problems
    assert heights <= {height, *also_at}, report.problems
    first = next(p for p in report.problems if p.height == height)
    if unreadable_in_store:
        assert first.rule is None, first
    else:
        assert first.rule is rule, report.problems
    assert exit_code == 1, output
    assert PROBLEM_LINE.format(height=height) in output, output
    assert "result:      CORRUPTED" in output, output
    return refused


def other_set(chain: ChainWriter, height: int) -> ValidatorSet:
    """A set that is not the one governing `height`: it without its last member."""
    validators = chain.validators_for(height).validators
    return ValidatorSet(validators[:-1])


# -- the block on its own ------------------------------------------------------------------------


def test_invalid_verify_chain_id(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(honest, header=replace(honest.block.header, chain_id="another-chain"))
    assert_verify_refuses(chain, forged, BlockRule.CHAIN_ID)


@pytest.mark.parametrize("delta", [1, -1], ids=["more-than-carried", "fewer-than-carried"])
def test_invalid_verify_tx_count(chain: ChainWriter, delta: int) -> None:
    honest = chain.build([chain.kv_tx(b"k"), chain.kv_tx(b"l")])
    forged = chain.forge(
        honest, header=replace(honest.block.header, tx_count=honest.block.header.tx_count + delta)
    )
    # Under a block that is right in itself: a store whose tip does not decode does not even open.
    assert_verify_refuses(
        chain, forged, BlockRule.ENCODING, on_top=(chain.child_of(forged),), unreadable_in_store=True
    )


@pytest.mark.parametrize("delta", [1, -1], ids=["later", "earlier"])
def test_invalid_verify_height(chain: ChainWriter, delta: int) -> None:
    """Stored at the next height, the header names another (a store refuses to read it)."""
    honest = chain.build([chain.kv_tx(b"k")])
    header = replace(honest.block.header, height=honest.block.header.height + delta)
    forged = chain.forge(honest, header=header)
    assert forged.height == chain.next_height
    assert_verify_refuses(
        chain, forged, BlockRule.HEIGHT, on_top=(chain.child_of(forged),), unreadable_in_store=True
    )


def test_invalid_verify_tip_that_does_not_decode(chain: ChainWriter) -> None:
    """At the tip the store itself refuses to open (it reads its tip block); verify says so."""
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(honest, header=replace(honest.block.header, tx_count=2))
    assert pipeline_refusal(chain, forged).rule is BlockRule.ENCODING
    chain.save(forged)
    chain.close()
    with pytest.raises(StoreCorruptedError, match=f"block {forged.height}"):
        BlockStore.open(chain.path, create=False)
    result = CliRunner().invoke(main, ["verify", "--home", str(chain.make_home(chain.path.parent))])
    assert result.exit_code == 1, result.output
    assert f"block {forged.height}" in result.output, result.output
    assert "result:      CORRUPTED" in result.output, result.output


def test_invalid_verify_tx_root(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    other_root = chain.build([chain.kv_tx(b"other")]).block.header.tx_root
    forged = chain.forge(honest, header=replace(honest.block.header, tx_root=other_root))
    assert_verify_refuses(chain, forged, BlockRule.TX_ROOT)


# -- the block on its parent ---------------------------------------------------------------------


def test_invalid_verify_parent_hash(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    grandparent = chain.store.get_block(chain.store.height - 1)
    assert grandparent is not None
    forged = chain.forge(honest, header=replace(honest.block.header, parent_hash=grandparent.hash()))
    assert_verify_refuses(chain, forged, BlockRule.PARENT)


@pytest.mark.parametrize("offset_ms", [0, -1], ids=["equal", "earlier"])
def test_invalid_verify_time_not_after_parent(chain: ChainWriter, offset_ms: int) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(
        honest, header=replace(honest.block.header, time_ms=chain.store.last_block_time_ms + offset_ms)
    )
    assert_verify_refuses(chain, forged, BlockRule.TIME)


def test_invalid_verify_state_root(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    parent = chain.store.get_block(chain.store.height)
    assert parent is not None
    # The state root the parent was built on: a writer that forgot to execute the parent.
    assert parent.header.state_root != honest.block.header.state_root
    assert_verify_refuses(
        chain,
        chain.forge(honest, header=replace(honest.block.header, state_root=parent.header.state_root)),
        BlockRule.STATE_ROOT,
    )


def test_invalid_verify_validators_hash(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(
        honest,
        header=replace(honest.block.header, validators_hash=other_set(chain, chain.next_height).hash()),
    )
    assert_verify_refuses(chain, forged, BlockRule.VALIDATORS)


def test_invalid_verify_next_validators_hash(chain: ChainWriter) -> None:
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(
        honest,
        header=replace(
            honest.block.header, next_validators_hash=other_set(chain, chain.next_height + 1).hash()
        ),
    )
    assert_verify_refuses(chain, forged, BlockRule.NEXT_VALIDATORS)


@pytest.mark.parametrize("who", ["another-validator", "not-a-validator", "another-rounds-proposer"])
def test_invalid_verify_proposer_not_the_rounds(chain: ChainWriter, who: str) -> None:
    height = chain.next_height
    validators = chain.validators_for(height)
    honest = chain.build([chain.kv_tx(b"k")])
    if who == "another-validator":
        forged = chain.forge(
            honest, header=replace(honest.block.header, proposer=validators.get_proposer(height, 1).sign_key)
        )
    elif who == "not-a-validator":
        forged = chain.forge(
            honest, header=replace(honest.block.header, proposer=chain.outsider().public.sign_key)
        )
    else:  # round 1 of this height, proposed by round 0's proposer
        assert honest.block.header.round == 0
        forged = chain.forge(honest, header=replace(honest.block.header, round=1))
    assert forged.header.proposer != validators.get_proposer(height, forged.header.round).sign_key
    assert_verify_refuses(chain, forged, BlockRule.PROPOSER)


# -- the block's transactions --------------------------------------------------------------------


def test_invalid_verify_tx_repeated_in_the_block(chain: ChainWriter) -> None:
    tx = chain.kv_tx(b"k")
    honest = chain.build([tx])
    assert_verify_refuses(chain, chain.forge(honest, txs=[tx.raw, tx.raw]), BlockRule.REPEATED_TX)


def test_invalid_verify_tx_committed_in_an_earlier_block(chain: ChainWriter) -> None:
    earlier = chain.store.get_block(1)
    assert earlier is not None
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(honest, txs=[honest.block.txs[0], earlier.txs[0]])
    # Writing it moved that tx's index entry to this block: block 1's replay sees that too.
    assert_verify_refuses(chain, forged, BlockRule.REPEATED_TX, also_at=frozenset({1}))


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_invalid_verify_malformed_tx(chain: ChainWriter, kind: str) -> None:
    tx = chain.kv_tx(b"k")
    honest = chain.build([tx])
    raw = b"\xc1 not a transaction" if kind == "garbage" else tx.raw[:-1]
    assert_verify_refuses(chain, chain.forge(honest, txs=[raw]), BlockRule.MALFORMED_TX)


# -- the certificate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how", ["signer-not-a-validator", "too-few-signers", "bad-signature", "validator-signed-twice"]
)
def test_invalid_verify_certificate(chain: ChainWriter, how: str) -> None:
    """An honest block whose certificate alone is wrong."""
    honest = chain.build([chain.kv_tx(b"k")])
    header = honest.block.header
    quorum = chain.quorum_of(header.height)
    if how == "signer-not-a-validator":  # a full quorum, plus one precommit of an outsider
        commit = chain.certify(header, extra=chain.certify(header, signers=[chain.outsider()]).signatures)
    elif how == "too-few-signers":
        commit = chain.certify(header, signers=quorum[:-1])
    elif how == "bad-signature":  # one of the quorum signed this block at another round
        wrong = sign_commit(
            quorum[-1:],
            chain_id=header.chain_id,
            height=header.height,
            round_=header.round + 1,
            block_hash=header.hash(),
        )
        commit = chain.certify(header, signers=quorum[:-1], extra=wrong.signatures)
    else:  # a quorum only if one validator counts twice
        valid = chain.certify(header, signers=quorum[:-1])
        commit = dataclasses.replace(valid, signatures=(*valid.signatures, valid.signatures[0]))
    refused = assert_verify_refuses(chain, chain.forge(honest, commit=commit), BlockRule.CERTIFICATE)
    # Only a signature that does not verify marks the sender as a forger (a peer to drop).
    assert isinstance(refused, InvalidCommitError)
    assert refused.forged == (how == "bad-signature")


# -- governance: the sets a header names ---------------------------------------------------------


def add_validator_by_governance(chain: ChainWriter) -> tuple[Identity, int]:
    """Commit the block where a quorum approves a new validator; (its identity, first height)."""
    newcomer = Identity.generate()
    chain.identities[newcomer.public.sign_key] = newcomer
    validator = make_validator(newcomer, "validator-new")
    approvers = chain.quorum_of(chain.next_height)
    executed = chain.commit([chain.approve_add(a, validator) for a in approvers])
    assert all(r.ok for r in executed.execution.results), executed.execution.results
    since = executed.block.header.height + 2  # governance's activation delay
    assert chain.validators_for(since).contains(newcomer.public.sign_key)
    assert not chain.validators_for(since - 1).contains(newcomer.public.sign_key)
    return newcomer, since


def test_an_honest_chain_with_a_validator_set_change_verifies_clean(chain: ChainWriter) -> None:
    _, since = add_validator_by_governance(chain)
    while chain.next_height <= since + 2:
        chain.commit([chain.kv_tx(f"after-{chain.next_height}".encode())])
    announcing = chain.store.get_block(since - 1)
    first = chain.store.get_block(since)
    assert announcing is not None
    assert first is not None
    new_set = chain.validators_for(since)
    assert len(new_set) == len(chain.genesis.validators) + 1
    assert announcing.header.validators_hash == chain.genesis.validators.hash()
    assert announcing.header.next_validators_hash == new_set.hash()
    assert first.header.validators_hash == new_set.hash()
    height = chain.store.height
    report, output, exit_code = run_verify(chain)
    assert report.is_clean, report.problems
    assert (report.blocks_checked, report.state_checked) == (height, True)
    assert exit_code == 0, output
    assert "result:      clean" in output, output


def test_an_honest_chain_with_more_set_changes_than_governance_keeps_verifies_clean(
    chain: ChainWriter,
) -> None:
    """Governance keeps the last `HISTORY_MAX` + 1 sets only; verify must still know the sets of
    the blocks before them (a replay knows each block's set from the state under it).

    Each change adds a fresh validator or removes the longest-serving one, so no set repeats.
    """
    serving = [v.sign_key for v in chain.genesis.validators.validators]
    for change in range(HISTORY_MAX + 2):
        approvers = chain.quorum_of(chain.next_height)
        if change % 2 == 0:
            newcomer = Identity.generate()
            chain.identities[newcomer.public.sign_key] = newcomer
            validator = make_validator(newcomer, f"validator-new-{change}")
            serving.append(newcomer.public.sign_key)
            txs = [chain.approve_add(a, validator) for a in approvers]
        else:
            leaving = serving.pop(0)
            txs = [chain.approve_remove(a, leaving) for a in approvers]
        executed = chain.commit(txs)
        assert all(r.ok for r in executed.execution.results), executed.execution.results
        chain.commit([])  # the change takes effect two blocks on: no other change until then
    # The history has forgotten the genesis set that certified the first blocks.
    assert chain.validators_for(1) != chain.genesis.validators
    report, output, exit_code = run_verify(chain)
    assert report.is_clean, report.problems
    assert exit_code == 0, output


def test_invalid_verify_next_validators_hash_ignoring_a_set_change(chain: ChainWriter) -> None:
    """The block before a change announces the old set again (a writer that ignores governance)."""
    _, since = add_validator_by_governance(chain)
    assert chain.next_height == since - 1
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(
        honest, header=replace(honest.block.header, next_validators_hash=chain.genesis.validators.hash())
    )
    assert_verify_refuses(chain, forged, BlockRule.NEXT_VALIDATORS)


def test_invalid_verify_validators_hash_ignoring_a_set_change(chain: ChainWriter) -> None:
    """The first block of the new set names the old one, certified by the new set's quorum."""
    _, since = add_validator_by_governance(chain)
    chain.commit([chain.kv_tx(b"announce")])
    assert chain.next_height == since
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(
        honest, header=replace(honest.block.header, validators_hash=chain.genesis.validators.hash())
    )
    assert_verify_refuses(chain, forged, BlockRule.VALIDATORS)


def test_forged_chain_kit_certifies_with_a_quorum(chain: ChainWriter) -> None:
    """The kit's own check: an unforged block verifies clean, so each refusal above is the rule's."""
    honest = chain.build([chain.kv_tx(b"k")])
    forged = chain.forge(honest)
    assert forged.raw == honest.raw
    assert forged.header == honest.block.header
    assert len(forged.commit.signatures) == chain.validators_for(forged.height).quorum
    chain.save(forged)
    report, output, exit_code = run_verify(chain)
    assert report.is_clean, report.problems
    assert exit_code == 0, output
