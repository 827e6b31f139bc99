"""The node's durable chain: blocks, certificates, tx index and application state in LevelDB.

One `BlockStore` per process (LevelDB allows one). Every committed block is written with its
certificate, tx index entries, application state changes and new meta in a single synced write
batch, so a crash (even kill -9 or power loss) leaves either all of a block or none of it.
Invariants are asserted in pairs: before a batch is written and when data is read back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import plyvel

from medledger.chain import layout
from medledger.chain.app import BlockExecution
from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    Seq,
    Struct,
    Text,
    UInt,
    decode,
    encode,
    encode_primitive,
    wire_fields,
)
from medledger.chain.errors import CodecError, StoreCorruptedError, StoreError
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, TX_BYTES_MAX, VALIDATORS_MAX
from medledger.chain.types import Block, Commit, Genesis, TxId, Vote, decode_genesis, encode_genesis
from medledger.crypto import HASH_SIZE

#: Bits per key of LevelDB's bloom filter (10: about 1% of absent keys still read a block).
BLOOM_FILTER_BITS: Final = 10


@dataclasses.dataclass(frozen=True, slots=True)
class TxLocation:
    """Where a committed tx lives, and what executing it gave."""

    height: int
    index: int
    ok: int
    code: str

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        height=UInt(minimum=1), index=UInt(), ok=UInt(1), code=Text()
    )


def encode_tx_location(height: int, index: int, ok: bool, code: str) -> bytes:
    """`encode(TxLocation(...))` without building the value: once per committed tx, so it counts."""
    return encode_primitive({"code": code, "height": height, "index": index, "ok": int(ok)})


@dataclasses.dataclass(frozen=True, slots=True)
class LastSigned:
    """The last (height, round, step) this validator signed: never sign below or twice at it."""

    height: int
    round: int
    step: int
    block_hash: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        height=UInt(), round=UInt(), step=UInt(), block_hash=Bytes(HASH_SIZE)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ConsensusLock:
    """This validator's Tendermint lock at `height`: the block it precommitted, at which round.

    Persisted (synced) before the precommit that sets it is sent: a validator that forgot its lock
    after a restart could prevote for a conflicting block, which is as bad as equivocating. The
    block and the quorum of prevotes that justified the lock (its proof of lock) are kept too: after
    a restart the validator can still re-propose the block with that proof, which is what releases
    validators locked on older rounds. Without them a chain whose locked validators all restarted
    could stall for good.
    """

    height: int
    round: int
    block: Block
    prevotes: tuple[Vote, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        height=UInt(minimum=1),
        round=UInt(),
        block=Struct(Block),
        prevotes=Seq(Struct(Vote), VALIDATORS_MAX),
    )

    @property
    def block_hash(self) -> bytes:
        return self.block.hash()


class BlockStore:
    """LevelDB-backed chain storage. Not thread-safe for writers: one owner task writes."""

    def __init__(self, db: Any, path: Path) -> None:
        self._db = db
        self.path = path
        self._height = 0
        self._state_root = b""
        self._genesis: Genesis | None = None
        self._last_hash = b""
        self._last_time_ms = 0
        self._load_meta()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open_memory(cls, db: Any, name: str = "memory") -> BlockStore:
        """A store over an in-memory database with plyvel's API (`medledger.chain.memdb.MemDB`)."""
        return cls(db, Path(f"<{name}>"))

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> BlockStore:
        try:
            db = plyvel.DB(
                str(path),
                create_if_missing=create,
                paranoid_checks=True,
                # Most reads ask for a key that is absent (is this tx already committed?): a
                # bloom filter per table answers those without reading the table's blocks.
                bloom_filter_bits=BLOOM_FILTER_BITS,
            )
        except plyvel.IOError as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from None
        except plyvel.CorruptionError as exc:
            raise StoreCorruptedError(f"the store at {path} is corrupted: {exc}") from None
        except plyvel.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from None
        try:
            return cls(db, path)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def _load_meta(self) -> None:
        version = self._read(layout.META_LAYOUT)
        if version is None:
            if self._read(layout.META_HEIGHT) is not None:
                raise StoreCorruptedError(f"{self.path}: blocks present but no layout version")
            return
        stored_version = self._decode_u64(version, "layout version")
        if stored_version != layout.LAYOUT_VERSION:
            raise StoreError(
                f"{self.path}: store layout version {stored_version}, "
                f"this medledger reads version {layout.LAYOUT_VERSION}"
            )
        raw_genesis = self._get_required(layout.META_GENESIS)
        try:
            self._genesis = decode_genesis(raw_genesis, max_bytes=TX_BYTES_MAX * 64)
        except CodecError as exc:
            raise StoreCorruptedError(f"{self.path}: stored genesis is corrupted: {exc}") from None
        self._height = self._decode_u64(self._get_required(layout.META_HEIGHT), "height")
        self._state_root = self._get_required(layout.META_STATE_ROOT)
        self._remember_tip()

    def _remember_tip(self) -> None:
        genesis = self.genesis
        if self._height == 0:
            self._last_hash, self._last_time_ms = genesis.hash(), genesis.genesis_time_ms
            return
        block = self.get_block(self._height)
        if block is None:  # get_block raises on a missing block below our height
            raise StoreCorruptedError(f"{self.path}: the tip block is missing")
        self._last_hash, self._last_time_ms = block.hash(), block.header.time_ms

    def _read(self, key: bytes) -> bytes | None:
        """One read, checksums verified; LevelDB's corruption or an unreadable table file means a
        store we can no longer vouch for (`StoreCorruptedError`), never a raw plyvel error."""
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except (plyvel.CorruptionError, plyvel.IOError) as exc:
            raise StoreCorruptedError(f"{self.path}: unreadable ({exc})") from None
        return value

    def _get_required(self, key: bytes) -> bytes:
        value: bytes | None = self._read(key)
        if value is None:
            raise StoreCorruptedError(f"{self.path}: missing {key!r}")
        return value

    def _decode_u64(self, raw: bytes, what: str) -> int:
        if len(raw) != 8:
            raise StoreCorruptedError(f"{self.path}: stored {what} is not a 64-bit integer")
        return layout.decode_u64(raw)

    def _decode(self, cls: type[Any], raw: bytes, max_bytes: int, what: str) -> Any:
        try:
            return decode(cls, raw, max_bytes=max_bytes)
        except CodecError as exc:
            raise StoreCorruptedError(f"{self.path}: stored {what} is corrupted: {exc}") from None

    # -- meta ------------------------------------------------------------------------------

    @property
    def is_initialized(self) -> bool:
        return self._genesis is not None

    @property
    def genesis(self) -> Genesis:
        if self._genesis is None:
            raise StoreError(f"{self.path}: the store holds no genesis yet")
        return self._genesis

    @property
    def height(self) -> int:
        """The latest committed height (0: only genesis)."""
        return self._height

    @property
    def state_root(self) -> bytes:
        """The application's state root after the latest committed block."""
        return self._state_root

    def init_genesis(self, genesis: Genesis, execution: BlockExecution) -> None:
        """Write genesis and the initial application state; refuse a different existing genesis."""
        if self._genesis is not None:
            if self._genesis != genesis:
                raise StoreError(f"{self.path}: the store holds another chain's genesis")
            return
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(layout.META_LAYOUT, layout.encode_u64(layout.LAYOUT_VERSION))
            batch.put(layout.META_CHAIN_ID, genesis.chain_id.encode())
            batch.put(layout.META_GENESIS, encode_genesis(genesis))
            batch.put(layout.META_HEIGHT, layout.encode_u64(0))
            batch.put(layout.META_STATE_ROOT, execution.state_root)
            self._put_app_writes(batch, execution.writes)
        self._genesis = genesis
        self._height = 0
        self._state_root = execution.state_root
        self._remember_tip()

    # -- blocks ----------------------------------------------------------------------------

    def save_block(
        self,
        block: Block,
        block_raw: bytes,
        commit: Commit,
        tx_ids: list[TxId],
        execution: BlockExecution,
    ) -> None:
        """Commit a block: block, certificate, tx index, state writes and meta in one synced batch."""
        header = block.header
        # Invariants (a failure is a bug in the caller, not bad input): it extends our chain.
        assert header.height == self._height + 1, (header.height, self._height)
        assert commit.block_hash == block.hash()
        assert commit.height == header.height
        assert len(tx_ids) == len(block.txs) == len(execution.results)
        assert header.parent_hash == self.get_parent_hash(header.height)
        height = header.height
        height_key = layout.encode_u64(height)
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(layout.block_key(height), block_raw)
            batch.put(layout.commit_key(height), encode(commit))
            batch.put(layout.hash_key(commit.block_hash), height_key)
            put = batch.put
            for index, (tx_id, result) in enumerate(zip(tx_ids, execution.results, strict=True)):
                put(layout.tx_key(tx_id), encode_tx_location(height, index, result.ok, result.code))
            self._put_app_writes(batch, execution.writes)
            batch.put(layout.META_HEIGHT, height_key)
            batch.put(layout.META_STATE_ROOT, execution.state_root)
        self._height = header.height
        self._state_root = execution.state_root
        self._last_hash, self._last_time_ms = commit.block_hash, header.time_ms

    @staticmethod
    def _put_app_writes(batch: Any, writes: Mapping[bytes, bytes | None]) -> None:
        for key, value in writes.items():
            if value is None:
                batch.delete(layout.app_key(key))
            else:
                batch.put(layout.app_key(key), value)

    @property
    def last_block_hash(self) -> bytes:
        """The hash of the tip block (the genesis hash before the first block)."""
        return self._last_hash

    @property
    def last_block_time_ms(self) -> int:
        return self._last_time_ms

    def get_parent_hash(self, height: int) -> bytes:
        """The hash block `height` must name as its parent (the genesis hash for height 1)."""
        if height == self._height + 1:
            return self._last_hash
        if height == 1:
            return self.genesis.hash()
        block = self.get_block(height - 1)
        if block is None:
            raise StoreError(f"{self.path}: no block {height - 1}")
        return block.hash()

    def get_block_raw(self, height: int) -> bytes | None:
        if not 1 <= height <= self._height:
            return None
        raw: bytes | None = self._read(layout.block_key(height))
        if raw is None:
            raise StoreCorruptedError(f"{self.path}: block {height} is missing")
        return raw

    def get_block(self, height: int) -> Block | None:
        raw = self.get_block_raw(height)
        if raw is None:
            return None
        block: Block = self._decode(Block, raw, BLOCK_BYTES_MAX, f"block {height}")
        if block.header.height != height:  # the read-side half of save_block's invariant
            raise StoreCorruptedError(f"{self.path}: block stored at {height} says {block.header.height}")
        return block

    def get_commit(self, height: int) -> Commit | None:
        if not 1 <= height <= self._height:
            return None
        raw: bytes | None = self._read(layout.commit_key(height))
        if raw is None:
            raise StoreCorruptedError(f"{self.path}: commit {height} is missing")
        commit: Commit = self._decode(Commit, raw, CONSENSUS_MESSAGE_BYTES_MAX, f"commit {height}")
        if commit.height != height:
            raise StoreCorruptedError(f"{self.path}: commit stored at {height} says {commit.height}")
        return commit

    def get_height_by_hash(self, block_hash: bytes) -> int | None:
        raw: bytes | None = self._read(layout.hash_key(block_hash))
        return None if raw is None else self._decode_u64(raw, "block height index entry")

    def get_tx_location(self, tx_id: bytes) -> TxLocation | None:
        raw: bytes | None = self._read(layout.tx_key(tx_id))
        if raw is None:
            return None
        location: TxLocation = self._decode(TxLocation, raw, 1024, "tx index entry")
        return location

    def has_tx(self, tx_id: bytes) -> bool:
        return self._read(layout.tx_key(tx_id)) is not None

    # -- application state -----------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """`StateReader` over the committed application state."""
        value: bytes | None = self._read(layout.app_key(key))
        return value

    def iter_app(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Committed application entries under `prefix`, in key order (keys without our prefix)."""
        start = len(layout.APP_PREFIX)
        try:
            for key, value in self._db.iterator(prefix=layout.app_key(prefix), verify_checksums=True):
                yield key[start:], value
        except (plyvel.CorruptionError, plyvel.IOError) as exc:
            raise StoreCorruptedError(f"{self.path}: unreadable ({exc})") from None

    # -- own votes (crash safety against double-signing) ---------------------------------

    def save_last_signed(self, last: LastSigned) -> None:
        """Persist (synced) what this validator is about to sign, before it is sent."""
        self._db.put(layout.META_LAST_SIGNED, encode(last), sync=True)

    def load_last_signed(self) -> LastSigned | None:
        raw: bytes | None = self._read(layout.META_LAST_SIGNED)
        if raw is None:
            return None
        last: LastSigned = self._decode(LastSigned, raw, 1024, "last-signed record")
        return last

    def save_signing_state(self, last: LastSigned | None, lock: ConsensusLock | None) -> None:
        """Persist (one synced batch) what `save_last_signed` and `save_lock` would, together: a
        core's batch of actions often signs several messages (a single validator signs its
        proposal, prevote and precommit at once), and the last record of each kind is what counts."""
        with self._db.write_batch(transaction=True, sync=True) as batch:
            if last is not None:
                batch.put(layout.META_LAST_SIGNED, encode(last))
            if lock is not None:
                batch.put(layout.META_CONSENSUS_LOCK, encode(lock))

    def save_lock(self, lock: ConsensusLock) -> None:
        """Persist (synced) this validator's lock, before the precommit that sets it is sent."""
        self._db.put(layout.META_CONSENSUS_LOCK, encode(lock), sync=True)

    def load_lock(self) -> ConsensusLock | None:
        raw: bytes | None = self._read(layout.META_CONSENSUS_LOCK)
        if raw is None:
            return None
        lock: ConsensusLock = self._decode(
            ConsensusLock, raw, BLOCK_BYTES_MAX + CONSENSUS_MESSAGE_BYTES_MAX, "consensus lock"
        )
        return lock


def copy_signing_state(source: Path, target: Path) -> list[str]:
    """Carry a validator's last signed vote and consensus lock from a store being moved aside.

    They are what keep a restarted validator from signing twice at the height in progress, so a
    rebuilt store must not forget them. Best effort: from a store too damaged to read they cannot
    be recovered (the operator is told). Returns the names of what was carried.
    """
    wanted = {"last signed vote": layout.META_LAST_SIGNED, "consensus lock": layout.META_CONSENSUS_LOCK}
    found: dict[bytes, bytes] = {}
    try:
        old = plyvel.DB(str(source), create_if_missing=False)
    except plyvel.Error:
        return []
    try:
        for key in wanted.values():
            try:
                value = old.get(key, verify_checksums=True)
            except plyvel.Error:
                continue
            if value is not None:
                found[key] = value
    finally:
        old.close()
    if not found:
        return []
    new = plyvel.DB(str(target), create_if_missing=True, bloom_filter_bits=BLOOM_FILTER_BITS)
    try:
        with new.write_batch(transaction=True, sync=True) as batch:
            for key, value in found.items():
                batch.put(key, value)
    finally:
        new.close()
    return [name for name, key in wanted.items() if key in found]
