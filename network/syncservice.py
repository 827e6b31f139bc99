"""Block sync as a service of the node (DESIGN.md §3): catching up, and serving peers that lag.

`BlockSync` (sans-I/O) decides which heights to ask whom; this service does the I/O around it:
it sends the range requests over the transport, takes the answers, and applies the downloaded
blocks that follow the tip, one run (one thread hop) at a time, each block through the block
pipeline (`BlockExecutor.validate_certified`: its certificate, tx root, header link, validators,
proposer, txs, then the state root it must reproduce) and written with one synced batch. A peer
that serves a block the pipeline refuses is dropped and its heights are asked of others; a
certified block that does not fit our tip is `StateDivergedError`, which halts the node (our own
chain is wrong, not the peer).

It also decides the node's mode: a node `FAR_BEHIND_BLOCKS` or more behind the height that f+1
validators claim (so one liar cannot do it) leaves consensus for sync mode until it catches up.

And it serves: range requests, and the committed blocks pushed to a lagging peer, are read off
the event loop and rate-limited per peer (a slow or greedy reader must not turn our disk and
memory into its buffer).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from typing import Final

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError, InvalidBlockError, StateDivergedError
from medledger.chain.execution import ExecutedBlock
from medledger.chain.executor import BlockExecutor
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX
from medledger.chain.types import Block, Commit
from medledger.network.blocksync import BlockSync, SyncedBlock
from medledger.network.clock import Clock, Offload, Timer, TokenBucket
from medledger.network.messages import (
    FRAME_BYTES_MAX,
    SYNC_BLOCKS_MAX,
    BlockRange,
    BlockRequest,
    CommittedBlock,
    FrameKind,
)
from medledger.network.peers import PeerError
from medledger.network.transport import Transport

log = logging.getLogger("medledger.sync")

#: Bytes of blocks in one sync response (below the frame limit).
SYNC_RESPONSE_BYTES_MAX: Final = FRAME_BYTES_MAX // 2
#: How often block sync re-plans (expired requests, peers that came back) while behind.
SYNC_TICK_S: Final = 1.0
#: Block requests (and pushes of committed blocks to a lagging peer) one peer gets answered: a
#: sustained rate and a burst. An honest syncing peer keeps one range outstanding per peer.
BLOCK_REQUESTS_PER_S: Final = 10.0
BLOCK_REQUESTS_BURST: Final = 20
#: A peer with more than this queued for it (unsent) gets no further blocks until it drains.
BLOCK_ANSWER_BACKLOG_BYTES_MAX: Final = SYNC_RESPONSE_BYTES_MAX
#: A height pushed to a lagging peer is pushed to it again only after this long.
PUSH_REPEAT_S: Final = 2.0
#: Peers whose last push is remembered (bounded: keys come from the network).
PUSHED_PEERS_MAX: Final = 1024
#: A vote for the height just committed here is usually only late: its sender commits that height
#: itself a moment later. Such a peer is pushed the block only if, this long after our commit, it
#: has not said (by its status) that it has the height.
PUSH_GRACE_S: Final = 0.5
#: Committed blocks kept encoded for serving (the newest are asked for by many peers at once).
SERVED_BLOCKS_CACHED_MAX: Final = 16
#: A node this many heights behind its peers leaves consensus for sync mode. One behind is normal
#: (the commit is on its way); two means it missed a decision and must catch up first.
FAR_BEHIND_BLOCKS: Final = 2


@dataclasses.dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a block sync session stands (reported after every applied run, and once done)."""

    height: int
    target: int
    start_height: int
    blocks: int
    txs: int
    elapsed_s: float
    done: bool


@dataclasses.dataclass(slots=True)
class _Session:
    started_s: float
    start_height: int
    txs: int = 0


