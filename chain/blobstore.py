"""Content-addressed, chunked blobs on disk (docs/adr/0013-attachment-blobs.md).

A blob is a byte string too large for the ledger (an encrypted attachment: the store never sees
plaintext and does not care what the bytes are). It is cut into chunks of `chunk_bytes` (the last
one shorter); its *manifest* lists every chunk's hash, and its id is the hash of the manifest's
canonical encoding. So the id a record on the ledger names pins every byte, and each chunk verifies
alone against the manifest: a node fetching a blob from peers checks every chunk as it arrives and
never has to trust a peer for more than one chunk.

On disk, under the store's root (in the node's home, beside the chain's LevelDB):

    <id hex>.blob        the chunks, concatenated (chunk i at offset i * chunk_bytes)
    <id hex>.manifest    the manifest's canonical encoding; written last: its presence is the commit
    partial/             blobs being uploaded or fetched (removed on start: they begin again)

Invariants are checked in pairs: a chunk is hashed before it is written and again when it is read,
a manifest decoded is checked to hash to its file name. A chunk that fails on reading (a disk that
lost or flipped bytes) removes the blob; the node's repair loop then fetches it again from peers,
as block sync would restore a lost block. Every method here blocks (file I/O): callers on an event
loop run them off it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Final

from medledger.chain.codec import FieldSpec, FixedBytes, Seq, UInt, decode, encode, wire_fields
from medledger.chain.errors import ChainError, CodecError
from medledger.crypto import HASH_SIZE, digest

log = logging.getLogger("medledger.blobs")

#: Largest chunk: a MiB of plaintext and its AEAD tag, with room to spare.
BLOB_CHUNK_BYTES_MAX: Final = 1024 * 1024 + 64
#: Most chunks in one blob (so at most 128 MiB): bounds a manifest and every per-blob loop.
BLOB_CHUNKS_MAX: Final = 128
#: Largest blob the store takes.
BLOB_BYTES_MAX: Final = BLOB_CHUNKS_MAX * BLOB_CHUNK_BYTES_MAX
#: Largest encoded manifest (a hash per chunk and two integers).
BLOB_MANIFEST_BYTES_MAX: Final = BLOB_CHUNKS_MAX * (HASH_SIZE + 2) + 64

BLOB_ID_DOMAIN: Final = b"medledger/blob/id/v1\x00"
BLOB_CHUNK_DOMAIN: Final = b"medledger/blob/chunk/v1\x00"

_BLOB_SUFFIX: Final = ".blob"
_MANIFEST_SUFFIX: Final = ".manifest"
_PARTIAL: Final = "partial"


class BlobError(ChainError):
    """A blob or manifest that is not what its id says (or not in the store)."""

    code = "blob_invalid"


@dataclasses.dataclass(frozen=True, slots=True)
class BlobManifest:
    """A blob's size in bytes, its chunk size and the hash of every chunk, in order."""

    size: int
    chunk_bytes: int
    chunk_hashes: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        size=UInt(maximum=BLOB_BYTES_MAX, minimum=1),
        chunk_bytes=UInt(maximum=BLOB_CHUNK_BYTES_MAX, minimum=1),
        chunk_hashes=Seq(FixedBytes(HASH_SIZE), BLOB_CHUNKS_MAX),
    )

    @property
    def chunks(self) -> int:
        return len(self.chunk_hashes)

    def get_chunk_length(self, index: int) -> int:
        """Bytes of chunk `index` (all are `chunk_bytes` but the last)."""
        if index < self.chunks - 1:
            return self.chunk_bytes
        return self.size - self.chunk_bytes * (self.chunks - 1)


def compute_blob_id(manifest: BlobManifest) -> bytes:
    """A blob's id: the hash of its manifest's canonical encoding."""
    return digest(BLOB_ID_DOMAIN + encode(manifest))


def compute_chunk_hash(data: bytes) -> bytes:
    return digest(BLOB_CHUNK_DOMAIN + data)


