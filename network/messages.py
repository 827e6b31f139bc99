"""The peer protocol's wire messages (canonical codec, like everything on the wire).

A peer link carries `Frame`s: a kind and a payload that is the canonical encoding of the kind's
own wire type. The handshake uses `Hello` (each side's chain id, node key and a fresh nonce) and
`Auth` (each side's signature over both nonces and both keys), which proves possession of the node
key to the other side, binds the link to this chain, and cannot be replayed on another link.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import ClassVar, Final

from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    FixedBytes,
    Seq,
    Struct,
    Text,
    UInt,
    encode_primitive,
    wire_fields,
)
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, TX_BYTES_MAX
from medledger.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE

PROTOCOL_VERSION: Final = 1
NONCE_SIZE: Final = 32
HANDSHAKE_SIGN_DOMAIN: Final = b"medledger/peer-handshake/v1\x00"
#: Largest frame on a peer link: a range of blocks for sync is the largest thing sent.
FRAME_BYTES_MAX: Final = BLOCK_BYTES_MAX + 1024 * 1024
#: Most txs in one gossip batch.
GOSSIP_TXS_MAX: Final = 2_000
#: Most blocks in one sync response.
SYNC_BLOCKS_MAX: Final = 100


class FrameKind(IntEnum):
    HELLO = 1
    AUTH = 2
    TXS = 3
    PROPOSAL = 4
    VOTE = 5
    STATUS = 6
    GET_BLOCKS = 7
    BLOCKS = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    payload: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        kind=UInt(maximum=max(FrameKind), minimum=min(FrameKind)), payload=Bytes(FRAME_BYTES_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    chain_id: str
    node_key: bytes
    nonce: bytes
    version: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=Text(),
        node_key=FixedBytes(PUBLIC_KEY_SIZE),
        nonce=FixedBytes(NONCE_SIZE),
        version=UInt(maximum=1_000),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Auth:
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(signature=FixedBytes(SIGNATURE_SIZE))


@dataclasses.dataclass(frozen=True, slots=True)
class TxBatch:
    """Canonical tx encodings gossiped together."""

    txs: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(txs=Seq(Bytes(TX_BYTES_MAX, 1), GOSSIP_TXS_MAX))


@dataclasses.dataclass(frozen=True, slots=True)
class PeerStatus:
    """A peer's committed height (and the round it is in), sent on connect and on every commit."""

    height: int
    round: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(height=UInt(), round=UInt())


@dataclasses.dataclass(frozen=True, slots=True)
class BlockRequest:
    from_height: int
    to_height: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        from_height=UInt(minimum=1), to_height=UInt(minimum=1)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A block's and its certificate's canonical encodings, as stored."""

    block: bytes
    commit: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        block=Bytes(BLOCK_BYTES_MAX), commit=Bytes(CONSENSUS_MESSAGE_BYTES_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class BlockRange:
    blocks: tuple[CommittedBlock, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blocks=Seq(Struct(CommittedBlock), SYNC_BLOCKS_MAX)
    )


def compute_handshake_bytes(chain_id: str, signer: Hello, peer: Hello) -> bytes:
    """What each side signs: both hellos, the signer's first. A fresh peer nonce defeats replays."""
    return HANDSHAKE_SIGN_DOMAIN + encode_primitive(
        {
            "chain_id": chain_id,
            "peer_key": peer.node_key,
            "peer_nonce": peer.nonce,
            "signer_key": signer.node_key,
            "signer_nonce": signer.nonce,
        }
    )
