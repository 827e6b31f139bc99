"""Secret, authenticated peer links over aiohttp websockets (docs/adr/0006-peer-channel.md).

`PeerNetwork` keeps one link per peer node key: it dials the configured peer URLs (retrying with
capped exponential backoff) and accepts inbound links on the node's peer endpoint. Every link
opens with the secret channel's handshake (`channel.py`): an ephemeral X25519 agreement, then
each side proves its node key by signing the link's challenge inside the encrypted channel, then
each tells the other whether it accepts it (`Verdict`). Everything after the two hellos is sealed
(ChaCha20-Poly1305, counter nonces), so a relay can neither read peer traffic nor pass as a node,
nor splice two nodes' handshakes.

What an outsider can cost a node is bounded before it proves anything:

* the websocket layer takes no compression and no message larger than one sealed chunk (8 KiB),
  and a message is only reassembled beyond `HANDSHAKE_MESSAGE_BYTES_MAX` on an authenticated link;
* inbound connections are counted by the listening socket itself (`PeerSite`): not yet
  authenticated ones are capped in total and per remote address, all inbound ones in total, and
  a connection not authenticated `HANDSHAKE_TIMEOUT_S` after it was accepted is cut, whether it
  ever sent a byte or not;
* refusals, failed handshakes and resets from unauthenticated sockets are never logged one by
  one: a summary line at most every `LOG_SUMMARY_S` (`_RefusalLog`).

On a link, what ends it decides what follows. A frame that opens but does not decode is the
peer's own doing (only it holds its sending key): the link is dropped and the peer refused for
`BAN_S` (`drop`, also used by the reactor for forged signatures and invalid blocks). A chunk that
does not open, a websocket error, a missed pong, a close, or a peer too slow to drain its send
queue (bounded in bytes) only ends the link (`disconnect`): a stall or a meddling relay must not
get an honest node banned. A link refused after its handshake (a ban, a duplicate) does not reset
the dial backoff, so nothing redials in a hot loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from aiohttp import web

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.crypto import verify_signature
from medledger.crypto.signing import Identity
from medledger.errors import MedledgerError
from medledger.network.channel import (
    PROTOCOL_VERSION,
    SEALED_CHUNK_BYTES_MAX,
    ChannelError,
    ChunkAssembler,
    ChunkProtocolError,
    ChunkSealer,
    EphemeralKeys,
    compute_auth_bytes,
    compute_session_secrets,
)
from medledger.network.messages import (
    FRAME_BYTES_MAX,
    FRAME_WIRE_BYTES_MAX,
    HANDSHAKE_MESSAGE_BYTES_MAX,
    ChannelAuth,
    ChannelHello,
    ChannelVerdict,
    Frame,
    FrameKind,
    Verdict,
)

log = logging.getLogger("medledger.network")

PEER_PATH: Final = "/p2p"
#: From an inbound connection's accept (or an outbound dial's upgrade) to an authenticated link.
HANDSHAKE_TIMEOUT_S: Final = 5.0
#: Websocket ping interval; a pong missing for half of it ends the link (a disconnect, never a ban).
HEARTBEAT_S: Final = 5.0
#: The websocket layer's message bound, for the whole link: one sealed chunk. aiohttp refuses a
#: frame whose declared length reaches it before buffering any of its payload.
WS_MESSAGE_BYTES_MAX: Final = SEALED_CHUNK_BYTES_MAX + 1
#: Bytes a link may have queued for sending. A frame is always taken by an empty queue (a frame
#: may be as large as `FRAME_BYTES_MAX`); one that would overflow a busy queue disconnects the
#: peer: it reads slower than this node writes, and holding more for it is our memory.
SEND_QUEUE_BYTES_MAX: Final = FRAME_BYTES_MAX + 16 * 1024 * 1024
#: Inbound connections not yet authenticated (so: concurrent inbound handshakes), in total and
#: per remote address; and all inbound connections, authenticated or not.
INBOUND_UNAUTHENTICATED_MAX: Final = 64
INBOUND_UNAUTHENTICATED_PER_ADDRESS_MAX: Final = 8
INBOUND_CONNECTIONS_MAX: Final = 512
#: Connections the kernel queues for the peer endpoint before it accepts them (also the most
#: asyncio accepts in one round, before the guard has closed the ones it refuses).
PEER_LISTEN_BACKLOG: Final = 128
DIAL_BACKOFF_S_MIN: Final = 0.1
DIAL_BACKOFF_S_MAX: Final = 5.0
#: A peer dropped for breaking the protocol is refused (inbound and outbound) this long.
BAN_S: Final = 30.0
#: At most one summary line of refused or failed unauthenticated connections this often.
LOG_SUMMARY_S: Final = 10.0


class PeerError(MedledgerError):
    """A peer broke the protocol on an authenticated link (raised by frame handlers: a ban)."""

    code = "peer_error"


class HandshakeError(PeerError):
    """A connection that did not become a link: it proved no key (nobody is blamed or banned)."""

    code = "handshake_failed"


class PeerRefusedError(HandshakeError):
    """The handshake completed, but one side refused the other (`verdict` says why)."""

    code = "peer_refused"

    def __init__(self, message: str, *, peer_key: bytes, verdict: Verdict, by_peer: bool) -> None:
        super().__init__(message)
        self.peer_key = peer_key
        self.verdict = verdict
        self.by_peer = by_peer


FrameHandler = Callable[["PeerLink", int, bytes], Awaitable[None]]
WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class PeerLink:
    """An authenticated, encrypted link to one peer node, with a send queue bounded in bytes."""

    def __init__(
        self,
        *,
        peer_key: bytes,
        dialer_key: bytes,
        ws: WebSocket,
        sealer: ChunkSealer,
        assembler: ChunkAssembler,
        on_overflow: Callable[[PeerLink], None],
    ) -> None:
        self.peer_key = peer_key
        self.dialer_key = dialer_key
        self.ws = ws
        self.sealer = sealer
        self.assembler = assembler
        self._on_overflow = on_overflow
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_ready = asyncio.Event()
        self.queued_bytes = 0
        self.dropped_frames = 0
        self.ended = asyncio.Event()

    @property
    def name(self) -> str:
        return self.peer_key.hex()[:12]

    def send(self, kind: FrameKind, payload: bytes) -> bool:
        """Queue a frame; False if the link is ending or the peer is too slow (then it ends)."""
        return self.send_frame(encode(Frame(int(kind), payload)))

    def send_frame(self, frame: bytes) -> bool:
        """Queue an encoded `Frame` (sealed as it is written)."""
        if self.ended.is_set():
            return False
        if self._queue and self.queued_bytes + len(frame) > SEND_QUEUE_BYTES_MAX:
            self.dropped_frames += 1
            self._on_overflow(self)
            return False
        self._queue.append(frame)
        self.queued_bytes += len(frame)
        self._queue_ready.set()
        return True

    async def next_frame(self) -> bytes:
        while not self._queue:
            self._queue_ready.clear()
            await self._queue_ready.wait()
        return self._queue[0]

    def sent(self, frame: bytes) -> None:
        """`frame` (the queue's head) is written: its bytes are no longer held for the peer."""
        self._queue.popleft()
        self.queued_bytes -= len(frame)


# -- inbound connections, counted by the listening socket ----------------------------------------


class _RefusalLog:
    """Counts refusals by reason and logs one summary line at most every `LOG_SUMMARY_S`, so an
    outsider cannot fill the operator's disk or drown real errors."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()
        self._flush_at: asyncio.TimerHandle | None = None

    def note(self, reason: str) -> None:
        self.counts[reason] += 1
        self.total[reason] += 1
        if self._flush_at is None:
            with contextlib.suppress(RuntimeError):  # no running loop: counted, not logged
                self._flush_at = asyncio.get_running_loop().call_later(LOG_SUMMARY_S, self.flush)

    def flush(self) -> None:
        self._flush_at = None
        if not self.counts:
            return
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(self.counts.items()))
        self.counts.clear()
        log.warning("peer endpoint, last %.0f s: %s", LOG_SUMMARY_S, summary)

    def close(self) -> None:
        """Stop the timer, logging what is counted but not yet said."""
        if self._flush_at is not None:
            self._flush_at.cancel()
        self.flush()


class InboundGuard:
    """Admits inbound TCP connections under the caps and cuts those not authenticated in time."""

    def __init__(self, refusals: _RefusalLog) -> None:
        self._refusals = refusals
        self._unauthenticated: dict[asyncio.BaseTransport, tuple[str, asyncio.TimerHandle]] = {}
        self._by_address: collections.Counter[str] = collections.Counter()
        self._open: set[asyncio.BaseTransport] = set()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def unauthenticated_connections(self) -> int:
        return len(self._unauthenticated)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        address = _remote_address(transport)
        if len(self._open) >= INBOUND_CONNECTIONS_MAX:
            self._refusals.note("refused (all inbound slots taken)")
            return False
        if len(self._unauthenticated) >= INBOUND_UNAUTHENTICATED_MAX:
            self._refusals.note("refused (too many unauthenticated connections)")
            return False
        if self._by_address[address] >= INBOUND_UNAUTHENTICATED_PER_ADDRESS_MAX:
            self._refusals.note("refused (too many unauthenticated connections from one address)")
            return False
        timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self._expire, transport)
        self._unauthenticated[transport] = (address, timer)
        self._by_address[address] += 1
        self._open.add(transport)
        return True

    def authenticated(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection is a link now: it leaves the unauthenticated counts and deadline."""
        if transport is not None:
            self._forget_unauthenticated(transport)

    def released(self, transport: asyncio.BaseTransport) -> None:
        self._forget_unauthenticated(transport)
        self._open.discard(transport)

    def _forget_unauthenticated(self, transport: asyncio.BaseTransport) -> None:
        entry = self._unauthenticated.pop(transport, None)
        if entry is not None:
            address, timer = entry
            timer.cancel()
            self._by_address[address] -= 1
            if self._by_address[address] <= 0:
                del self._by_address[address]

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if transport in self._unauthenticated:
            self._refusals.note("cut (not authenticated in time)")
            self._forget_unauthenticated(transport)
            _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    """Close at once, unsent bytes and all (a TCP reset): nothing is owed to an unproven peer."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


def _remote_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind `InboundGuard`'s admission."""

    def __init__(self, inner: asyncio.Protocol, guard: InboundGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._admitted = False
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.admit(transport):
            _abort(transport)
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.released(self._transport)
        if self._admitted:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class PeerSite(web.TCPSite):
    """A `TCPSite` whose every accepted connection goes through an `InboundGuard` first."""

    def __init__(self, runner: web.BaseRunner, guard: InboundGuard, host: str, port: int) -> None:
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        guard = self._guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(server(), guard), self._host, self._port, backlog=PEER_LISTEN_BACKLOG
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


# -- the network ---------------------------------------------------------------------------------


class PeerNetwork:
    """This node's peer links. Owned by one event loop; handlers run as tasks of that loop."""

    def __init__(
        self,
        *,
        identity: Identity,
        chain_id: str,
        is_allowed: Callable[[bytes], bool],
        on_frame: FrameHandler,
        peer_urls: tuple[str, ...] = (),
        on_connect: Callable[[PeerLink], Awaitable[None]] | None = None,
    ) -> None:
        self.identity = identity
        self.chain_id = chain_id
        self.is_allowed = is_allowed
        self.on_frame = on_frame
        self.on_connect = on_connect
        self.peer_urls = peer_urls
        self.links: dict[bytes, PeerLink] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        #: Connections that did not become links (failed or refused handshakes, either way).
        self.refused_handshakes = 0
        #: Links ended for breaking the protocol (and their peers banned).
        self.dropped_peers = 0
        #: Links ended without blame (timeouts, closes, chunks that did not open, slow readers).
        self.disconnected_peers = 0
        self.slow_peers = 0
        #: Peers dropped for breaking the protocol → until when (monotonic) they are refused.
        self._banned_until: dict[bytes, float] = {}
        self._refusals = _RefusalLog()
        self.guard = InboundGuard(self._refusals)

    def is_closing(self) -> bool:
        return self._closing

    @property
    def node_key(self) -> bytes:
        return self.identity.public.sign_key

    @property
    def refusal_counts(self) -> collections.Counter[str]:
        """Every refusal of an unauthenticated connection so far, by reason."""
        return self._refusals.total

    # -- life cycle ------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PEER_PATH, self._accept)

    def create_site(self, runner: web.BaseRunner, host: str, port: int) -> PeerSite:
        """The listening site of the peer endpoint, with this network's inbound caps."""
        return PeerSite(runner, self.guard, host, port)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=3.0))
        for url in self.peer_urls:
            self._spawn(self._dial_forever(url), f"dial {url}")

    async def stop(self) -> None:
        self._closing = True
        for link in list(self.links.values()):
            await link.ws.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
        self._refusals.close()

    def _spawn(self, coro: Awaitable[object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ---------------------------------------------------------------------------------

    def broadcast(self, kind: FrameKind, payload: bytes, *, exclude: bytes | None = None) -> int:
        """Queue a frame for every connected peer (but `exclude`); returns how many took it."""
        frame = encode(Frame(int(kind), payload))
        return sum(link.send_frame(frame) for key, link in list(self.links.items()) if key != exclude)

    def send(self, peer_key: bytes, kind: FrameKind, payload: bytes) -> bool:
        link = self.links.get(peer_key)
        return link is not None and link.send(kind, payload)

    # -- links -----------------------------------------------------------------------------------

    async def _dial_forever(self, url: str) -> None:
        backoff = DIAL_BACKOFF_S_MIN
        reached: bytes | None = None  # the node key this URL led to last
        while not self._closing:
            existing = self.links.get(reached) if reached is not None else None
            if existing is not None and not existing.ended.is_set():
                await existing.ended.wait()  # linked already (it dialled us): nothing to dial
                continue
            assert self._session is not None
            linked: bytes | None = None
            try:
                async with self._session.ws_connect(
                    url.rstrip("/") + PEER_PATH,
                    max_msg_size=WS_MESSAGE_BYTES_MAX,
                    heartbeat=HEARTBEAT_S,
                    compress=0,
                ) as ws:
                    linked = await self._run_link(ws, dialer=True)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("peer %s unreachable: %s", url, exc)
            except PeerRefusedError as exc:
                self.refused_handshakes += 1
                if exc.verdict is Verdict.DUPLICATE:
                    log.debug("peer %s: %s", url, exc.message)
                else:
                    self._refusals.note(f"outbound refused ({exc.verdict.name.lower()})")
                    log.debug("peer %s refused: %s", url, exc.message)
                reached = _refused_key(exc)
            except HandshakeError as exc:
                self.refused_handshakes += 1
                self._refusals.note("outbound handshake failed")
                log.debug("peer %s: handshake failed: %s", url, exc.message)
            if linked is not None:
                reached = linked
                backoff = DIAL_BACKOFF_S_MIN  # a link that lived and ended: reconnect promptly
            if self.is_closing():
                break
            # Reconnect pacing: a timer, with capped exponential backoff. A refusal after the
            # handshake (ban, duplicate) does not reset it: no hot loop of redials.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, DIAL_BACKOFF_S_MAX)

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MESSAGE_BYTES_MAX, heartbeat=HEARTBEAT_S, compress=False)
        if not ws.can_prepare(request).ok:
            self._refusals.note("refused (not a websocket upgrade)")
            return web.Response(status=400, text="peer endpoint: websocket only\n")
        try:
            await ws.prepare(request)
        except (ConnectionError, aiohttp.ClientConnectionResetError, RuntimeError):
            self._refusals.note("reset during the upgrade")
            return ws
        try:
            await self._run_link(ws, dialer=False, transport=request.transport)
        except HandshakeError as exc:
            self.refused_handshakes += 1
            self._refusals.note(
                f"inbound refused ({exc.verdict.name.lower()})"
                if isinstance(exc, PeerRefusedError)
                else "inbound handshake failed"
            )
            log.debug("inbound peer: %s", exc.message)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            self._refusals.note("reset during the handshake")
        return ws

    async def _handshake(self, ws: WebSocket, *, dialer: bool) -> PeerLink:
        """Agree on keys, prove node keys both ways, exchange verdicts (see channel.py)."""
        ephemeral = EphemeralKeys.generate()
        await ws.send_bytes(encode(ChannelHello(PROTOCOL_VERSION, self.chain_id, ephemeral.public)))
        theirs = decode(ChannelHello, await _receive_binary(ws), max_bytes=HANDSHAKE_MESSAGE_BYTES_MAX)
        if theirs.version != PROTOCOL_VERSION:
            raise HandshakeError(f"peer speaks protocol {theirs.version}, this node {PROTOCOL_VERSION}")
        if theirs.chain_id != self.chain_id:
            raise HandshakeError(f"peer is on chain {theirs.chain_id!r}, this is {self.chain_id!r}")
        secrets = compute_session_secrets(
            ephemeral,
            theirs.ephemeral_key,
            is_dialer=dialer,
            version=PROTOCOL_VERSION,
            chain_id=self.chain_id,
        )
        sealer = ChunkSealer(secrets.send_key)
        assembler = ChunkAssembler(secrets.receive_key, message_bytes_max=HANDSHAKE_MESSAGE_BYTES_MAX)
        signature = self.identity.sign(compute_auth_bytes(secrets.challenge, signer_is_dialer=dialer))
        await _send_sealed(ws, sealer, encode(ChannelAuth(self.node_key, signature)))
        auth = decode(
            ChannelAuth, await _receive_sealed(ws, assembler), max_bytes=HANDSHAKE_MESSAGE_BYTES_MAX
        )
        signed = compute_auth_bytes(secrets.challenge, signer_is_dialer=not dialer)
        if not verify_signature(auth.node_key, signed, auth.signature):
            # Not blamed on the key it names: a relay splicing two handshakes gets here too.
            raise HandshakeError("the peer's signature over this link's challenge does not verify")
        peer_key = auth.node_key
        dialer_key = self.node_key if dialer else peer_key
        verdict = self._judge(peer_key, dialer_key)
        await _send_sealed(ws, sealer, encode(ChannelVerdict(int(verdict))))
        their_verdict = Verdict(
            decode(
                ChannelVerdict, await _receive_sealed(ws, assembler), max_bytes=HANDSHAKE_MESSAGE_BYTES_MAX
            ).verdict
        )
        if verdict is not Verdict.ACCEPTED:
            raise PeerRefusedError(
                f"refused peer {peer_key.hex()[:12]}: {_describe(verdict)}",
                peer_key=peer_key,
                verdict=verdict,
                by_peer=False,
            )
        if their_verdict is not Verdict.ACCEPTED:
            raise PeerRefusedError(
                f"peer {peer_key.hex()[:12]} refused this node: {_describe(their_verdict)}",
                peer_key=peer_key,
                verdict=their_verdict,
                by_peer=True,
            )
        assembler.message_bytes_max = FRAME_WIRE_BYTES_MAX  # authenticated: frames of any size
        return PeerLink(
            peer_key=peer_key,
            dialer_key=dialer_key,
            ws=ws,
            sealer=sealer,
            assembler=assembler,
            on_overflow=self._on_overflow,
        )

    def _judge(self, peer_key: bytes, dialer_key: bytes) -> Verdict:
        if peer_key == self.node_key:
            return Verdict.SELF
        if not self.is_allowed(peer_key):
            return Verdict.NOT_A_MEMBER
        if self.banned_for(peer_key) > 0:
            return Verdict.BANNED
        if self._loses_to_existing(peer_key, dialer_key):
            return Verdict.DUPLICATE
        return Verdict.ACCEPTED

    def _loses_to_existing(self, peer_key: bytes, dialer_key: bytes) -> bool:
        """Of two links between a pair, both keep the one dialled by the smaller node key."""
        existing = self.links.get(peer_key)
        if existing is None or existing.ws.closed:
            return False
        preferred_dialer = min(self.node_key, peer_key)
        return existing.dialer_key == preferred_dialer or dialer_key != preferred_dialer

    async def _run_link(
        self, ws: WebSocket, *, dialer: bool, transport: asyncio.BaseTransport | None = None
    ) -> bytes | None:
        """Run one connection: the handshake, then the link until it ends. Returns the peer's key
        if it became a link (`HandshakeError` if it did not, None if it lost a duplicate race)."""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                link = await self._handshake(ws, dialer=dialer)
        except (CodecError, ChannelError, TypeError, ValueError, TimeoutError) as exc:
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            raise HandshakeError(f"bad handshake: {type(exc).__name__}") from None
        except HandshakeError:
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            raise
        self.guard.authenticated(transport)
        if not self._register(link):
            await ws.close()
            return None
        writer = asyncio.create_task(self._write_loop(link), name=f"peer-writer {link.name}")
        try:
            if self.on_connect is not None:
                await self.on_connect(link)
            await self._read_loop(link)
        finally:
            if self.links.get(link.peer_key) is link:
                del self.links[link.peer_key]
            link.ended.set()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            await ws.close()
            log.info("peer %s disconnected", link.name)
        return link.peer_key

    def _register(self, link: PeerLink) -> bool:
        """Keep one link per peer (the rule of `_loses_to_existing`, again: both may have raced)."""
        existing = self.links.get(link.peer_key)
        if existing is not None and not existing.ws.closed:
            if self._loses_to_existing(link.peer_key, link.dialer_key):
                return False
            existing.ended.set()
            self._spawn(existing.ws.close(), f"close duplicate {existing.name}")
        self.links[link.peer_key] = link
        log.info(
            "peer %s connected (%s)", link.name, "outbound" if link.dialer_key == self.node_key else "inbound"
        )
        return True

    async def _write_loop(self, link: PeerLink) -> None:
        while True:
            frame = await link.next_frame()
            for chunk in link.sealer.iter_sealed(frame):
                await link.ws.send_bytes(chunk)
            link.sent(frame)

    async def _read_loop(self, link: PeerLink) -> None:
        async for message in link.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                # Closes, errors, missed pongs; or text, which no node sends and anyone on the
                # path could inject (websocket frames are not sealed): a disconnect, no blame.
                if message.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    self.disconnect(link, f"websocket {message.type.name.lower()}")
                return
            try:
                raw = link.assembler.open_chunk(message.data)
            except ChunkProtocolError as exc:
                self.drop(link, exc.message)
                return
            except ChannelError as exc:
                self.disconnect(link, exc.message)
                return
            if raw is None:
                continue
            try:
                frame = decode(Frame, raw, max_bytes=FRAME_WIRE_BYTES_MAX)
                await self.on_frame(link, frame.kind, frame.payload)
            except (CodecError, PeerError) as exc:
                self.drop(link, exc.message)
                return

    def _on_overflow(self, link: PeerLink) -> None:
        self.slow_peers += 1
        self.disconnect(
            link, f"reads too slowly ({link.queued_bytes} bytes queued for it, limit {SEND_QUEUE_BYTES_MAX})"
        )

    def disconnect(self, link: PeerLink, why: str) -> None:
        """End a link without blame (the peer may dial again at once)."""
        if link.ended.is_set():
            return
        self.disconnected_peers += 1
        log.info("disconnecting peer %s: %s", link.name, why)
        self._end(link, aiohttp.WSCloseCode.GOING_AWAY)

    def drop(self, link: PeerLink, why: str) -> None:
        """End the link of a peer that broke the protocol, and refuse it for `BAN_S`."""
        self.dropped_peers += 1
        self._banned_until[link.peer_key] = time.monotonic() + BAN_S
        log.warning("dropping peer %s for %.0f s: %s", link.name, BAN_S, why)
        self._end(link, aiohttp.WSCloseCode.POLICY_VIOLATION)

    def drop_peer(self, peer_key: bytes, why: str) -> None:
        """`drop` the link to `peer_key`, if there is one."""
        link = self.links.get(peer_key)
        if link is not None:
            self.drop(link, why)

    def _end(self, link: PeerLink, code: int) -> None:
        link.ended.set()
        if self.links.get(link.peer_key) is link:
            del self.links[link.peer_key]  # gone for every sender from now on, not at the close
        self._spawn(link.ws.close(code=code), f"close {link.name}")

    def banned_for(self, peer_key: bytes) -> float:
        """Seconds `peer_key` is still refused (0: not banned)."""
        until = self._banned_until.get(peer_key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._banned_until[peer_key]
            return 0.0
        return left


def _refused_key(exc: PeerRefusedError) -> bytes | None:
    return None if exc.verdict is not Verdict.DUPLICATE else exc.peer_key


def _describe(verdict: Verdict) -> str:
    return {
        Verdict.NOT_A_MEMBER: "not a member of this network",
        Verdict.BANNED: "broke the protocol recently (banned for a while)",
        Verdict.DUPLICATE: "the two are linked already",
        Verdict.SELF: "connected to itself",
        Verdict.ACCEPTED: "accepted",
    }[verdict]


async def _receive_binary(ws: WebSocket) -> bytes:
    message = await ws.receive()
    if message.type != aiohttp.WSMsgType.BINARY:
        raise HandshakeError(f"expected a binary handshake message, got {message.type.name.lower()}")
    data: bytes = message.data
    return data


async def _send_sealed(ws: WebSocket, sealer: ChunkSealer, message: bytes) -> None:
    for chunk in sealer.iter_sealed(message):
        await ws.send_bytes(chunk)


async def _receive_sealed(ws: WebSocket, assembler: ChunkAssembler) -> bytes:
    """One handshake message: a single chunk, within the handshake bound."""
    message = assembler.open_chunk(await _receive_binary(ws))
    if message is None:
        raise HandshakeError("a handshake message split over chunks")
    return message
