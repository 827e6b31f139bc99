"""The chain's wire structures: Tx, Header, Block, Vote, Commit, validators and genesis.

All are frozen dataclasses with a declared schema, encoded by the canonical codec
(`medledger.chain.codec`). Ids and hashes are `digest` (BLAKE2b-256) of canonical bytes, and
everything a key signs is prefixed with a domain tag so a signature over one kind of message can
never be replayed as another.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import Any, ClassVar, NewType

from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    FixedBytes,
    Seq,
    Struct,
    Text,
    UInt,
    encode,
    encode_primitive,
    to_primitive,
    wire_fields,
)
from medledger.chain.limits import BLOCK_TXS_MAX, TX_BODY_BYTES_MAX, TX_BYTES_MAX, UINT_MAX, VALIDATORS_MAX
from medledger.crypto import HASH_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, digest

Height = NewType("Height", int)
Round = NewType("Round", int)
TxId = NewType("TxId", bytes)
BlockHash = NewType("BlockHash", bytes)

HASH = FixedBytes(HASH_SIZE)
KEY = FixedBytes(PUBLIC_KEY_SIZE)
SIGNATURE = FixedBytes(SIGNATURE_SIZE)
CHAIN_ID = Text()
#: The parent hash of the genesis block's successor is the genesis hash; this is "no hash".
ZERO_HASH = bytes(HASH_SIZE)

TX_SIGN_DOMAIN = b"medledger/tx/v1\x00"
VOTE_SIGN_DOMAIN = b"medledger/vote/v1\x00"
PROPOSAL_SIGN_DOMAIN = b"medledger/proposal/v1\x00"
#: A proposal's `pol_round` when it carries no proof-of-lock round (Tendermint's −1).
NO_ROUND = -1


@dataclasses.dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction. `body` is opaque to the chain: the application decodes it."""

    chain_id: str
    kind: str
    sender: bytes
    nonce: int
    timestamp_ms: int
    body: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        kind=Text(),
        sender=KEY,
        nonce=UInt(),
        timestamp_ms=UInt(),
        body=Bytes(TX_BODY_BYTES_MAX),
        signature=SIGNATURE,
    )

    def signing_bytes(self) -> bytes:
        return compute_tx_signing_bytes(
            self.chain_id, self.kind, self.sender, self.nonce, self.timestamp_ms, self.body
        )


def compute_tx_signing_bytes(
    chain_id: str, kind: str, sender: bytes, nonce: int, timestamp_ms: int, body: bytes
) -> bytes:
    """What the sender signs: the domain tag and the canonical map of every field but the signature."""
    return TX_SIGN_DOMAIN + encode_primitive(
        {
            "body": body,
            "chain_id": chain_id,
            "kind": kind,
            "nonce": nonce,
            "sender": sender,
            "timestamp_ms": timestamp_ms,
        }
    )


def compute_tx_id(tx_bytes: bytes) -> TxId:
    """A tx id is the hash of the canonical signed encoding."""
    return TxId(digest(tx_bytes))


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    chain_id: str
    height: int
    round: int
    parent_hash: bytes
    time_ms: int
    proposer: bytes
    tx_count: int
    tx_root: bytes
    #: The application's state root after executing the parent block (the "app hash").
    state_root: bytes
    validators_hash: bytes
    next_validators_hash: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        height=UInt(minimum=1),
        round=UInt(),
        parent_hash=HASH,
        time_ms=UInt(),
        proposer=KEY,
        tx_count=UInt(BLOCK_TXS_MAX),
        tx_root=HASH,
        state_root=HASH,
        validators_hash=HASH,
        next_validators_hash=HASH,
    )

    def hash(self) -> BlockHash:
        return BlockHash(digest(encode(self)))


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """A header and the canonical encodings of its transactions.

    Txs travel as their encoded bytes: the tx root is over their ids, so a block is checked against
    its header without decoding every transaction. The block hash is the header hash and so
    excludes the commit certificate: any quorum certifies the same block.
    """

    header: Header
    txs: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        header=Struct(Header),
        txs=Seq(Bytes(TX_BYTES_MAX, 1), BLOCK_TXS_MAX),
    )

    def __post_init__(self) -> None:
        if len(self.txs) != self.header.tx_count:
            raise ValueError(f"header says {self.header.tx_count} txs, block has {len(self.txs)}")

    def hash(self) -> BlockHash:
        return self.header.hash()


class VoteKind(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Vote:
    """A validator's signed prevote or precommit; an empty block hash is a vote for nil."""

    chain_id: str
    kind: int
    height: int
    round: int
    block_hash: bytes
    validator: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        kind=UInt(maximum=max(VoteKind), minimum=min(VoteKind)),
        height=UInt(minimum=1),
        round=UInt(),
        block_hash=Bytes(HASH_SIZE),
        validator=KEY,
        signature=SIGNATURE,
    )

    def __post_init__(self) -> None:
        if len(self.block_hash) not in (0, HASH_SIZE):
            raise ValueError("block_hash must be empty (nil) or a hash")

    def signing_bytes(self) -> bytes:
        return compute_vote_signing_bytes(
            self.chain_id, VoteKind(self.kind), self.height, self.round, self.block_hash, self.validator
        )


