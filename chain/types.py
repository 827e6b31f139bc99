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
    decode,
    decode_primitive,
    encode,
    encode_primitive,
    to_primitive,
    wire_fields,
)
from medledger.chain.limits import (
    BLOCK_BYTES_MAX,
    BLOCK_TXS_MAX,
    TX_BODY_BYTES_MAX,
    TX_BYTES_MAX,
    UINT_MAX,
    VALIDATORS_MAX,
)
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
        """Round-robin over the sorted set, per (height, round): the proposer under a version-1
        genesis. Nodes ask `chain/leader.py` (`BlockExecutor.leader_schedule`), which is this
        unless the genesis turns leader skipping on."""
        return self.validators[(height + round_) % len(self.validators)]


#: Smallest `ConsensusParams.block_bytes_max`: room for at least one largest tx.
BLOCK_BYTES_CAP_MIN = TX_BYTES_MAX
#: Room a block's header and framing take beyond its txs' bytes, under `BLOCK_BYTES_MAX`.
BLOCK_OVERHEAD_BYTES_MAX = 64 * 1024
#: Longest `ConsensusParams.leader_window` (heights of history the proposer selection reads).
LEADER_WINDOW_MAX = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Consensus rules a version-2 genesis sets (docs/adr/0023-leader-reputation-and-backpressure.md).

    `block_txs_max`, `block_bytes_max`: a block's caps (its tx count, and the summed sizes of its
    txs' encodings), below chain/limits.py's. `leader_window`: how many recent committed blocks the
    round-0 proposer selection reads to skip validators that proposed none of them
    (`chain/leader.py`); 0 keeps plain round-robin.
    """

    block_txs_max: int
    block_bytes_max: int
    leader_window: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        block_txs_max=UInt(BLOCK_TXS_MAX, 1),
        block_bytes_max=UInt(BLOCK_BYTES_MAX - BLOCK_OVERHEAD_BYTES_MAX, BLOCK_BYTES_CAP_MIN),
        leader_window=UInt(LEADER_WINDOW_MAX),
    )


#: What a version-1 genesis (no `ConsensusParams`) means: chain/limits.py's caps, no leader skipping.
LEGACY_CONSENSUS_PARAMS = ConsensusParams(
    block_txs_max=BLOCK_TXS_MAX, block_bytes_max=BLOCK_BYTES_MAX, leader_window=0
)


@dataclasses.dataclass(frozen=True, slots=True)
class GenesisV1:
    """The genesis on the wire before consensus parameters: every chain started so far has one."""

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


@dataclasses.dataclass(frozen=True, slots=True)
class GenesisV2:
    """The genesis on the wire with its `ConsensusParams`."""

    chain_id: str
    genesis_time_ms: int
    validators: ValidatorSet
    app_state: bytes
    params: ConsensusParams

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        genesis_time_ms=UInt(),
        validators=Struct(ValidatorSet),
        app_state=Bytes(TX_BYTES_MAX * 64),
        params=Struct(ConsensusParams),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's first state: its id, start time, validators, the application's initial state
    and, for a version-2 genesis, its consensus parameters.

    Not a wire type itself: `encode_genesis` writes a genesis without params as `GenesisV1`, byte
    for byte what it was before params existed (so old genesis hashes stay), and one with params
    as `GenesisV2`; `decode_genesis` reads both.
    """

    chain_id: str
    genesis_time_ms: int
    validators: ValidatorSet
    app_state: bytes
    params: ConsensusParams | None = None

    @property
    def consensus_params(self) -> ConsensusParams:
        """The params in force: the genesis's, or `LEGACY_CONSENSUS_PARAMS` for a version-1 genesis."""
        return LEGACY_CONSENSUS_PARAMS if self.params is None else self.params

    def hash(self) -> bytes:
        return digest(encode_genesis(self))


def encode_genesis(genesis: Genesis) -> bytes:
    """The canonical bytes of `genesis`: `GenesisV1` without params, `GenesisV2` with them."""
    if genesis.params is None:
        return encode(
            GenesisV1(genesis.chain_id, genesis.genesis_time_ms, genesis.validators, genesis.app_state)
        )
    return encode(
        GenesisV2(
            genesis.chain_id, genesis.genesis_time_ms, genesis.validators, genesis.app_state, genesis.params
        )
    )


def decode_genesis(data: bytes, *, max_bytes: int) -> Genesis:
    """Decode either genesis shape (a map with `params` is a `GenesisV2`); anything else raises
    `CodecError`."""
    primitive = decode_primitive(data, max_bytes=max_bytes)
    if isinstance(primitive, dict) and "params" in primitive:
        v2 = decode(GenesisV2, data, max_bytes=max_bytes)
        return Genesis(v2.chain_id, v2.genesis_time_ms, v2.validators, v2.app_state, v2.params)
    v1 = decode(GenesisV1, data, max_bytes=max_bytes)
    return Genesis(v1.chain_id, v1.genesis_time_ms, v1.validators, v1.app_state)


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
    ConsensusParams,
    GenesisV1,
    GenesisV2,
    Proposal,
)

__all__ = [
    "BLOCK_BYTES_CAP_MIN",
    "BLOCK_OVERHEAD_BYTES_MAX",
    "LEADER_WINDOW_MAX",
    "LEGACY_CONSENSUS_PARAMS",
    "NO_ROUND",
    "WIRE_TYPES",
    "ZERO_HASH",
    "Block",
    "BlockHash",
    "Commit",
    "CommitSig",
    "ConsensusParams",
    "Genesis",
    "GenesisV1",
    "GenesisV2",
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
    "decode_genesis",
    "encode_genesis",
    "to_primitive",
]