class SyncService:
    """Downloads, applies and serves blocks. Its `apply_ready` runs on the consensus task (the
    one writer of the store); the frame handlers run on peer tasks and only enqueue."""

    def __init__(
        self,
        *,
        executor: BlockExecutor,
        clock: Clock,
        offload: Offload,
        on_sync_progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        self.executor = executor
        self.store = executor.store
        self.clock = clock
        self._offload = offload
        self.on_sync_progress = on_sync_progress
        self.transport: Transport | None = None
        self.sync = BlockSync(response_bytes_max=SYNC_RESPONSE_BYTES_MAX)
        self.syncing = False
        self._session: _Session | None = None
        self._budgets: dict[bytes, TokenBucket] = {}
        #: Block requests not answered because the asker exceeded its budget.
        self.block_requests_refused = 0
        #: Sync sessions begun (for operators and the simulator's coverage counts).
        self.sessions = 0
        #: `backed_target` as of (peer heights version, tip): asked at every consensus message.
        self._target_cache: tuple[int, bytes, int] | None = None
        #: The height last pushed to each peer unasked, and when (a push is sent once per height,
        #: again only after `PUSH_REPEAT_S`: every late vote of a committed height asks for one).
        self._pushed: dict[bytes, tuple[int, float]] = {}
        #: When the tip was committed here (`note_committed`), for `PUSH_GRACE_S`.
        self._tip_committed_s = -PUSH_GRACE_S  # nothing committed yet: no grace to wait out
        #: Pushes held back by `PUSH_GRACE_S`: peer -> (start, end); one timer sends what is left.
        self._deferred: dict[bytes, tuple[int, int]] = {}
        self._deferred_timer: Timer | None = None
        #: height -> the block and its certificate as served, newest last.
        self._served: collections.OrderedDict[int, CommittedBlock] = collections.OrderedDict()

    # -- mode --------------------------------------------------------------------------------------

    @property
    def backed_target(self) -> int:
        """The highest height that f+1 validators claim, so at least one honest one: a single
        peer's claim (unsigned status, a forged future vote) cannot take us out of consensus."""
        version, tip = self.sync.heights_version, self.store.last_block_hash
        cached = self._target_cache
        if cached is not None and cached[0] == version and cached[1] == tip:
            return cached[2]
        members = self.executor.get_members(self.store.height + 1)
        claims = sorted(
            (height for peer, height in self.sync.peer_heights.items() if peer in members), reverse=True
        )
        needed = (len(members) - 1) // 3 + 1  # f + 1
        target = claims[needed - 1] if len(claims) >= needed else 0
        self._target_cache = (version, tip, target)
        return target

    @property
    def lag(self) -> int:
        return max(0, self.backed_target - self.store.height)

    def update_mode(self) -> bool:
        """Enter sync mode when far behind, leave it when caught up; True while syncing."""
        lag = self.lag
        if not self.syncing and lag >= FAR_BEHIND_BLOCKS:
            self.syncing = True
            self.sessions += 1
            self._session = _Session(self.clock.monotonic_s(), self.store.height)
            log.info(
                "%d blocks behind (height %d, peers at %d): block sync",
                lag,
                self.store.height,
                self.store.height + lag,
            )
        elif self.syncing and lag < FAR_BEHIND_BLOCKS:
            self.syncing = False
            self._report_progress(done=True)
            self._session = None
            log.info("caught up at height %d: taking part in consensus", self.store.height)
        return self.syncing

    @property
    def is_behind(self) -> bool:
        return self.sync.target > self.store.height

    # -- downloading -------------------------------------------------------------------------------

    def on_status(self, peer: bytes, height: int) -> None:
        """`peer` says it has committed `height`."""
        self.sync.set_height(peer, height)
        if height > self.store.height:
            self.plan()

    def note_height(self, peer: bytes, height: int) -> None:
        """`peer` has `height` (it works on the next): fetch what we lack."""
        self.sync.note_height(peer, height)
        if height > self.store.height:
            self.plan()

    def relinked(self, peer: bytes) -> None:
        # Two nodes that dial each other keep one of the two links: a range request sent on the
        # one closed may be lost, so it is asked again rather than waited for.
        self.sync.relinked(peer)

    def remove_peer(self, peer: bytes) -> None:
        self.sync.remove_peer(peer)

    def on_blocks(self, peer: bytes, payload: bytes) -> bool:
        """A range answer (or pushed blocks); True when blocks may be ready to apply.

        Raises `PeerError` for a malformed answer (the peer is dropped)."""
        blocks = decode(BlockRange, payload, max_bytes=FRAME_BYTES_MAX).blocks
        try:
            decoded = [
                SyncedBlock(
                    decode(Block, item.block, max_bytes=BLOCK_BYTES_MAX),
                    item.block,
                    decode(Commit, item.commit, max_bytes=CONSENSUS_MESSAGE_BYTES_MAX),
                    peer,
                )
                for item in blocks
            ]
        except CodecError as exc:
            raise PeerError(f"malformed block in a sync response: {exc.message}") from None
        ready = self.sync.on_blocks(peer, decoded, self.store.height, self.clock.monotonic_s()) > 0
        self.plan()
        return ready

    def plan(self) -> None:
        """Send the range requests block sync wants now (to peers still linked)."""
        transport = self.transport
        if transport is None:
            return
        links = transport.links
        for peer in [p for p in self.sync.peer_heights if p not in links]:
            self.sync.remove_peer(peer)
        timed_out = self.sync.requests_timed_out
        planned = self.sync.plan(self.store.height, self.clock.monotonic_s())
        if self.sync.requests_timed_out > timed_out:
            log.warning(
                "block sync: %d range request(s) unanswered for %.0f s; asking other peers",
                self.sync.requests_timed_out - timed_out,
                self.sync.request_timeout_s,
            )
        for request in planned:
            payload = encode(BlockRequest(request.first, request.last))
            if not transport.send(request.peer, FrameKind.GET_BLOCKS, payload):
                self.sync.cancel(request)

    # -- applying (on the consensus task) ----------------------------------------------------------

    async def apply_ready(self, on_applied: Callable[[ExecutedBlock], None]) -> bool:
        """Verify and apply the downloaded blocks that follow our tip; True if any was applied.

        `on_applied` is called for each block once it is written. A `StateDivergedError`
        propagates: the node must halt."""
        applied_any = False
        while run := self.sync.take_ready(self.store.height):
            started = self.clock.monotonic_s()
            try:
                applied, failure = await self._offload(self._apply_run, run)
            finally:
                self.sync.done_applying()
            for executed in applied:
                on_applied(executed)
            if applied:
                applied_any = True
                txs = sum(len(e.tx_ids) for e in applied)
                log.debug(
                    "applied blocks %d..%d from sync: %d txs in %.0f ms (%d blocks buffered, %d asked)",
                    applied[0].block.header.height,
                    self.store.height,
                    txs,
                    (self.clock.monotonic_s() - started) * 1000,
                    self.sync.buffered_blocks,
                    len(self.sync.outstanding),
                )
                if self._session is not None:
                    self._session.txs += txs
                self._report_progress(done=False)
            if failure is not None:
                peer, error = failure
                log.warning("peer %s served an invalid block (%s): %s", peer.hex()[:12], error.rule, error)
                self.drop_peer(peer, f"invalid block in sync: {error.rule}")
            self.plan()
        return applied_any

    def _apply_run(
        self, run: list[SyncedBlock]
    ) -> tuple[list[ExecutedBlock], tuple[bytes, InvalidBlockError] | None]:
        """Off the loop: verify and write `run`, block by block; blocks before a failing one stay
        applied. A refused block names the peer that served it."""
        applied: list[ExecutedBlock] = []
        for item in run:
            try:
                executed = self.executor.validate_certified(item.block, item.commit, raw=item.raw)
            except StateDivergedError:
                raise
            except InvalidBlockError as exc:
                return applied, (item.peer, exc)
            # Each block synced: LevelDB switches log files without syncing the old one, so
            # unsynced blocks before a synced one could be lost to a power cut, leaving a hole.
            self.executor.commit(executed, item.commit)
            applied.append(executed)
        return applied, None

    def drop_peer(self, peer: bytes, why: str) -> None:
        if self.transport is not None:
            self.transport.drop_peer(peer, why)
        self.sync.remove_peer(peer)

    def _report_progress(self, *, done: bool) -> None:
        session = self._session
        if session is None or self.on_sync_progress is None:
            return
        progress = SyncProgress(
            height=self.store.height,
            target=max(self.backed_target, self.store.height),
            start_height=session.start_height,
            blocks=self.store.height - session.start_height,
            txs=session.txs,
            elapsed_s=self.clock.monotonic_s() - session.started_s,
            done=done,
        )
        self.on_sync_progress(progress)  # the node's hook; it keeps a failing display from us

    # -- serving -----------------------------------------------------------------------------------

    def _may_serve(self, peer: bytes) -> bool:
        """Whether to read blocks for `peer` now: it is linked, has drained what it was sent
        before, and stays within its rate of block requests."""
        transport = self.transport
        link = transport.links.get(peer) if transport is not None else None
        if link is None or link.queued_bytes > BLOCK_ANSWER_BACKLOG_BYTES_MAX:
            return False
        now = self.clock.monotonic_s()
        bucket = self._budgets.get(peer)
        if bucket is None:
            bucket = self._budgets[peer] = TokenBucket(BLOCK_REQUESTS_PER_S, BLOCK_REQUESTS_BURST, now)
        return bucket.take(now)

    def note_committed(self) -> None:
        """The store's tip was just committed (by consensus or block sync)."""
        self._tip_committed_s = self.clock.monotonic_s()

    def push_blocks(self, peer: bytes, start: int, end: int) -> None:
        """Push committed blocks `start`..`end` to a peer that lags (as many as fit one response),
        once per height and peer (again after `PUSH_REPEAT_S`, in case the push was lost). A peer
        that says it has `end` gets nothing; one whose vote for our tip is merely late gets the
        push only if it still lags `PUSH_GRACE_S` after our commit."""
        if self.sync.peer_heights.get(peer, -1) >= end:
            return
        now = self.clock.monotonic_s()
        wait_s = self._tip_committed_s + PUSH_GRACE_S - now
        if end >= self.store.height and wait_s > 0:
            if peer in self._deferred or len(self._deferred) < PUSHED_PEERS_MAX:
                self._deferred[peer] = (start, end)
            if self._deferred_timer is None:
                self._deferred_timer = self.clock.call_later(wait_s, self._push_deferred)
            return
        pushed = self._pushed.get(peer)
        if pushed is not None and pushed[0] >= end and now - pushed[1] < PUSH_REPEAT_S:
            return
        if not self._may_serve(peer):
            return
        if len(self._pushed) >= PUSHED_PEERS_MAX and peer not in self._pushed:
            self._pushed.clear()
        self._pushed[peer] = (end, now)
        items = self._read_blocks(start, end)
        if items and self.transport is not None:
            self.transport.send(peer, FrameKind.BLOCKS, encode(BlockRange(items)))

    def _push_deferred(self) -> None:
        self._deferred_timer = None
        deferred, self._deferred = self._deferred, {}
        for peer, (start, end) in deferred.items():
            self.push_blocks(peer, start, end)

    def close(self) -> None:
        """Cancel the pending timer (the node stops)."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        self._deferred.clear()

    async def on_get_blocks(self, peer: bytes, payload: bytes) -> None:
        """Answer a range request, read and encoded off the event loop (up to 16 MB); even with
        no block, so the asker turns to other peers at once. A request over the peer's budget is
        not answered (the asker's request times out and it asks others)."""
        request = decode(BlockRequest, payload, max_bytes=64)
        if request.to_height < request.from_height:
            raise PeerError("empty block range requested")
        if not self._may_serve(peer):
            self.block_requests_refused += 1
            return
        answer = await self._offload(self._encode_blocks, request.from_height, request.to_height)
        if self.transport is not None:
            self.transport.send(peer, FrameKind.BLOCKS, answer)

    def _encode_blocks(self, start: int, end: int) -> bytes:
        return encode(BlockRange(self._read_blocks(start, end)))

    def _read_blocks(self, start: int, end: int) -> tuple[CommittedBlock, ...]:
        items: list[CommittedBlock] = []
        size = 0
        store = self.store
        for height in range(start, min(end, store.height, start + SYNC_BLOCKS_MAX - 1) + 1):
            item = self._served_block(height)
            if item is None:
                break
            size += len(item.block)
            if items and size > SYNC_RESPONSE_BYTES_MAX:
                break
            items.append(item)
        return tuple(items)

    def _served_block(self, height: int) -> CommittedBlock | None:
        """Block `height` and its certificate, encoded; the newest few are kept (a committed height
        never changes while this service lives)."""
        store = self.store
        cached = self._served.get(height)
        if cached is not None and height <= store.height:
            return cached
        raw = store.get_block_raw(height)
        commit = store.get_commit(height)
        if raw is None or commit is None:
            return None
        item = CommittedBlock(raw, encode(commit))
        if height + SERVED_BLOCKS_CACHED_MAX > store.height:  # only the newest are asked for often
            self._served[height] = item
            while len(self._served) > SERVED_BLOCKS_CACHED_MAX:
                self._served.popitem(last=False)
        return item
