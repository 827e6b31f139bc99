"""Blob transfer over real peer links (ADR 0013): verified chunk by chunk, liars dropped, others asked.

Three nodes in one event loop, each a real `PeerNetwork` (authenticated, encrypted websocket
links on localhost) with its own `BlobStore` on disk and `BlobSync` service. A blob one peer holds
arrives whole at the asker; a peer that serves a chunk that does not match its hash (or a manifest
that does not hash to the id) is dropped and the chunk is taken from the honest peer; a blob no
peer holds is not written at all; and a chunk damaged on the holder's disk is never served.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from medledger.chain.blobstore import BlobStore
from medledger.chain.codec import encode
from medledger.crypto import Identity
from medledger.network.blobsync import BLOB_REQUESTS_BURST, BlobSync
from medledger.network.messages import BlobChunkRequest, FrameKind
from medledger.network.peers import PeerLink, PeerNetwork

CHAIN = "blob-test"
DEADLINE_S = 15.0
CHUNK = 64 * 1024


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition with a deadline


class LyingBlobSync(BlobSync):
    """A hostile peer: serves every chunk with one byte flipped."""

    def read_chunk(self, blob_id: bytes, index: int) -> bytes | None:
        data = super().read_chunk(blob_id, index)
        return None if data is None else bytes([data[0] ^ 1]) + data[1:]


class ForgingBlobSync(BlobSync):
    """A hostile peer: serves, for any blob it is asked, the manifest of another blob it holds."""

    def read_manifest(self, blob_id: bytes) -> bytes | None:
        held = self.store.list_blob_ids()
        return self.store.get_manifest_raw(held[0]) if held else None


class Node:
    def __init__(
        self,
        root: Path,
        members: set[bytes],
        sync_cls: type[BlobSync] = BlobSync,
        *,
        requests_per_s: float = 400.0,
    ) -> None:
        self.identity = Identity.generate()
        members.add(self.key)
        self.store = BlobStore(root)
        self.network: PeerNetwork | None = None
        self.sync = sync_cls(
            store=self.store,
            offload=asyncio.to_thread,
            transport=lambda: self.network,
            monotonic_s=time.monotonic,
            requests_per_s=requests_per_s,
        )
        self.members = members
        self.runner: web.AppRunner | None = None
        self.url = ""

    @property
    def key(self) -> bytes:
        return self.identity.public.sign_key

    async def start(self, dial: tuple[str, ...] = ()) -> None:
        async def on_frame(link: PeerLink, kind: int, payload: bytes) -> None:
            await self.sync.on_frame(link, kind, payload)

        self.network = PeerNetwork(
            identity=self.identity,
            chain_id=CHAIN,
            is_allowed=lambda key: key in self.members,
            on_frame=on_frame,
            peer_urls=dial,
        )
        app = web.Application()
        self.network.add_routes(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await self.network.create_site(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        await self.network.start()

    async def stop(self) -> None:
        if self.network is not None:
            await self.network.stop()
        if self.runner is not None:
            await self.runner.cleanup()


def put_blob(store: BlobStore, data: bytes) -> bytes:
    upload = store.begin_upload()
    for start in range(0, len(data), CHUNK):
        upload.append(data[start : start + CHUNK])
    blob_id, _ = upload.finish()
    return blob_id


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Node]]:
    members: set[bytes] = set()
    honest = Node(tmp_path / "honest", members)
    liar = Node(tmp_path / "liar", members, LyingBlobSync)
    asker = Node(tmp_path / "asker", members)
    await honest.start()
    await liar.start()
    await asker.start(dial=(honest.url, liar.url))
    try:
        await wait_until(lambda: asker.network is not None and len(asker.network.links) == 2, "links")
        yield honest, liar, asker
    finally:
        for node in (asker, liar, honest):
            await node.stop()


def read_all(store: BlobStore, blob_id: bytes) -> bytes:
    return b"".join(store.iter_chunks(blob_id))


async def test_a_blob_arrives_whole_and_verified(nodes: tuple[Node, Node, Node]) -> None:
    honest, _, asker = nodes
    data = secrets.token_bytes(10 * CHUNK + 123)
    blob_id = put_blob(honest.store, data)
    assert await asker.sync.fetch(blob_id, [honest.key])
    assert asker.store.verify(blob_id)
    assert read_all(asker.store, blob_id) == data


async def test_invalid_chunks_from_a_lying_peer_are_refused_and_the_honest_peer_asked(
    nodes: tuple[Node, Node, Node],
) -> None:
    honest, liar, asker = nodes
    data = secrets.token_bytes(8 * CHUNK)
    blob_id = put_blob(honest.store, data)
    assert put_blob(liar.store, data) == blob_id  # the liar holds it too, but serves it altered
    # The liar is asked first: every chunk it serves is refused, it is dropped, the honest peer serves.
    assert await asker.sync.fetch(blob_id, [liar.key, honest.key])
    assert read_all(asker.store, blob_id) == data
    assert asker.sync.chunks_refused >= 1
    assert asker.network is not None
    assert liar.key not in asker.network.links
    assert asker.network.banned_for(liar.key) > 0


async def test_invalid_fetch_of_a_blob_nobody_holds_writes_nothing(nodes: tuple[Node, Node, Node]) -> None:
    honest, liar, asker = nodes
    missing = secrets.token_bytes(32)
    assert not await asker.sync.fetch(missing, [honest.key, liar.key])
    assert not asker.store.has(missing)
    assert asker.store.list_blob_ids() == []
    assert list(asker.store.partial.iterdir()) == []


async def test_invalid_chunk_on_the_holders_disk_is_never_served(nodes: tuple[Node, Node, Node]) -> None:
    honest, _, asker = nodes
    data = secrets.token_bytes(3 * CHUNK)
    blob_id = put_blob(honest.store, data)
    path = honest.store.root / f"{blob_id.hex()}.blob"
    raw = bytearray(path.read_bytes())
    raw[CHUNK + 5] ^= 0xFF  # the disk flips a bit of chunk 1
    path.write_bytes(bytes(raw))
    assert not await asker.sync.fetch(blob_id, [honest.key])
    assert not asker.store.has(blob_id)
    assert not honest.store.has(blob_id)  # the holder found it damaged and removed it (to be re-fetched)


async def test_invalid_manifest_from_a_forging_peer_is_refused(tmp_path: Path) -> None:
    members: set[bytes] = set()
    honest, forger, asker = (
        Node(tmp_path / "honest", members),
        Node(tmp_path / "forger", members, ForgingBlobSync),
        Node(tmp_path / "asker", members),
    )
    await honest.start()
    await forger.start()
    await asker.start(dial=(honest.url, forger.url))
    try:
        await wait_until(lambda: asker.network is not None and len(asker.network.links) == 2, "links")
        data = secrets.token_bytes(2 * CHUNK + 1)
        blob_id = put_blob(honest.store, data)
        put_blob(forger.store, secrets.token_bytes(CHUNK))  # what it passes off as the blob
        assert await asker.sync.fetch(blob_id, [forger.key, honest.key])
        assert read_all(asker.store, blob_id) == data
        assert asker.network is not None
        assert asker.network.banned_for(forger.key) > 0
    finally:
        for node in (asker, forger, honest):
            await node.stop()


async def test_invalid_flood_of_chunk_requests_is_answered_busy_beyond_the_budget(tmp_path: Path) -> None:
    members: set[bytes] = set()
    # A holder whose budget does not refill: exactly the burst is served, whatever the timing.
    holder = Node(tmp_path / "holder", members, requests_per_s=0.0)
    asker = Node(tmp_path / "asker", members)
    await holder.start()
    await asker.start(dial=(holder.url,))
    try:
        await wait_until(lambda: asker.network is not None and len(asker.network.links) == 1, "link")
        assert asker.network is not None
        blob_id = put_blob(holder.store, secrets.token_bytes(CHUNK))
        request = encode(BlobChunkRequest(blob_id, 0))
        for _ in range(BLOB_REQUESTS_BURST * 3):  # far more than the burst, at once
            asker.network.send(holder.key, FrameKind.GET_BLOB_CHUNK, request)
        await wait_until(
            lambda: holder.sync.chunks_served + holder.sync.requests_refused >= BLOB_REQUESTS_BURST * 3,
            "every request answered",
        )
        assert holder.sync.chunks_served == BLOB_REQUESTS_BURST
        assert holder.sync.requests_refused == 2 * BLOB_REQUESTS_BURST
        # Asking is no offence (BUSY is an answer): the link stays, and the asker turns elsewhere.
        assert holder.key in asker.network.links
        assert not await asker.sync.fetch(blob_id, [holder.key])
    finally:
        for node in (asker, holder):
            await node.stop()
