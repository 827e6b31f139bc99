"""Transaction admission (`check_tx`), commit certificates (`validate_commit`), quorums, proposers."""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations
from typing import Any

import pytest
from chain_testkit import CHAIN_ID, NOW_MS, make_validator_set, sign_commit
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.chain.codec import encode
from medledger.chain.errors import (
    BadSignatureError,
    InvalidBlockError,
    InvalidCommitError,
    InvalidTxError,
    MalformedTxError,
    StaleTxError,
    TxTooLargeError,
    WrongChainError,
)
from medledger.chain.limits import TX_BODY_BYTES_MAX, TX_BYTES_MAX, TX_CLOCK_SKEW_MS_MAX
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    Block,
    Commit,
    CommitSig,
    Header,
    Tx,
    Validator,
    ValidatorSet,
    VoteKind,
    compute_tx_id,
    compute_tx_signing_bytes,
)
from medledger.chain.validation import (
    CheckedTx,
    check_tx,
    compute_tx_root,
    validate_block_shape,
    validate_commit,
    validate_header_link,
)
from medledger.crypto import Identity

ALICE = Identity.generate()
BOB = Identity.generate()
#: Four validators, in validator-set (sign key) order.
FOUR = sorted((Identity.generate() for _ in range(4)), key=lambda i: i.public.sign_key)
FOUR_SET = make_validator_set(FOUR)
OUTSIDER = Identity.generate()
BLOCK_HASH = bytes(range(32))
OTHER_HASH = bytes(range(1, 33))


def signed(
    identity: Identity = ALICE,
    *,
    body: bytes = b"payload",
    chain_id: str = CHAIN_ID,
    timestamp_ms: int = NOW_MS,
    nonce: int = 7,
) -> tuple[Tx, bytes]:
    tx, raw, _ = sign_tx(
        identity, chain_id=chain_id, kind="kv.set", body=body, nonce=nonce, timestamp_ms=timestamp_ms
    )
    return tx, raw


def assert_tx_rejected(raw: bytes, error: type[InvalidTxError], *, chain_id: str = CHAIN_ID) -> None:
    """`check_tx` refuses with exactly this error type (it is pure: there is no state to change)."""
    with pytest.raises(InvalidTxError) as info:
        check_tx(raw, chain_id=chain_id, now_ms=NOW_MS)
    assert type(info.value) is error, info.value


# -- check_tx ------------------------------------------------------------------------------------


def test_check_tx_accepts_a_good_tx() -> None:
    tx, raw = signed()
    checked = check_tx(raw, chain_id=CHAIN_ID, now_ms=NOW_MS)
    assert checked == CheckedTx(tx, raw, compute_tx_id(raw))
    assert checked.tx.sender == ALICE.public.sign_key
    assert len(checked.tx_id) == 32


def test_sign_tx_returns_consistent_tx_bytes_and_id() -> None:
    tx, raw, tx_id = sign_tx(ALICE, chain_id=CHAIN_ID, kind="kv.set", body=b"x", nonce=1, timestamp_ms=5)
    assert encode(tx) == raw
    assert tx_id == compute_tx_id(raw)
    assert tx.signing_bytes() == compute_tx_signing_bytes(CHAIN_ID, "kv.set", tx.sender, 1, 5, b"x")


def test_check_tx_accepts_timestamps_at_the_skew_bounds() -> None:
    for offset in (-TX_CLOCK_SKEW_MS_MAX, 0, TX_CLOCK_SKEW_MS_MAX):
        _, raw = signed(timestamp_ms=NOW_MS + offset)
        assert check_tx(raw, chain_id=CHAIN_ID, now_ms=NOW_MS).tx.timestamp_ms == NOW_MS + offset


def test_check_tx_accepts_the_largest_body() -> None:
    _, raw = signed(body=bytes(TX_BODY_BYTES_MAX))
    assert len(raw) <= TX_BYTES_MAX
    assert check_tx(raw, chain_id=CHAIN_ID, now_ms=NOW_MS).tx.body == bytes(TX_BODY_BYTES_MAX)


def test_invalid_wrong_chain_id() -> None:
    _, raw = signed(chain_id="another-chain")
    assert_tx_rejected(raw, WrongChainError)


def test_invalid_tx_relabelled_to_another_chain() -> None:
    """The chain id is signed: moving a tx to another chain breaks its signature there."""
    tx, _ = signed(chain_id="another-chain")
    moved = encode(dataclasses.replace(tx, chain_id=CHAIN_ID))
    assert_tx_rejected(moved, BadSignatureError)


def test_invalid_bad_signature() -> None:
    tx, _ = signed()
    for index in (0, 31, 63):
        sig = bytearray(tx.signature)
        sig[index] ^= 0x01
        assert_tx_rejected(encode(dataclasses.replace(tx, signature=bytes(sig))), BadSignatureError)
    assert_tx_rejected(encode(dataclasses.replace(tx, signature=bytes(64))), BadSignatureError)