def validate_manifest(manifest: BlobManifest, blob_id: bytes) -> None:
    """`BlobError` unless `manifest` is consistent (chunk count fits size) and hashes to `blob_id`."""
    expected_chunks = -(-manifest.size // manifest.chunk_bytes)
    if manifest.chunks != expected_chunks:
        shape = f"{manifest.size} bytes in chunks of {manifest.chunk_bytes}"
        raise BlobError(f"a manifest of {shape} lists {manifest.chunks} chunks")
    if compute_blob_id(manifest) != blob_id:
        raise BlobError(f"the manifest does not hash to blob {blob_id.hex()}")


def decode_manifest(raw: bytes, blob_id: bytes) -> BlobManifest:
    """A manifest from outside (a peer, a file), checked against the id it must have."""
    try:
        manifest = decode(BlobManifest, raw, max_bytes=BLOB_MANIFEST_BYTES_MAX)
    except CodecError as exc:
        raise BlobError(f"a malformed manifest for blob {blob_id.hex()}: {exc.message}") from None
    validate_manifest(manifest, blob_id)
    return manifest


class BlobStore:
    """The blobs a node holds, content-addressed, under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial = root / _PARTIAL
        # What was being written when the node stopped begins again (from its uploader or peers).
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    def _blob_path(self, blob_id: bytes) -> Path:
        return self.root / f"{blob_id.hex()}{_BLOB_SUFFIX}"

    def _manifest_path(self, blob_id: bytes) -> Path:
        return self.root / f"{blob_id.hex()}{_MANIFEST_SUFFIX}"

    def has(self, blob_id: bytes) -> bool:
        return self._manifest_path(blob_id).exists()

    def list_blob_ids(self) -> list[bytes]:
        ids = []
        for path in self.root.glob(f"*{_MANIFEST_SUFFIX}"):
            name = path.name.removesuffix(_MANIFEST_SUFFIX)
            if len(name) == 2 * HASH_SIZE:
                ids.append(bytes.fromhex(name))
        return sorted(ids)

    def get_manifest(self, blob_id: bytes) -> BlobManifest | None:
        try:
            raw = self._manifest_path(blob_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode_manifest(raw, blob_id)
        except BlobError as exc:
            self._discard(blob_id, exc.message)
            return None

    def get_manifest_raw(self, blob_id: bytes) -> bytes | None:
        manifest = self.get_manifest(blob_id)
        return encode(manifest) if manifest is not None else None

    def read_chunk(self, blob_id: bytes, index: int, manifest: BlobManifest | None = None) -> bytes | None:
        """Chunk `index` of a held blob, verified against its manifest (None: not held, or lost)."""
        manifest = manifest or self.get_manifest(blob_id)
        if manifest is None or not 0 <= index < manifest.chunks:
            return None
        length = manifest.get_chunk_length(index)
        try:
            with self._blob_path(blob_id).open("rb") as file:
                file.seek(index * manifest.chunk_bytes)
                data = file.read(length)
        except FileNotFoundError:
            self._discard(blob_id, "its chunks are missing")
            return None
        if len(data) != length or compute_chunk_hash(data) != manifest.chunk_hashes[index]:
            self._discard(blob_id, f"chunk {index} does not match its hash")
            return None
        return data

    def iter_chunks(self, blob_id: bytes) -> Iterator[bytes]:
        """Every chunk of a held blob, verified; `BlobError` if it is not held or turns out lost."""
        manifest = self.get_manifest(blob_id)
        if manifest is None:
            raise BlobError(f"blob {blob_id.hex()} is not held")
        for index in range(manifest.chunks):
            data = self.read_chunk(blob_id, index, manifest)
            if data is None:
                raise BlobError(f"blob {blob_id.hex()} failed verification at chunk {index}")
            yield data

    def verify(self, blob_id: bytes) -> bool:
        """Whether a held blob reads back whole, every chunk matching its hash (else it is removed)."""
        try:
            for _ in self.iter_chunks(blob_id):
                pass
        except BlobError:
            return False
        return True

    def delete(self, blob_id: bytes) -> None:
        self._manifest_path(blob_id).unlink(missing_ok=True)
        self._blob_path(blob_id).unlink(missing_ok=True)

    def _discard(self, blob_id: bytes, why: str) -> None:
        log.warning("blob %s removed from the store: %s; it will be fetched again", blob_id.hex()[:16], why)
        self.delete(blob_id)

    def begin_upload(self) -> BlobUpload:
        """A new blob written chunk by chunk in order (its id is known once it is finished)."""
        return BlobUpload(self, self.partial / f"upload-{secrets.token_hex(16)}{_BLOB_SUFFIX}")

    def begin_fetch(self, blob_id: bytes, manifest: BlobManifest) -> BlobFetch:
        """A blob known by its (verified) manifest, written as its chunks arrive in any order."""
        validate_manifest(manifest, blob_id)
        return BlobFetch(
            self, blob_id, manifest, self.partial / f"fetch-{secrets.token_hex(16)}{_BLOB_SUFFIX}"
        )

    def _commit(self, blob_id: bytes, manifest: BlobManifest, path: Path) -> None:
        """Move a complete, synced partial blob in place; its manifest last (the commit point)."""
        if self.has(blob_id):
            path.unlink(missing_ok=True)  # the same bytes, already held
            return
        os.replace(path, self._blob_path(blob_id))
        temp = self.partial / f"{blob_id.hex()}-{secrets.token_hex(4)}{_MANIFEST_SUFFIX}"
        with temp.open("wb") as file:
            file.write(encode(manifest))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self._manifest_path(blob_id))
        _fsync_dir(self.root)


class BlobUpload:
    """A blob being written in order; `finish` names it, `abort` forgets it."""

    def __init__(self, store: BlobStore, path: Path) -> None:
        self._store = store
        self._path = path
        self._file = path.open("wb")
        self._hashes: list[bytes] = []
        self._chunk_bytes = 0
        self._last = 0
        self.size = 0

    def append(self, chunk: bytes) -> None:
        """Add the next chunk; every chunk but the last has the first one's length."""
        if not chunk or len(chunk) > BLOB_CHUNK_BYTES_MAX:
            raise BlobError(f"a chunk of {len(chunk)} bytes (1 to {BLOB_CHUNK_BYTES_MAX})")
        if len(self._hashes) >= BLOB_CHUNKS_MAX:
            raise BlobError(f"a blob has at most {BLOB_CHUNKS_MAX} chunks")
        if self._hashes and self._last != self._chunk_bytes:
            raise BlobError("only the last chunk of a blob may be shorter")
        if not self._hashes:
            self._chunk_bytes = len(chunk)
        elif len(chunk) > self._chunk_bytes:
            raise BlobError("a chunk longer than the first")
        self._file.write(chunk)
        self._hashes.append(compute_chunk_hash(chunk))
        self._last = len(chunk)
        self.size += len(chunk)

    def finish(self) -> tuple[bytes, BlobManifest]:
        if not self._hashes:
            self.abort()
            raise BlobError("an empty blob")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        manifest = BlobManifest(self.size, self._chunk_bytes, tuple(self._hashes))
        blob_id = compute_blob_id(manifest)
        self._store._commit(blob_id, manifest, self._path)
        return blob_id, manifest

    def abort(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class BlobFetch:
    """A blob arriving chunk by chunk from peers; each chunk is checked before it is written."""

    def __init__(self, store: BlobStore, blob_id: bytes, manifest: BlobManifest, path: Path) -> None:
        self._store = store
        self.blob_id = blob_id
        self.manifest = manifest
        self._path = path
        self._file = path.open("wb")
        self._file.truncate(manifest.size)
        self.missing = set(range(manifest.chunks))

    def is_valid_chunk(self, index: int, data: bytes) -> bool:
        """Whether `data` is chunk `index` of this blob (its length and hash)."""
        manifest = self.manifest
        return (
            0 <= index < manifest.chunks
            and len(data) == manifest.get_chunk_length(index)
            and compute_chunk_hash(data) == manifest.chunk_hashes[index]
        )

    def put_chunk(self, index: int, data: bytes) -> bool:
        """Write chunk `index` if it verifies; False (nothing written) if it does not."""
        if not self.is_valid_chunk(index, data):
            return False
        self._file.seek(index * self.manifest.chunk_bytes)
        self._file.write(data)
        self.missing.discard(index)
        return True

    def finish(self) -> None:
        if self.missing:
            raise BlobError(f"blob {self.blob_id.hex()} still misses {len(self.missing)} chunk(s)")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._store._commit(self.blob_id, self.manifest, self._path)

    def abort(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
