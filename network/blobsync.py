"""Blob transfer between peers: serving chunks with budgets, fetching them verified (ADR 0013).

Blobs travel over the same authenticated, encrypted peer links as blocks, as request and answer
frames: a manifest (`GET_BLOB_MANIFEST` → `BLOB_MANIFEST`), then chunks one by one
(`GET_BLOB_CHUNK` → `BLOB_CHUNK`). This module knows nothing of what a blob holds (the health
layer encrypts attachments before the store sees them); it moves content-addressed bytes.

Serving, as block sync serves blocks (network/syncservice.py): each peer has a token bucket of
chunk requests, and a peer with more than `BLOB_ANSWER_BACKLOG_BYTES_MAX` queued for it (unsent)
is answered BUSY, without a disk read: a slow or greedy reader never turns our memory into its
buffer. Chunks are read (and re-verified) off the event loop.

Fetching is driven by the receiver, which is the backpressure: at most `FETCH_WINDOW_CHUNKS`
requests are outstanding per peer, a chunk is asked again of another peer when its answer is BUSY,
NOT_HELD or late, and nothing is buffered beyond the window. The manifest must hash to the blob's
id, and each chunk to its hash in the manifest, before it is written; a peer that serves a manifest
or a chunk that does not verify has lied (only it holds its sending key on the link), so it is
dropped and banned like a peer serving an invalid block, and the chunk is asked of the others.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Final

from medledger.chain.blobstore import BlobError, BlobFetch, BlobManifest, BlobStore, decode_manifest
from medledger.chain.codec import decode, encode
from medledger.network.clock import Offload, TokenBucket
from medledger.network.messages import (
    BlobAnswerStatus,
    BlobChunkAnswer,
    BlobChunkRequest,
    BlobManifestAnswer,
    BlobManifestRequest,
    FrameKind,
)
from medledger.network.peers import PeerError
from medledger.network.transport import Link, Transport

log = logging.getLogger("medledger.blobs")

#: The frame kinds this service handles (the node routes them here, the rest to the reactor).
BLOB_FRAME_KINDS: Final = frozenset(
    {FrameKind.GET_BLOB_MANIFEST, FrameKind.BLOB_MANIFEST, FrameKind.GET_BLOB_CHUNK, FrameKind.BLOB_CHUNK}
)
#: Chunk requests outstanding per peer while fetching (each up to a MiB: the receiver's window).
FETCH_WINDOW_CHUNKS: Final = 4
#: How long an asked peer has to answer one request before it is asked of another.
REQUEST_TIMEOUT_S: Final = 10.0
#: Failed answers (BUSY, late) a peer may give in one fetch before the fetch stops asking it.
PEER_FAILURES_MAX: Final = 8
#: After a BUSY answer, wait this long before asking that peer again.
BUSY_BACKOFF_S: Final = 0.05
#: Requests one peer gets answered: a sustained rate and a burst (a chunk is up to a MiB).
BLOB_REQUESTS_PER_S: Final = 400.0
BLOB_REQUESTS_BURST: Final = 64
#: A peer with more than this queued for it gets BUSY until it drains.
BLOB_ANSWER_BACKLOG_BYTES_MAX: Final = 8 * 1024 * 1024
#: Largest encoded request (an id and an index).
BLOB_REQUEST_BYTES_MAX: Final = 128


@dataclasses.dataclass(slots=True)
class FetchProgress:
    """What one fetch did: chunks written, by whom, and which peers it dropped for lying."""

    blob_id: bytes
    chunks: int = 0
    done: int = 0
    bytes_done: int = 0
    refused_chunks: int = 0
    dropped_peers: list[bytes] = dataclasses.field(default_factory=list)


_Key = tuple[bytes, bytes, int]  # (peer, blob id, chunk index; -1 for the manifest)


class BlobSync:
    """Serves this node's blobs to peers and fetches blobs from them. Runs on the node's loop."""

    def __init__(
        self,
        *,
        store: BlobStore,
        offload: Offload,
        transport: Callable[[], Transport | None],
        monotonic_s: Callable[[], float],
        requests_per_s: float = BLOB_REQUESTS_PER_S,
        requests_burst: int = BLOB_REQUESTS_BURST,
    ) -> None:
        self.store = store
        self._requests_per_s = requests_per_s
        self._requests_burst = requests_burst
        self._offload = offload
        self._transport = transport
        self._monotonic_s = monotonic_s
        self._buckets: dict[bytes, TokenBucket] = {}
        self._pending: dict[_Key, asyncio.Future[BlobManifestAnswer | BlobChunkAnswer]] = {}
        #: Requests answered BUSY because the asker was over budget or backlogged.
        self.requests_refused = 0
        #: Chunks served, and chunks or manifests from peers that did not verify.
        self.chunks_served = 0
        self.chunks_refused = 0

    # -- frames --------------------------------------------------------------------------------

    async def on_frame(self, link: Link, kind: int, payload: bytes) -> None:
        """A blob frame from a peer; `CodecError`/`PeerError` drop the peer (as for any frame)."""
        peer = link.peer_key
        if kind == FrameKind.GET_BLOB_MANIFEST:
            request = decode(BlobManifestRequest, payload, max_bytes=BLOB_REQUEST_BYTES_MAX)
            await self._serve_manifest(link, request.blob_id)
        elif kind == FrameKind.GET_BLOB_CHUNK:
            chunk_request = decode(BlobChunkRequest, payload, max_bytes=BLOB_REQUEST_BYTES_MAX)
            await self._serve_chunk(link, chunk_request.blob_id, chunk_request.index)
        elif kind == FrameKind.BLOB_MANIFEST:
            answer: BlobManifestAnswer | BlobChunkAnswer = decode(
                BlobManifestAnswer, payload, max_bytes=len(payload)
            )
            self._resolve((peer, answer.blob_id, -1), answer)
        elif kind == FrameKind.BLOB_CHUNK:
            answer = decode(BlobChunkAnswer, payload, max_bytes=len(payload))
            self._resolve((peer, answer.blob_id, answer.index), answer)
        else:
            raise PeerError(f"unexpected blob frame kind {kind}")

    def _resolve(self, key: _Key, answer: BlobManifestAnswer | BlobChunkAnswer) -> None:
        # An answer nobody waits for (late, after a timeout) is dropped without blame.
        future = self._pending.pop(key, None)
        if future is not None and not future.done():
            future.set_result(answer)

    def _may_serve(self, link: Link) -> bool:
        if link.queued_bytes > BLOB_ANSWER_BACKLOG_BYTES_MAX:
            return False
        now = self._monotonic_s()
        bucket = self._buckets.get(link.peer_key)
        if bucket is None:
            if len(self._buckets) > 1024:
                self._buckets.clear()
            bucket = self._buckets[link.peer_key] = TokenBucket(
                self._requests_per_s, self._requests_burst, now
            )
        return bucket.take(now)

    async def _serve_manifest(self, link: Link, blob_id: bytes) -> None:
        status, raw = BlobAnswerStatus.BUSY, b""
        if self._may_serve(link):
            found = await self._offload(self.read_manifest, blob_id)
            status, raw = (BlobAnswerStatus.OK, found) if found else (BlobAnswerStatus.NOT_HELD, b"")
        else:
            self.requests_refused += 1
        link.send(FrameKind.BLOB_MANIFEST, encode(BlobManifestAnswer(blob_id, int(status), raw)))

    async def _serve_chunk(self, link: Link, blob_id: bytes, index: int) -> None:
        status, data = BlobAnswerStatus.BUSY, b""
        if self._may_serve(link):
            found = await self._offload(self.read_chunk, blob_id, index)
            status, data = (BlobAnswerStatus.OK, found) if found else (BlobAnswerStatus.NOT_HELD, b"")
            self.chunks_served += found is not None
        else:
            self.requests_refused += 1
        link.send(FrameKind.BLOB_CHUNK, encode(BlobChunkAnswer(blob_id, index, int(status), data)))

    def read_manifest(self, blob_id: bytes) -> bytes | None:
        """The manifest this node serves (checked by the store). Hostile test peers override it."""
        return self.store.get_manifest_raw(blob_id)

    def read_chunk(self, blob_id: bytes, index: int) -> bytes | None:
        """The chunk this node serves (verified by the store on reading). Hostile test peers override it."""
        return self.store.read_chunk(blob_id, index)

    # -- fetching ------------------------------------------------------------------------------

    async def _ask(
        self, peer: bytes, key: _Key, kind: FrameKind, payload: bytes
    ) -> BlobManifestAnswer | BlobChunkAnswer | None:
        transport = self._transport()
        if transport is None:
            return None
        if key in self._pending:
            return None  # this very request is outstanding already: count it as not answered
        future: asyncio.Future[BlobManifestAnswer | BlobChunkAnswer] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[key] = future
        try:
            if not transport.send(peer, kind, payload):
                return None
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await future
        except TimeoutError:
            return None
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]

    def _drop(self, peer: bytes, why: str, progress: FetchProgress) -> None:
        self.chunks_refused += 1
        progress.refused_chunks += 1
        progress.dropped_peers.append(peer)
        log.warning("blob %s: peer %s %s; asking others", progress.blob_id.hex()[:16], peer.hex()[:12], why)
        transport = self._transport()
        if transport is not None:
            transport.drop_peer(peer, why)

    async def fetch_manifest(
        self, blob_id: bytes, peers: Sequence[bytes], progress: FetchProgress
    ) -> BlobManifest | None:
        for peer in peers:
            answer = await self._ask(
                peer, (peer, blob_id, -1), FrameKind.GET_BLOB_MANIFEST, encode(BlobManifestRequest(blob_id))
            )
            if not isinstance(answer, BlobManifestAnswer) or answer.status != BlobAnswerStatus.OK:
                continue
            try:
                return decode_manifest(answer.manifest, blob_id)
            except BlobError:
                self._drop(peer, "served a manifest that does not hash to the blob's id", progress)
        return None

    async def fetch(
        self,
        blob_id: bytes,
        peers: Sequence[bytes],
        *,
        on_progress: Callable[[FetchProgress], None] | None = None,
    ) -> bool:
        """Fetch `blob_id` from `peers` (in order of preference) into the store; True once held.

        Every chunk is verified before it is written; the blob is committed to the store only when
        complete. False if no peer could supply it whole (the caller tries again later).
        """
        if self.store.has(blob_id):
            return True
        progress = FetchProgress(blob_id)
        manifest = await self.fetch_manifest(blob_id, peers, progress)
        if manifest is None:
            return False
        partial = await self._offload(self.store.begin_fetch, blob_id, manifest)
        progress.chunks = manifest.chunks
        try:
            ok = await self._fetch_chunks(
                partial, [p for p in peers if p not in progress.dropped_peers], progress, on_progress
            )
            if ok:
                await self._offload(partial.finish)
                return True
            return False
        finally:
            if partial.missing or not self.store.has(blob_id):
                await self._offload(partial.abort)

    async def _fetch_chunks(
        self,
        partial: BlobFetch,
        peers: list[bytes],
        progress: FetchProgress,
        on_progress: Callable[[FetchProgress], None] | None,
    ) -> bool:
        blob_id = partial.blob_id
        todo = collections.deque(sorted(partial.missing))
        failures = dict.fromkeys(peers, 0)
        in_flight: dict[asyncio.Task[BlobManifestAnswer | BlobChunkAnswer | None], tuple[bytes, int]] = {}
        busy_until: dict[bytes, float] = {}
        try:
            while todo or in_flight:
                live = [p for p in peers if failures[p] < PEER_FAILURES_MAX]
                if not live and not in_flight:
                    return False
                now = self._monotonic_s()
                for peer in live:
                    if busy_until.get(peer, 0.0) > now:
                        continue
                    while todo and sum(1 for p, _ in in_flight.values() if p == peer) < FETCH_WINDOW_CHUNKS:
                        index = todo.popleft()
                        request = encode(BlobChunkRequest(blob_id, index))
                        task = asyncio.ensure_future(
                            self._ask(peer, (peer, blob_id, index), FrameKind.GET_BLOB_CHUNK, request)
                        )
                        in_flight[task] = (peer, index)
                if not in_flight:
                    # Every live peer is backing off: wait for the earliest to be asked again.
                    await asyncio.sleep(max(0.0, min(busy_until.values(), default=now) - now) + 0.001)
                    continue
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    peer, index = in_flight.pop(task)
                    answer = task.result()
                    if not isinstance(answer, BlobChunkAnswer) or answer.status != BlobAnswerStatus.OK:
                        todo.append(index)
                        if isinstance(answer, BlobChunkAnswer) and answer.status == BlobAnswerStatus.NOT_HELD:
                            failures[peer] = PEER_FAILURES_MAX  # it lost the blob: ask the others
                        else:
                            failures[peer] += 1
                            busy_until[peer] = self._monotonic_s() + BUSY_BACKOFF_S
                        continue
                    if not await self._offload(partial.put_chunk, index, answer.data):
                        todo.append(index)
                        failures[peer] = PEER_FAILURES_MAX
                        self._drop(peer, f"served chunk {index} that does not match its hash", progress)
                        # Its other answers will never come (the link is gone): ask the others now.
                        for other, (asked, other_index) in list(in_flight.items()):
                            if asked == peer and other not in done:
                                other.cancel()
                                del in_flight[other]
                                todo.append(other_index)
                        continue
                    progress.done += 1
                    progress.bytes_done += len(answer.data)
                    if on_progress is not None:
                        on_progress(progress)
            return not partial.missing
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
