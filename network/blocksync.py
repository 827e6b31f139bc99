"""Block sync's bookkeeping: which heights to ask which peer for, and what came back.

Sans-I/O, like the consensus core: the reactor tells `BlockSync` what peers report and what they
answer, asks it which range requests to send, and takes from it the contiguous run of blocks that
is ready to verify and apply. The policy, after CometBFT's block sync and Besu's full sync:

* several peers are asked at once, one outstanding range per peer, each for different heights,
  so downloading proceeds in parallel and ahead of applying (a pipeline);
* a range is sized from the blocks seen so far, so that it fits one response;
* what is downloaded but not applied is bounded (bytes and heights), so a node that is far
  behind does not buffer the whole chain;
* a request unanswered in time is asked of another peer, and the slow peer rests a while;
  an empty answer from a peer that claims the heights does the same;
* an answer with a gap in its heights, or more than asked, breaks the protocol: `PeerError`, and
  the peer is dropped. Its buffered blocks are discarded with it;
* blocks a peer sends unasked (a lagging validator is sent the block it missed), blocks that do
  not start at the first height asked, and a late answer to a request that timed out are kept
  when they are heights we need next and fit the window; the current request stays awaited.

Verifying a block (its certificate, tx root, header link and the state root it must reproduce)
needs the chain up to its parent, so it happens in order, when the reactor applies a run. A block
that fails it condemns the peer that served it (`peer_of`), and its heights are asked elsewhere.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Final

from medledger.chain.types import Block, Commit
from medledger.network.messages import SYNC_BLOCKS_MAX
from medledger.network.peers import PeerError

#: A range request unanswered this long is asked of another peer.
REQUEST_TIMEOUT_S: Final = 5.0
#: How long a peer that timed out (or answered nothing) is not asked again.
PEER_REST_S: Final = 5.0
#: Most bytes of blocks downloaded ahead of the applied height (buffered plus expected).
WINDOW_BYTES_MAX: Final = 64 * 1024 * 1024
#: Most heights downloaded ahead of the applied height.
WINDOW_BLOCKS_MAX: Final = 4 * SYNC_BLOCKS_MAX
#: Most bytes handed out in one run (verified and applied in one go, off the event loop).
RUN_BYTES_MAX: Final = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class RangeRequest:
    """Heights `first`..`last` asked of `peer` at `sent_at` (monotonic seconds)."""

    peer: bytes
    first: int
    last: int
    sent_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class SyncedBlock:
    """A downloaded block, its canonical bytes (as received, decoded and re-checked) and certificate."""

    block: Block
    raw: bytes
    commit: Commit
    peer: bytes

    @property
    def height(self) -> int:
        return self.block.header.height


class BlockSync:
    """Peer heights, outstanding range requests and the download buffer. Owned by one task."""

    def __init__(
        self,
        *,
        response_bytes_max: int,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        window_bytes_max: int = WINDOW_BYTES_MAX,
        window_blocks_max: int = WINDOW_BLOCKS_MAX,
    ) -> None:
        self.response_bytes_max = response_bytes_max
        self.request_timeout_s = request_timeout_s
        self.window_bytes_max = window_bytes_max
        self.window_blocks_max = window_blocks_max
        self.peer_heights: dict[bytes, int] = {}
        #: Moves on at every change of `peer_heights` (callers cache what they derive from it).
        self.heights_version = 0
        self._requests: dict[bytes, RangeRequest] = {}
        self._resting_until: dict[bytes, float] = {}
        self._asked_at: dict[bytes, float] = {}
        #: Each peer's last request that timed out: its answer may still come (in order, before
        #: the answer to the peer's current request).
        self._expired: dict[bytes, RangeRequest] = {}
        self._buffer: dict[int, SyncedBlock] = {}
        self._buffered_bytes = 0
        #: The last height of the run handed out by `take_ready` and being applied (0: none).
        self._applying_through = 0
        #: Mean size of the blocks received so far (sizes the ranges asked for).
        self._block_bytes_mean = 0.0
        self._blocks_seen = 0
        self.requests_sent = 0
        self.requests_timed_out = 0

    # -- what peers report ---------------------------------------------------------------------

    @property
    def target(self) -> int:
        """The highest height a peer reported."""
        return max(self.peer_heights.values(), default=0)

    def set_height(self, peer: bytes, height: int) -> None:
        """A peer's own status report (may go down: a peer that rebuilt its store)."""
        if self.peer_heights.get(peer) != height:
            self.peer_heights[peer] = height
            self.heights_version += 1

    def note_height(self, peer: bytes, height: int) -> None:
        """A hint that `peer` has `height` (it works on a later one)."""
        if height > self.peer_heights.get(peer, -1):
            self.peer_heights[peer] = height
            self.heights_version += 1

    def remove_peer(self, peer: bytes) -> None:
        """Forget a peer that left or was dropped, with its request and the blocks it served."""
        if self.peer_heights.pop(peer, None) is not None:
            self.heights_version += 1
        self._requests.pop(peer, None)
        self._resting_until.pop(peer, None)
        self._asked_at.pop(peer, None)
        self._expired.pop(peer, None)
        for height in [h for h, item in self._buffer.items() if item.peer == peer]:
            self._discard(height)

    def peer_of(self, height: int) -> bytes | None:
        item = self._buffer.get(height)
        return item.peer if item is not None else None

    # -- requests ------------------------------------------------------------------------------

    @property
    def outstanding(self) -> tuple[RangeRequest, ...]:
        return tuple(self._requests.values())

    @property
    def buffered_blocks(self) -> int:
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def _blocks_per_request(self, wanted: int, idle_peers: int) -> int:
        if self._blocks_seen == 0:
            # Sizes unknown yet: share what is wanted among the idle peers (an answer cut short
            # by the response limit leaves the rest to ask again, sized by then).
            return max(1, min(SYNC_BLOCKS_MAX, -(-wanted // max(idle_peers, 1))))
        fitting = int(self.response_bytes_max // max(self._block_bytes_mean, 1.0))
        return max(1, min(SYNC_BLOCKS_MAX, fitting))

    def _expire(self, now: float) -> None:
        for peer, request in list(self._requests.items()):
            if now - request.sent_at >= self.request_timeout_s:
                del self._requests[peer]
                self._expired[peer] = request
                self._resting_until[peer] = now + PEER_REST_S
                self.requests_timed_out += 1

    def _is_wanted(self, height: int) -> bool:
        return (
            height > self._applying_through
            and height not in self._buffer
            and not any(r.first <= height <= r.last for r in self._requests.values())
        )

    def plan(self, applied: int, now: float) -> list[RangeRequest]:
        """The requests to send now, for the heights after `applied` that nobody serves yet.

        Each idle peer that has the heights gets at most one range; the peers asked longest ago
        go first, so the load spreads over every peer. Once the window is full, only the next
        height to apply may still be asked for (without it nothing buffered can be applied).
        """
        self._expire(now)
        for height in [h for h in self._buffer if h <= applied]:
            self._discard(height)
        top = min(self.target, applied + self.window_blocks_max)
        idle = sorted(
            (
                peer
                for peer, height in self.peer_heights.items()
                if height > applied
                and peer not in self._requests
                and self._resting_until.get(peer, 0.0) <= now
            ),
            key=lambda peer: self._asked_at.get(peer, 0.0),
        )
        per_request = self._blocks_per_request(top - applied, len(idle))
        expected_bytes = min(self.response_bytes_max, per_request * max(self._block_bytes_mean, 1.0))
        in_flight = self._buffered_bytes + expected_bytes * len(self._requests)
        planned: list[RangeRequest] = []
        height = applied + 1
        while idle and height <= top:
            if not self._is_wanted(height):
                height += 1
                continue
            if in_flight >= self.window_bytes_max and height != applied + 1:
                break  # the window is full; only the height that blocks applying may still be asked
            peer = next((p for p in idle if self.peer_heights[p] >= height), None)
            if peer is None:
                break
            last = height
            limit = min(top, self.peer_heights[peer], height + per_request - 1)
            while last < limit and self._is_wanted(last + 1):
                last += 1
            request = RangeRequest(peer, height, last, now)
            self._requests[peer] = request
            self._asked_at[peer] = now
            idle.remove(peer)
            planned.append(request)
            in_flight += expected_bytes
            height = last + 1
        self.requests_sent += len(planned)
        return planned

    def cancel(self, request: RangeRequest) -> None:
        """A request that could not be sent (the link had just closed)."""
        if self._requests.get(request.peer) == request:
            del self._requests[request.peer]

    def relinked(self, peer: bytes) -> None:
        """`peer` has a new link: a request sent on the old one may be lost with it, so its heights
        are free to ask again (an answer that still comes is taken as unasked)."""
        request = self._requests.pop(peer, None)
        if request is not None:
            self._expired[peer] = request

    # -- responses -----------------------------------------------------------------------------

    def on_blocks(self, peer: bytes, blocks: list[SyncedBlock], applied: int, now: float) -> int:
        """Take a peer's range; returns how many blocks were kept. `PeerError`: drop the peer.

        Blocks always come in consecutive heights. An answer starts at the first height asked and
        holds no more than asked. Other blocks are unasked (a validator that sees us lag sends us
        the block we missed; it may cross an answer) and are kept only for the heights needed
        next, the request staying outstanding. Every kept block is verified before it is applied.
        """
        heights = [item.height for item in blocks]
        if any(b != a + 1 for a, b in itertools.pairwise(heights)):
            raise PeerError("a sync response whose heights are not consecutive")
        request = self._requests.get(peer)
        if request is not None and (not heights or heights[0] == request.first):
            del self._requests[peer]
            late = self._expired.pop(peer, None)
            if heights and heights[-1] > request.last and _answers(late, heights):
                # The late answer to the peer's expired request (answers carry no request id, and
                # come in order): the current request is still awaited.
                self._requests[peer] = request
                request = None
            elif heights and heights[-1] > request.last:
                raise PeerError(
                    f"asked for heights {request.first}..{request.last}, got {heights[0]}..{heights[-1]}"
                )
            elif not heights:  # it claimed heights it does not serve: rest it, and believe it
                self._resting_until[peer] = now + PEER_REST_S
                self.peer_heights[peer] = min(self.peer_heights.get(peer, 0), request.first - 1)
                self.heights_version += 1
        else:
            request = None  # unasked
        kept = 0
        for item in blocks:
            height = item.height
            if height <= applied or height in self._buffer or height > applied + self.window_blocks_max:
                continue
            if request is None and not self._is_wanted(height):
                continue
            if (
                request is None
                and height != applied + 1
                and self._buffered_bytes + len(item.raw) > self.window_bytes_max
            ):
                continue  # unasked blocks stay within the byte window (the next height always fits)
            self._buffer[height] = item
            self._buffered_bytes += len(item.raw)
            self._blocks_seen += 1
            self._block_bytes_mean += (len(item.raw) - self._block_bytes_mean) / min(self._blocks_seen, 64)
            kept += 1
        return kept

    def take_ready(self, applied: int) -> list[SyncedBlock]:
        """The buffered blocks that follow `applied` without a gap (at most `RUN_BYTES_MAX`)."""
        run: list[SyncedBlock] = []
        size = 0
        height = applied + 1
        while (item := self._buffer.get(height)) is not None:
            if run and size + len(item.raw) > RUN_BYTES_MAX:
                break
            self._discard(height)
            run.append(item)
            size += len(item.raw)
            height += 1
        if run:
            self._applying_through = run[-1].height
        return run

    def start_applying(self, last: int) -> None:
        """Heights up to `last` are being applied from elsewhere (a block consensus decided, which
        the reactor writes off the loop): they are not asked for until `done_applying`. Peers that
        committed it say so meanwhile, and asking them would download the block being written."""
        self._applying_through = max(self._applying_through, last)

    def done_applying(self) -> None:
        """The run from `take_ready` (or `start_applying`) is applied, or failed part-way: its
        heights that are not applied are wanted again."""
        self._applying_through = 0

    def _discard(self, height: int) -> None:
        item = self._buffer.pop(height)
        self._buffered_bytes -= len(item.raw)


def _answers(request: RangeRequest | None, heights: list[int]) -> bool:
    """Whether consecutive `heights` can be the answer to `request`."""
    return request is not None and heights[0] == request.first and heights[-1] <= request.last