def compute_vote_signing_bytes(
    chain_id: str, kind: VoteKind, height: int, round_: int, block_hash: bytes, validator: bytes
) -> bytes:
    return VOTE_SIGN_DOMAIN + encode_primitive(
        {
            "block_hash": block_hash,
            "chain_id": chain_id,
            "height": height,
            "kind": int(kind),
            "round": round_,
            "validator": validator,
        }
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CommitSig:
    validator: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(validator=KEY, signature=SIGNATURE)


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """A commit certificate: a quorum of precommits for one block at one (height, round)."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        height=UInt(minimum=1),
        round=UInt(),
        block_hash=HASH,
        signatures=Seq(Struct(CommitSig), VALIDATORS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Validator:
    """A validator: its name, ed25519 signing key and x25519 encryption key."""

    name: str
    sign_key: bytes
    enc_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(name=Text(), sign_key=KEY, enc_key=KEY)


@dataclasses.dataclass(frozen=True, slots=True)
class ValidatorSet:
    """Validators sorted by signing key; every validator has one vote (Proof-of-Authority)."""

    validators: tuple[Validator, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        validators=Seq(Struct(Validator), VALIDATORS_MAX)
    )

    def __post_init__(self) -> None:
        keys = [v.sign_key for v in self.validators]
        if not keys:
            raise ValueError("a validator set cannot be empty")
        if keys != sorted(set(keys)):
            raise ValueError("validators must be sorted by signing key and unique")

    @classmethod
    def of(cls, validators: list[Validator] | tuple[Validator, ...]) -> ValidatorSet:
        return cls(tuple(sorted(validators, key=lambda v: v.sign_key)))

    def __len__(self) -> int:
        return len(self.validators)

    @property
    def quorum(self) -> int:
        """⌈2n/3⌉ distinct validators: any two quorums share more than f = ⌊(n−1)/3⌋ of them."""
        return -(-2 * len(self.validators) // 3)

    @property
    def max_faulty(self) -> int:
        return (len(self.validators) - 1) // 3

    def hash(self) -> bytes:
        return digest(encode(self))

    def contains(self, sign_key: bytes) -> bool:
        return any(v.sign_key == sign_key for v in self.validators)

    def get_proposer(self, height: int, round_: int) -> Validator:
        """Round-robin over the sorted set, per (height, round)."""
        return self.validators[(height + round_) % len(self.validators)]


@dataclasses.dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's first state: its id, start time, validators and the application's initial state."""

    chain_id: str
    genesis_time_ms: int
    validators: ValidatorSet
    app_state: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        genesis_time_ms=UInt(),
        validators=Struct(ValidatorSet),
        app_state=Bytes(TX_BYTES_MAX * 64),
    )

    def hash(self) -> bytes:
        return digest(encode(self))


@dataclasses.dataclass(frozen=True, slots=True)
class OptionalRound:
    """A round or `NO_ROUND`, on the wire as round + 1 so that 0 means "none" and stays unsigned."""

    maximum: int = UINT_MAX - 1

    def to_primitive(self, value: Any) -> Any:
        return value + 1

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        shifted: int = UInt(maximum=self.maximum + 1).from_primitive(raw, where, depth)
        return shifted - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's signed proposal of `block` for (height, round).

    `pol_round` is the proof-of-lock round (`NO_ROUND` for a fresh block): the round at which the
    proposer saw a quorum of prevotes for this block, which lets validators locked in an earlier
    round release their lock. A re-proposed block keeps its original header (its round and
    proposer), so every round votes on the same block hash. The signature covers the block hash,
    not the block bytes: the hash commits to the header, and the header to the txs.
    """

    chain_id: str
    height: int
    round: int
    pol_round: int
    block: Block
    proposer: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        height=UInt(minimum=1),
        round=UInt(),
        pol_round=OptionalRound(),
        block=Struct(Block),
        proposer=KEY,
        signature=SIGNATURE,
    )

    def __post_init__(self) -> None:
        if not NO_ROUND <= self.pol_round < self.round:
            raise ValueError("pol_round must be NO_ROUND or a round before the proposal's round")

    def signing_bytes(self) -> bytes:
        return compute_proposal_signing_bytes(
            self.chain_id, self.height, self.round, self.pol_round, self.block.hash(), self.proposer
        )


def compute_proposal_signing_bytes(
    chain_id: str, height: int, round_: int, pol_round: int, block_hash: bytes, proposer: bytes
) -> bytes:
    """What a proposer signs: the domain tag and the canonical map of the proposal's fields."""
    return PROPOSAL_SIGN_DOMAIN + encode_primitive(
        {
            "block_hash": block_hash,
            "chain_id": chain_id,
            "height": height,
            "pol_round": pol_round + 1,
            "proposer": proposer,
            "round": round_,
        }
    )


WIRE_TYPES: tuple[type, ...] = (
    Tx,
    Header,
    Block,
    Vote,
    CommitSig,
    Commit,
    Validator,
    ValidatorSet,
    Genesis,
    Proposal,
)

__all__ = [
    "NO_ROUND",
    "WIRE_TYPES",
    "ZERO_HASH",
    "Block",
    "BlockHash",
    "Commit",
    "CommitSig",
    "Genesis",
    "Header",
    "Height",
    "Proposal",
    "Round",
    "Tx",
    "TxId",
    "Validator",
    "ValidatorSet",
    "Vote",
    "VoteKind",
    "compute_proposal_signing_bytes",
    "compute_tx_id",
    "compute_tx_signing_bytes",
    "compute_vote_signing_bytes",
    "to_primitive",
]
