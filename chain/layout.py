"""The LevelDB key layout, version 1: the one place that knows how keys are spelled.

    m:<name>            meta: layout version, chain id, genesis, latest height, state root, ...
    b:<height u64be>    encoded Block
    c:<height u64be>    encoded Commit (the block's certificate)
    h:<block hash>      height (u64be)
    t:<tx id>           TxLocation (height, index in block, result)
    s:<app key>         the application's state

Heights are big-endian so that LevelDB's byte order is height order and ranges are cheap scans.
A store written with another layout version is refused, never guessed at.
"""

from __future__ import annotations

import struct
from typing import Final

LAYOUT_VERSION: Final = 1

META_LAYOUT: Final = b"m:layout"
META_CHAIN_ID: Final = b"m:chain_id"
META_GENESIS: Final = b"m:genesis"
META_HEIGHT: Final = b"m:height"
META_STATE_ROOT: Final = b"m:state_root"
META_LAST_SIGNED: Final = b"m:last_signed"
#: This validator's consensus lock (block and proof of lock) for the height in progress.
META_CONSENSUS_LOCK: Final = b"m:consensus_lock"

BLOCK_PREFIX: Final = b"b:"
COMMIT_PREFIX: Final = b"c:"
HASH_PREFIX: Final = b"h:"
TX_PREFIX: Final = b"t:"
APP_PREFIX: Final = b"s:"

_U64 = struct.Struct(">Q")


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(raw: bytes) -> int:
    value: int = _U64.unpack(raw)[0]
    return value


def block_key(height: int) -> bytes:
    return BLOCK_PREFIX + _U64.pack(height)


def commit_key(height: int) -> bytes:
    return COMMIT_PREFIX + _U64.pack(height)


def hash_key(block_hash: bytes) -> bytes:
    return HASH_PREFIX + block_hash


def tx_key(tx_id: bytes) -> bytes:
    return TX_PREFIX + tx_id


def app_key(key: bytes) -> bytes:
    return APP_PREFIX + key
