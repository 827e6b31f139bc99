"""The peer protocol's wire messages (canonical codec, like everything on the wire).

A peer link (docs/adr/0006-peer-channel.md) opens with the secret channel's handshake:
`ChannelHello` (the only message in the clear: protocol version, chain id, an ephemeral X25519
key), then, sealed, `ChannelAuth` (the node key and its signature over the link's challenge) and
`ChannelVerdict` (whether each side accepts the other, and why not). After that it carries sealed
`Frame`s: a kind and a payload that is the canonical encoding of the kind's own wire type.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import ClassVar, Final

from medledger.chain.blobstore import BLOB_CHUNK_BYTES_MAX, BLOB_CHUNKS_MAX, BLOB_MANIFEST_BYTES_MAX
from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    FixedBytes,
    Seq,
    Struct,
    Text,
    UInt,
    wire_fields,
)
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, TX_BYTES_MAX
from medledger.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from medledger.network.channel import EPHEMERAL_KEY_SIZE

#: Largest frame payload on a peer link: a proposal of a largest block, or a range of blocks.
FRAME_BYTES_MAX: Final = BLOCK_BYTES_MAX + 1024 * 1024
#: Largest encoded `Frame` (its payload and the framing around it), reassembled only once the
#: link is authenticated.
FRAME_WIRE_BYTES_MAX: Final = FRAME_BYTES_MAX + 64
#: Largest handshake message (hello, auth, verdict): a connection's whole budget before it is
#: authenticated is a few of these.
HANDSHAKE_MESSAGE_BYTES_MAX: Final = 512
#: Most txs in one gossip batch.
GOSSIP_TXS_MAX: Final = 2_000
#: Most blocks in one sync response.
SYNC_BLOCKS_MAX: Final = 100


class FrameKind(IntEnum):
    # 1 and 2 were protocol 1's handshake frames; the handshake is no frame any more.
    TXS = 3
    PROPOSAL = 4
    VOTE = 5
    STATUS = 6
    GET_BLOCKS = 7
    BLOCKS = 8
    # Blob transfer (network/blobsync.py, docs/adr/0013-attachment-blobs.md).
    GET_BLOB_MANIFEST = 9
    BLOB_MANIFEST = 10
    GET_BLOB_CHUNK = 11
    BLOB_CHUNK = 12


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    payload: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        kind=UInt(maximum=max(FrameKind), minimum=min(FrameKind)), payload=Bytes(FRAME_BYTES_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelHello:
    """Sent in the clear by both sides first. The version and chain id are here for a readable
    refusal only: both are bound into the transcript, so a relay that changes them breaks the
    handshake."""

    version: int
    chain_id: str
    ephemeral_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        version=UInt(maximum=1_000),
        chain_id=Text(),
        ephemeral_key=FixedBytes(EPHEMERAL_KEY_SIZE),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelAuth:
    """Sealed: the sender's node key and its signature over the link's challenge and its role."""

    node_key: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        node_key=FixedBytes(PUBLIC_KEY_SIZE), signature=FixedBytes(SIGNATURE_SIZE)
    )


class Verdict(IntEnum):
    """What a side decided about the other once it proved its key (sent sealed, both ways)."""

    ACCEPTED = 0
    NOT_A_MEMBER = 1
    BANNED = 2
    #: A link between the two exists and is the one both keep (see `PeerNetwork`).
    DUPLICATE = 3
    SELF = 4


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelVerdict:
    verdict: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        verdict=UInt(maximum=max(Verdict), minimum=min(Verdict))
    )


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


class BlobAnswerStatus(IntEnum):
    """How a peer answers a blob request: with the data, or why not (then the asker turns elsewhere)."""

    OK = 0
    NOT_HELD = 1
    #: Over the asker's budget, or too much is queued for it: ask again later, or another peer.
    BUSY = 2


@dataclasses.dataclass(frozen=True, slots=True)
class BlobManifestRequest:
    blob_id: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(blob_id=FixedBytes(32))


@dataclasses.dataclass(frozen=True, slots=True)
class BlobManifestAnswer:
    """A blob's manifest (its canonical encoding; empty unless `status` is OK)."""

    blob_id: bytes
    status: int
    manifest: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blob_id=FixedBytes(32),
        status=UInt(maximum=max(BlobAnswerStatus)),
        manifest=Bytes(BLOB_MANIFEST_BYTES_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class BlobChunkRequest:
    blob_id: bytes
    index: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blob_id=FixedBytes(32), index=UInt(maximum=BLOB_CHUNKS_MAX - 1)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class BlobChunkAnswer:
    """One chunk of a blob (empty unless `status` is OK); the asker checks it against the manifest."""

    blob_id: bytes
    index: int
    status: int
    data: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blob_id=FixedBytes(32),
        index=UInt(maximum=BLOB_CHUNKS_MAX - 1),
        status=UInt(maximum=max(BlobAnswerStatus)),
        data=Bytes(BLOB_CHUNK_BYTES_MAX),
    )