@pytest.mark.parametrize(
    "change",
    [
        {"body": b"payloae"},
        {"body": b""},
        {"kind": "kv.del"},
        {"nonce": 8},
        {"timestamp_ms": NOW_MS + 1},
    ],
    ids=lambda c: next(iter(c)),
)
def test_invalid_altered_field(change: dict[str, Any]) -> None:
    tx, _ = signed()
    assert_tx_rejected(encode(dataclasses.replace(tx, **change)), BadSignatureError)


def test_invalid_altered_sender() -> None:
    tx, _ = signed(ALICE)
    assert_tx_rejected(encode(dataclasses.replace(tx, sender=BOB.public.sign_key)), BadSignatureError)
    # A sender that is not a valid curve point is refused the same way, not with a crash.
    assert_tx_rejected(encode(dataclasses.replace(tx, sender=bytes(32))), BadSignatureError)
    assert_tx_rejected(encode(dataclasses.replace(tx, sender=b"\xff" * 32)), BadSignatureError)


def test_invalid_signature_from_another_domain() -> None:
    """A vote signature over the same bytes is not a tx signature: the domain tags differ."""
    tx, _ = signed()
    forged = ALICE.sign(tx.signing_bytes().removeprefix(b"medledger/tx/v1\x00"))
    assert_tx_rejected(encode(dataclasses.replace(tx, signature=forged)), BadSignatureError)


def test_invalid_oversize() -> None:
    assert_tx_rejected(bytes(TX_BYTES_MAX + 1), TxTooLargeError)
    _, raw = signed(body=bytes(TX_BYTES_MAX))  # a correctly signed tx that is simply too big
    assert len(raw) > TX_BYTES_MAX
    assert_tx_rejected(raw, TxTooLargeError)


def test_invalid_body_above_the_body_limit_is_malformed() -> None:
    _, raw = signed(body=bytes(TX_BODY_BYTES_MAX + 1))
    assert len(raw) <= TX_BYTES_MAX
    assert_tx_rejected(raw, MalformedTxError)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"\x80",
        b"\x91\x01",
        encode(Validator("v", bytes(32), bytes(32))),
    ],
    ids=["empty", "reserved-byte", "empty-map", "array", "another-type"],
)
def test_invalid_malformed(raw: bytes) -> None:
    assert_tx_rejected(raw, MalformedTxError)


def test_invalid_malformed_trailing_bytes_or_non_canonical() -> None:
    _, raw = signed()
    assert_tx_rejected(raw + b"\x00", MalformedTxError)
    assert_tx_rejected(raw[:-1], MalformedTxError)


@pytest.mark.parametrize("offset", [TX_CLOCK_SKEW_MS_MAX + 1, -(TX_CLOCK_SKEW_MS_MAX + 1), -NOW_MS])
def test_invalid_stale_or_future_timestamp(offset: int) -> None:
    _, raw = signed(timestamp_ms=NOW_MS + offset)
    assert_tx_rejected(raw, StaleTxError)


@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_check_tx_raises_only_invalid_tx_errors(data: bytes) -> None:
    try:
        checked = check_tx(data, chain_id=CHAIN_ID, now_ms=NOW_MS)
    except InvalidTxError:
        return
    assert encode(checked.tx) == data  # only a genuinely signed canonical tx gets through


