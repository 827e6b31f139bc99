"""Authenticated peer links over aiohttp websockets (see docs/adr/0004-peer-transport.md).

`PeerNetwork` keeps one link per peer node key: it dials the configured peer URLs (retrying with
capped exponential backoff) and accepts inbound links on the node's peer endpoint. Every link opens
with a mutual handshake (`messages.Hello` / `messages.Auth`) that proves each side's node key and
chain id; a peer whose key is not allowed, whose chain differs, or that fails the handshake is
refused. After the handshake, frames are decoded and passed to the owner's handler; a peer that
sends a frame that does not decode is dropped. Each link has a bounded send queue: a peer too slow
to drain it loses messages (consensus recovers them by timeouts and sync), never our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from aiohttp import web

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.crypto import Identity, verify_signature
from medledger.errors import MedledgerError
from medledger.network.messages import (
    FRAME_BYTES_MAX,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    Auth,
    Frame,
    FrameKind,
    Hello,
    compute_handshake_bytes,
)

log = logging.getLogger("medledger.network")

PEER_PATH: Final = "/p2p"
HANDSHAKE_TIMEOUT_S: Final = 5.0
SEND_QUEUE_FRAMES_MAX: Final = 4_096
DIAL_BACKOFF_S_MIN: Final = 0.1
DIAL_BACKOFF_S_MAX: Final = 5.0
HEARTBEAT_S: Final = 5.0
#: A peer dropped for breaking the protocol is refused (inbound and outbound) this long.
BAN_S: Final = 30.0


class PeerError(MedledgerError):
    code = "peer_error"


class HandshakeError(PeerError):
    code = "handshake_failed"


FrameHandler = Callable[["PeerLink", int, bytes], Awaitable[None]]
WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


@dataclasses.dataclass(slots=True)
class PeerLink:
    """An authenticated link to one peer node."""

    peer_key: bytes
    dialer_key: bytes
    ws: WebSocket
    queue: asyncio.Queue[bytes]
    dropped_frames: int = 0

    @property
    def name(self) -> str:
        return self.peer_key.hex()[:12]

    def send(self, kind: FrameKind, payload: bytes) -> bool:
        """Queue a frame; False (and counted) if the peer is too slow to keep up."""
        try:
            self.queue.put_nowait(encode(Frame(int(kind), payload)))
        except asyncio.QueueFull:
            self.dropped_frames += 1
            return False
        return True


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
        self.refused_handshakes = 0
        self.dropped_peers = 0
        #: Peers dropped for breaking the protocol → until when (monotonic) they are refused.
        self._banned_until: dict[bytes, float] = {}

    def is_closing(self) -> bool:
        return self._closing

    @property
    def node_key(self) -> bytes:
        return self.identity.public.sign_key

    # -- life cycle ------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PEER_PATH, self._accept)

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

    def _spawn(self, coro: Awaitable[object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ---------------------------------------------------------------------------------

    def broadcast(self, kind: FrameKind, payload: bytes, *, exclude: bytes | None = None) -> int:
        """Queue a frame for every connected peer (but `exclude`); returns how many took it."""
        frame = encode(Frame(int(kind), payload))
        sent = 0
        for key, link in self.links.items():
            if key == exclude:
                continue
            try:
                link.queue.put_nowait(frame)
                sent += 1
            except asyncio.QueueFull:
                link.dropped_frames += 1
        return sent

    def send(self, peer_key: bytes, kind: FrameKind, payload: bytes) -> bool:
        link = self.links.get(peer_key)
        return link is not None and link.send(kind, payload)

    # -- links -----------------------------------------------------------------------------------

    async def _dial_forever(self, url: str) -> None:
        backoff = DIAL_BACKOFF_S_MIN
        while not self._closing:
            assert self._session is not None
            try:
                async with self._session.ws_connect(
                    url.rstrip("/") + PEER_PATH, max_msg_size=FRAME_BYTES_MAX, heartbeat=HEARTBEAT_S
                ) as ws:
                    await self._run_link(ws, dialer=True)
                    backoff = DIAL_BACKOFF_S_MIN  # linked (not refused): reconnect promptly
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("peer %s unreachable: %s", url, exc)
            except HandshakeError as exc:
                self.refused_handshakes += 1
                log.warning("peer %s refused: %s", url, exc.message)
            if self.is_closing():
                break
            # Reconnect pacing: a timer, with capped exponential backoff.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, DIAL_BACKOFF_S_MAX)

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=FRAME_BYTES_MAX, heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        try:
            await self._run_link(ws, dialer=False)
        except HandshakeError as exc:
            self.refused_handshakes += 1
            log.warning("inbound peer refused: %s", exc.message)
        return ws

    async def _handshake(self, ws: WebSocket) -> Hello:
        mine = Hello(self.chain_id, self.node_key, secrets.token_bytes(NONCE_SIZE), PROTOCOL_VERSION)
        await ws.send_bytes(encode(Frame(FrameKind.HELLO, encode(mine))))
        theirs = decode(Hello, _expect(await ws.receive_bytes(), FrameKind.HELLO), max_bytes=1024)
        if theirs.chain_id != self.chain_id:
            raise HandshakeError(f"peer is on chain {theirs.chain_id!r}, this is {self.chain_id!r}")
        if theirs.version != PROTOCOL_VERSION:
            raise HandshakeError(f"peer speaks protocol {theirs.version}, this node {PROTOCOL_VERSION}")
        if theirs.node_key == self.node_key:
            raise HandshakeError("connected to itself")
        if not self.is_allowed(theirs.node_key):
            raise HandshakeError(f"node key {theirs.node_key.hex()[:12]}… is not a member of this network")
        if (banned := self.banned_for(theirs.node_key)) > 0:
            raise HandshakeError(
                f"peer {theirs.node_key.hex()[:12]} broke the protocol; refused for another {banned:.0f} s"
            )
        signature = self.identity.sign(compute_handshake_bytes(self.chain_id, mine, theirs))
        await ws.send_bytes(encode(Frame(FrameKind.AUTH, encode(Auth(signature)))))
        auth = decode(Auth, _expect(await ws.receive_bytes(), FrameKind.AUTH), max_bytes=1024)
        if not verify_signature(
            theirs.node_key, compute_handshake_bytes(self.chain_id, theirs, mine), auth.signature
        ):
            raise HandshakeError("the peer's handshake signature does not verify")
        return theirs

    async def _run_link(self, ws: WebSocket, *, dialer: bool) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                peer = await self._handshake(ws)
        except (CodecError, TypeError, TimeoutError) as exc:  # TypeError: a text or close frame
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            raise HandshakeError(f"bad handshake: {type(exc).__name__}") from None
        except HandshakeError:
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            raise
        link = PeerLink(
            peer_key=peer.node_key,
            dialer_key=self.node_key if dialer else peer.node_key,
            ws=ws,
            queue=asyncio.Queue(maxsize=SEND_QUEUE_FRAMES_MAX),
        )
        if not self._register(link):
            await ws.close()
            return
        writer = asyncio.create_task(self._write_loop(link), name=f"peer-writer {link.name}")
        try:
            if self.on_connect is not None:
                await self.on_connect(link)
            await self._read_loop(link)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if self.links.get(link.peer_key) is link:
                del self.links[link.peer_key]
            await ws.close()
            log.info("peer %s disconnected", link.name)

    def _register(self, link: PeerLink) -> bool:
        """Keep one link per peer: of two, the one dialled by the smaller node key (both sides agree)."""
        existing = self.links.get(link.peer_key)
        if existing is not None and not existing.ws.closed:
            preferred_dialer = min(self.node_key, link.peer_key)
            if existing.dialer_key == preferred_dialer or link.dialer_key != preferred_dialer:
                return False
            self._spawn(existing.ws.close(), f"close duplicate {existing.name}")
        self.links[link.peer_key] = link
        log.info(
            "peer %s connected (%s)", link.name, "outbound" if link.dialer_key == self.node_key else "inbound"
        )
        return True

    async def _write_loop(self, link: PeerLink) -> None:
        while True:
            frame = await link.queue.get()
            await link.ws.send_bytes(frame)

    async def _read_loop(self, link: PeerLink) -> None:
        async for message in link.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    return
                self.drop(link, f"unexpected {message.type.name} message")
                return
            try:
                frame = decode(Frame, message.data, max_bytes=FRAME_BYTES_MAX + 64)
                if frame.kind in (FrameKind.HELLO, FrameKind.AUTH):
                    raise PeerError("handshake frame after the handshake")
                await self.on_frame(link, frame.kind, frame.payload)
            except (CodecError, PeerError) as exc:
                self.drop(link, exc.message)
                return

    def drop(self, link: PeerLink, why: str) -> None:
        """Close the link of a peer that broke the protocol, and refuse it for `BAN_S`."""
        self.dropped_peers += 1
        self._banned_until[link.peer_key] = time.monotonic() + BAN_S
        log.warning("dropping peer %s for %.0f s: %s", link.name, BAN_S, why)
        if self.links.get(link.peer_key) is link:
            del self.links[link.peer_key]  # gone for every sender from now on, not at the close
        self._spawn(link.ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION), f"drop {link.name}")

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


def _expect(raw: bytes, kind: FrameKind) -> bytes:
    frame = decode(Frame, raw, max_bytes=4096)
    if frame.kind != kind:
        raise CodecError(f"expected a {kind.name} frame, got kind {frame.kind}")
    return frame.payload
