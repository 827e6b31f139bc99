"""The content-addressed blob store (ADR 0013): ids pin every byte, chunks verify alone, damage is
found on reading and the damaged blob removed (to be fetched again), partial writes never count."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from medledger.chain.blobstore import (
    BLOB_CHUNKS_MAX,
    BlobError,
    BlobManifest,
    BlobStore,
    compute_blob_id,
    compute_chunk_hash,
    decode_manifest,
)
from medledger.chain.codec import encode

CHUNK = 4096


def put(store: BlobStore, data: bytes) -> bytes:
    upload = store.begin_upload()
    for start in range(0, len(data), CHUNK):
        upload.append(data[start : start + CHUNK])
    blob_id, manifest = upload.finish()
    assert manifest.size == len(data)
    return blob_id


def test_a_blob_reads_back_by_its_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = secrets.token_bytes(5 * CHUNK + 7)
    blob_id = put(store, data)
    assert store.has(blob_id)
    assert store.list_blob_ids() == [blob_id]
    assert b"".join(store.iter_chunks(blob_id)) == data
    assert store.verify(blob_id)
    assert put(store, data) == blob_id  # the same bytes, the same id (stored once)
    assert list(store.partial.iterdir()) == []
    # A fresh store on the same directory finds it (and forgets unfinished writes).
    unfinished = store.begin_upload()
    unfinished.append(b"x")
    again = BlobStore(tmp_path)
    assert again.list_blob_ids() == [blob_id]
    assert list(again.partial.iterdir()) == []
    unfinished.abort()


def test_invalid_chunk_on_disk_removes_the_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob_id = put(store, secrets.token_bytes(3 * CHUNK))
    path = tmp_path / f"{blob_id.hex()}.blob"
    raw = bytearray(path.read_bytes())
    raw[2 * CHUNK] ^= 1
    path.write_bytes(bytes(raw))
    assert store.read_chunk(blob_id, 0) is not None
    assert store.read_chunk(blob_id, 2) is None
    assert not store.has(blob_id)


def test_invalid_manifests_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob_id = put(store, secrets.token_bytes(2 * CHUNK))
    manifest = store.get_manifest(blob_id)
    assert manifest is not None
    with pytest.raises(BlobError):  # another id
        decode_manifest(encode(manifest), secrets.token_bytes(32))
    short = BlobManifest(manifest.size, manifest.chunk_bytes, manifest.chunk_hashes[:1])
    with pytest.raises(BlobError):  # a chunk missing from the list
        decode_manifest(encode(short), compute_blob_id(short))
    with pytest.raises(BlobError):  # not a manifest at all
        decode_manifest(b"\x00garbage", blob_id)
    # A manifest file swapped for another blob's is caught on reading (and the blob removed).
    other = put(store, secrets.token_bytes(CHUNK))
    (tmp_path / f"{blob_id.hex()}.manifest").write_bytes((tmp_path / f"{other.hex()}.manifest").read_bytes())
    assert store.get_manifest(blob_id) is None
    assert not store.has(blob_id)


def test_invalid_uploads_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    upload = store.begin_upload()
    with pytest.raises(BlobError):
        upload.append(b"")
    upload.append(b"a" * 10)
    upload.append(b"b" * 4)
    with pytest.raises(BlobError):  # only the last chunk may be shorter
        upload.append(b"c" * 4)
    upload.abort()
    with pytest.raises(BlobError):
        store.begin_upload().finish()
    assert store.list_blob_ids() == []
    assert list(store.partial.iterdir()) == []


def test_a_fetch_takes_only_chunks_that_verify(tmp_path: Path) -> None:
    source = BlobStore(tmp_path / "a")
    data = secrets.token_bytes(3 * CHUNK)
    blob_id = put(source, data)
    manifest = source.get_manifest(blob_id)
    assert manifest is not None
    target = BlobStore(tmp_path / "b")
    fetch = target.begin_fetch(blob_id, manifest)
    chunks = list(source.iter_chunks(blob_id))
    assert not fetch.put_chunk(0, chunks[1])  # the wrong chunk for the index
    assert not fetch.put_chunk(0, chunks[0][:-1] + b"\x00")
    assert not fetch.put_chunk(BLOB_CHUNKS_MAX, chunks[0])
    for index in (2, 0):
        assert fetch.put_chunk(index, chunks[index])
    with pytest.raises(BlobError):  # incomplete: not committed
        fetch.finish()
    assert not target.has(blob_id)
    assert fetch.put_chunk(1, chunks[1])
    fetch.finish()
    assert b"".join(target.iter_chunks(blob_id)) == data
    assert compute_chunk_hash(chunks[0]) == manifest.chunk_hashes[0]