@settings(max_examples=300)
@given(index=st.integers(min_value=0), xor=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_of_a_signed_tx_is_rejected(index: int, xor: int) -> None:
    _, raw = signed()
    mutated = bytearray(raw)
    mutated[index % len(raw)] ^= xor
    with pytest.raises(InvalidTxError):
        check_tx(bytes(mutated), chain_id=CHAIN_ID, now_ms=NOW_MS)


# -- validate_commit -----------------------------------------------------------------------------


def assert_commit_rejected(
    commit: Commit,
    validators: ValidatorSet,
    match: str,
    *,
    height: int = 5,
    block_hash: bytes = BLOCK_HASH,
) -> None:
    with pytest.raises(InvalidCommitError, match=match):
        validate_commit(
            commit, chain_id=CHAIN_ID, validators=validators, block_hash=block_hash, height=height
        )


def test_validate_commit_accepts_one_of_one() -> None:
    validators = make_validator_set([ALICE])
    assert validators.quorum == 1
    commit = sign_commit([ALICE], height=5, round_=0, block_hash=BLOCK_HASH)
    validate_commit(commit, chain_id=CHAIN_ID, validators=validators, block_hash=BLOCK_HASH, height=5)


@pytest.mark.parametrize("signers", [*combinations(range(4), 3), (0, 1, 2, 3), (3, 1, 0)])
def test_validate_commit_accepts_three_or_more_of_four(signers: tuple[int, ...]) -> None:
    assert FOUR_SET.quorum == 3
    commit = sign_commit([FOUR[i] for i in signers], height=5, round_=2, block_hash=BLOCK_HASH)
    validate_commit(commit, chain_id=CHAIN_ID, validators=FOUR_SET, block_hash=BLOCK_HASH, height=5)


@pytest.mark.parametrize("signers", [(), (0,), (1, 3), (2, 0)])
def test_invalid_commit_too_few_signers(signers: tuple[int, ...]) -> None:
    commit = sign_commit([FOUR[i] for i in signers], height=5, round_=0, block_hash=BLOCK_HASH)
    assert_commit_rejected(commit, FOUR_SET, rf"{len(signers)} signers, a quorum is 3 of 4")


@pytest.mark.parametrize("signers", [(0, 0, 1), (0, 1, 2, 0), (3, 3, 3)])
def test_invalid_commit_duplicate_signer(signers: tuple[int, ...]) -> None:
    commit = sign_commit([FOUR[i] for i in signers], height=5, round_=0, block_hash=BLOCK_HASH)
    assert_commit_rejected(commit, FOUR_SET, "signed twice")


def test_invalid_commit_non_member_signer() -> None:
    commit = sign_commit([FOUR[0], FOUR[1], OUTSIDER], height=5, round_=0, block_hash=BLOCK_HASH)
    assert_commit_rejected(commit, FOUR_SET, "not a validator")
    # Even on top of a full quorum of members.
    commit = sign_commit([*FOUR, OUTSIDER], height=5, round_=0, block_hash=BLOCK_HASH)
    assert_commit_rejected(commit, FOUR_SET, "not a validator")


def test_invalid_commit_bad_signature() -> None:
    commit = sign_commit(FOUR[:3], height=5, round_=0, block_hash=BLOCK_HASH)
    first = commit.signatures[0]
    broken = CommitSig(first.validator, bytes([first.signature[0] ^ 1]) + first.signature[1:])
    assert_commit_rejected(
        dataclasses.replace(commit, signatures=(broken, *commit.signatures[1:])), FOUR_SET, "does not verify"
    )
    # A signature of one validator presented as another's.
    swapped = CommitSig(FOUR[3].public.sign_key, first.signature)
    assert_commit_rejected(
        dataclasses.replace(commit, signatures=(swapped, *commit.signatures[1:])), FOUR_SET, "does not verify"
    )


@pytest.mark.parametrize(
    ("chain_id", "kind", "round_", "height", "block_hash"),
    [
        ("another-chain", VoteKind.PRECOMMIT, 0, 5, BLOCK_HASH),
        (CHAIN_ID, VoteKind.PREVOTE, 0, 5, BLOCK_HASH),
        (CHAIN_ID, VoteKind.PRECOMMIT, 1, 5, BLOCK_HASH),
        (CHAIN_ID, VoteKind.PRECOMMIT, 0, 6, BLOCK_HASH),
        (CHAIN_ID, VoteKind.PRECOMMIT, 0, 5, OTHER_HASH),
        (CHAIN_ID, VoteKind.PRECOMMIT, 0, 5, b""),
    ],
    ids=["chain", "prevote", "round", "height", "hash", "nil"],
)
def test_invalid_commit_signed_over_other_vote(
    chain_id: str, kind: VoteKind, round_: int, height: int, block_hash: bytes
) -> None:
    """Signatures over another chain, vote kind, round, height or block do not certify this one."""
    votes = sign_commit(
        FOUR[:3], chain_id=chain_id, kind=kind, height=height, round_=round_, block_hash=block_hash
    )
    commit = Commit(5, 0, BLOCK_HASH, votes.signatures)
    assert_commit_rejected(commit, FOUR_SET, "does not verify")


def test_invalid_commit_wrong_height_or_hash() -> None:
    commit = sign_commit(FOUR[:3], height=5, round_=0, block_hash=BLOCK_HASH)
    assert_commit_rejected(commit, FOUR_SET, "another block", height=6)
    assert_commit_rejected(commit, FOUR_SET, "another block", height=4)
    assert_commit_rejected(commit, FOUR_SET, "another block", block_hash=OTHER_HASH)


def test_invalid_commit_against_another_validator_set() -> None:
    commit = sign_commit(FOUR[:3], height=5, round_=0, block_hash=BLOCK_HASH)
    others = make_validator_set([Identity.generate() for _ in range(4)])
    assert_commit_rejected(commit, others, "not a validator")


# -- quorums and proposers -----------------------------------------------------------------------


def _validator_set(n: int) -> ValidatorSet:
    return ValidatorSet.of([Validator(f"v{i}", bytes([i]) * 32, bytes(32)) for i in range(n)])


@pytest.mark.parametrize("n", range(1, 21))
def test_quorum_is_two_thirds_rounded_up(n: int) -> None:
    validators = _validator_set(n)
    assert validators.quorum == math.ceil(2 * n / 3)
    assert validators.max_faulty == (n - 1) // 3
    f = validators.max_faulty
    # Safety: two quorums overlap in more than f validators, so at least one honest one.
    assert 2 * validators.quorum - n > f
    # Liveness: the honest validators alone form a quorum.
    assert validators.quorum <= n - f
    # And f is the most faults tolerated: n >= 3f + 1.
    assert n >= 3 * f + 1


@pytest.mark.parametrize("n", range(1, 8))
def test_any_two_quorums_share_more_than_max_faulty_members(n: int) -> None:
    validators = _validator_set(n)
    keys = [v.sign_key for v in validators.validators]
    quorums = [set(q) for q in combinations(keys, validators.quorum)]
    assert min(len(a & b) for a in quorums for b in quorums) > validators.max_faulty


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_round_robin_proposer_cycles_through_every_validator(n: int) -> None:
    validators = _validator_set(n)
    for height in (1, 2, 10):
        by_round = [validators.get_proposer(height, r) for r in range(n)]
        assert sorted(by_round, key=lambda v: v.sign_key) == list(validators.validators)
        # The cycle repeats with period n.
        assert [validators.get_proposer(height, r + n) for r in range(n)] == by_round
    by_height = [validators.get_proposer(h, 0) for h in range(1, n + 1)]
    assert sorted(by_height, key=lambda v: v.sign_key) == list(validators.validators)
    # Consecutive heights hand the turn to the next validator in set order.
    for h in range(1, 3 * n):
        this = validators.validators.index(validators.get_proposer(h, 0))
        assert validators.validators.index(validators.get_proposer(h + 1, 0)) == (this + 1) % n


def test_validator_set_of_sorts_and_refuses_duplicates_or_empty() -> None:
    assert ValidatorSet.of([_validator_set(3).validators[i] for i in (2, 0, 1)]) == _validator_set(3)
    with pytest.raises(ValueError, match="cannot be empty"):
        ValidatorSet(())
    v = _validator_set(1).validators[0]
    with pytest.raises(ValueError, match="unique"):
        ValidatorSet.of([v, v])
    assert _validator_set(2).contains(bytes([1]) * 32)
    assert not _validator_set(2).contains(bytes([2]) * 32)


# -- blocks --------------------------------------------------------------------------------------


def _block(txs: tuple[bytes, ...], *, chain_id: str = CHAIN_ID) -> Block:
    header = Header(
        chain_id,
        3,
        0,
        OTHER_HASH,
        0,
        bytes(32),
        len(txs),
        compute_tx_root(txs),
        bytes(32),
        bytes(32),
        bytes(32),
    )
    return Block(header, txs)


def test_validate_block_shape_accepts_a_consistent_block() -> None:
    validate_block_shape(_block((b"a", b"b")), chain_id=CHAIN_ID)
    validate_block_shape(_block(()), chain_id=CHAIN_ID)


def test_invalid_block_shape() -> None:
    with pytest.raises(InvalidBlockError, match="chain"):
        validate_block_shape(_block((b"a",), chain_id="another-chain"), chain_id=CHAIN_ID)
    good = _block((b"a", b"b"))
    for txs in ((b"b", b"a"), (b"a", b"c")):
        with pytest.raises(InvalidBlockError, match="tx root"):
            validate_block_shape(Block(good.header, txs), chain_id=CHAIN_ID)


def test_validate_header_link() -> None:
    header = _block(()).header

    def link(
        parent_hash: bytes = OTHER_HASH,
        height: int = 3,
        state_root: bytes = bytes(32),
        validators_hash: bytes = bytes(32),
        parent_time_ms: int = header.time_ms - 1,
    ) -> None:
        validate_header_link(
            header,
            parent_hash=parent_hash,
            parent_time_ms=parent_time_ms,
            height=height,
            state_root=state_root,
            validators_hash=validators_hash,
        )

    link()
    with pytest.raises(InvalidBlockError, match="expected height 4"):
        link(height=4)
    with pytest.raises(InvalidBlockError, match="parent hash"):
        link(parent_hash=BLOCK_HASH)
    with pytest.raises(InvalidBlockError, match="state root"):
        link(state_root=BLOCK_HASH)
    with pytest.raises(InvalidBlockError, match="validator set"):
        link(validators_hash=BLOCK_HASH)
    with pytest.raises(InvalidBlockError, match="not after its parent"):
        link(parent_time_ms=header.time_ms)
