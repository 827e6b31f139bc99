"""The secret peer channel's cryptography: key agreement, transcript, challenge and sealed chunks.

Modelled on CometBFT's SecretConnection (docs/adr/0006-peer-channel.md). Each side of a new link
makes an ephemeral X25519 key pair and sends its public half in the clear (with its protocol
version and chain id, for a readable refusal). From the two ephemeral keys both sides derive

* a **transcript** hash over the protocol version, the chain id and both ephemeral keys (the
  dialer's first: the roles are part of what is agreed);
* two **directional keys** (dialer → acceptor and acceptor → dialer): libsodium's `crypto_kx`
  session keys of the X25519 agreement (which refuses low-order points), each bound to the
  transcript by keyed BLAKE2b, so a different version, chain or key order gives different keys;
* a **challenge** only the two ends of this very agreement can compute.

Each side then signs the challenge (and its role) with its node key and sends the signature inside
the encrypted channel. A relay that runs its own agreement with each side sees two different
challenges: a signature it forwards verifies on neither, so it can neither pass as a node nor
splice two nodes' handshakes into a link it can read or write.

Every message after the two hellos is a sequence of **sealed chunks**, each one websocket message:
ChaCha20-Poly1305 (IETF) under the direction's key, nonce = that direction's chunk counter, so a
chunk cannot be dropped, replayed, reordered or moved to the other direction unnoticed. A chunk
carries at most `CHUNK_DATA_BYTES_MAX` bytes and a flag marking a message's last chunk: the
websocket layer never buffers more than one small chunk, and a large message is only ever
reassembled on an authenticated link (`ChunkAssembler`). Any chunk that fails to open ends the
link.

This module is pure (no I/O); `peers.py` runs it over aiohttp websockets.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Final

import nacl.bindings
import nacl.exceptions

from medledger.chain.codec import encode_primitive
from medledger.errors import MedledgerError

#: The peer protocol this node speaks (2: the secret channel; 1 was the unencrypted handshake).
PROTOCOL_VERSION: Final = 2
EPHEMERAL_KEY_SIZE: Final = nacl.bindings.crypto_kx_PUBLIC_KEY_BYTES
CHALLENGE_SIZE: Final = 32
CHANNEL_KEY_SIZE: Final = nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
TAG_SIZE: Final = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
NONCE_SIZE: Final = nacl.bindings.crypto_aead_chacha20poly1305_ietf_NPUBBYTES
#: Largest websocket message on a peer link, before and after authentication: one sealed chunk.
#: This is the whole pre-handshake budget of a connection (DESIGN.md §7: a few KB).
SEALED_CHUNK_BYTES_MAX: Final = 8 * 1024
#: Plain bytes one chunk carries (one byte of the chunk is its flags, `TAG_SIZE` the AEAD tag).
CHUNK_DATA_BYTES_MAX: Final = SEALED_CHUNK_BYTES_MAX - 1 - TAG_SIZE
#: A chunk counter never reaches this (2^64 chunks); the link would be closed first.
CHUNK_COUNTER_MAX: Final = 2**64 - 1

_FLAG_FINAL: Final = 0x01
_TRANSCRIPT_DOMAIN: Final = b"medledger/peer-channel/transcript/v2\x00"
_AUTH_DOMAIN: Final = b"medledger/peer-channel/auth/v2\x00"
_PERSON_DIALER_KEY: Final = b"ml-peer-d2a-key\x00"
_PERSON_ACCEPTOR_KEY: Final = b"ml-peer-a2d-key\x00"
_PERSON_CHALLENGE: Final = b"ml-peer-chal\x00\x00\x00\x00"
ROLE_DIALER: Final = b"\x00"
ROLE_ACCEPTOR: Final = b"\x01"


class ChannelError(MedledgerError):
    """A sealed chunk that does not open, or a key agreement that cannot be completed."""

    code = "peer_channel_error"


class ChunkProtocolError(ChannelError):
    """A chunk that opened (so its sender holds the key) but breaks the framing: unknown flags, or
    a message larger than the link allows at this point. Unlike a chunk that does not open, this
    is the peer's own doing."""

    code = "peer_chunk_invalid"


@dataclasses.dataclass(frozen=True, slots=True)
class EphemeralKeys:
    """One side's X25519 key pair for one link; never reused, never stored."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> EphemeralKeys:
        public, secret = nacl.bindings.crypto_kx_keypair()
        return cls(public, secret)

    def __repr__(self) -> str:
        return f"EphemeralKeys(public={self.public.hex()[:12]}…)"


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSecrets:
    """What the agreement yields for one side: its two directional keys and the challenge."""

    send_key: bytes
    receive_key: bytes
    challenge: bytes
    is_dialer: bool

    def __repr__(self) -> str:
        return f"SessionSecrets(dialer={self.is_dialer})"


def compute_transcript(*, version: int, chain_id: str, dialer_key: bytes, acceptor_key: bytes) -> bytes:
    """The hash both sides agree on before any secret is used: protocol, chain, roles, keys."""
    material = _TRANSCRIPT_DOMAIN + encode_primitive(
        {
            "acceptor_ephemeral": acceptor_key,
            "chain_id": chain_id,
            "dialer_ephemeral": dialer_key,
            "version": version,
        }
    )
    return hashlib.blake2b(material, digest_size=32).digest()


def compute_session_secrets(
    mine: EphemeralKeys, their_public: bytes, *, is_dialer: bool, version: int, chain_id: str
) -> SessionSecrets:
    """Agree on this link's keys and challenge (`ChannelError` for a key no agreement accepts)."""
    if len(their_public) != EPHEMERAL_KEY_SIZE or their_public == mine.public:
        raise ChannelError("the peer's ephemeral key is malformed or a reflection of ours")
    try:
        if is_dialer:
            receive, send = nacl.bindings.crypto_kx_client_session_keys(
                mine.public, mine.secret, their_public
            )
            dialer_key, acceptor_key = mine.public, their_public
        else:
            receive, send = nacl.bindings.crypto_kx_server_session_keys(
                mine.public, mine.secret, their_public
            )
            dialer_key, acceptor_key = their_public, mine.public
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError, TypeError):
        raise ChannelError("the peer's ephemeral key gives no shared secret (a low-order point)") from None
    transcript = compute_transcript(
        version=version, chain_id=chain_id, dialer_key=dialer_key, acceptor_key=acceptor_key
    )
    # crypto_kx: the client's tx is the server's rx. Name the keys by direction, then bind each
    # to the transcript, so both sides hold the same two keys and agree which is whose.
    dialer_to_acceptor, acceptor_to_dialer = (send, receive) if is_dialer else (receive, send)
    d2a = _bind(dialer_to_acceptor, transcript, _PERSON_DIALER_KEY)
    a2d = _bind(acceptor_to_dialer, transcript, _PERSON_ACCEPTOR_KEY)
    challenge = hashlib.blake2b(
        d2a + a2d, digest_size=CHALLENGE_SIZE, key=transcript, person=_PERSON_CHALLENGE
    ).digest()
    return SessionSecrets(
        send_key=d2a if is_dialer else a2d,
        receive_key=a2d if is_dialer else d2a,
        challenge=challenge,
        is_dialer=is_dialer,
    )


def _bind(key: bytes, transcript: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=CHANNEL_KEY_SIZE, key=transcript, person=person).digest()


def compute_auth_bytes(challenge: bytes, *, signer_is_dialer: bool) -> bytes:
    """What a side signs with its node key: the challenge and its role (so no signature can be
    reflected back to its signer as the other side's)."""
    return _AUTH_DOMAIN + (ROLE_DIALER if signer_is_dialer else ROLE_ACCEPTOR) + challenge


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(NONCE_SIZE, "little")


class ChunkSealer:
    """Seals one direction's messages into chunks; the counter is the nonce."""

    __slots__ = ("_counter", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0

    def iter_sealed(self, message: bytes) -> Iterator[bytes]:
        """`message` as sealed chunks, sealed one at a time as they are taken (so a large message
        is never held twice); an empty message is one empty final chunk."""
        view = memoryview(message)
        last = max(len(message) - 1, 0) // CHUNK_DATA_BYTES_MAX
        for index in range(last + 1):
            data = view[index * CHUNK_DATA_BYTES_MAX : (index + 1) * CHUNK_DATA_BYTES_MAX]
            flags = _FLAG_FINAL if index == last else 0
            yield self._seal(bytes([flags]) + data)

    def _seal(self, plain: bytes) -> bytes:
        if self._counter >= CHUNK_COUNTER_MAX:
            raise ChannelError("chunk counter exhausted: the link must be re-established")
        nonce = _nonce(self._counter)
        self._counter += 1
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plain, None, nonce, self._key)


class ChunkAssembler:
    """Opens one direction's chunks and reassembles messages of at most `message_bytes_max`."""

    __slots__ = ("_counter", "_key", "_parts", "_size", "message_bytes_max")

    def __init__(self, key: bytes, *, message_bytes_max: int) -> None:
        self._key = key
        self._counter = 0
        self._parts: list[bytes] = []
        self._size = 0
        #: Raised once the link is authenticated (until then a handshake message's bound).
        self.message_bytes_max = message_bytes_max

    @property
    def pending_bytes(self) -> int:
        return self._size

    def open_chunk(self, sealed: bytes) -> bytes | None:
        """The message `sealed` completes, or None if more chunks follow.

        Raises `ChannelError` for a chunk that does not open (forged, replayed, reordered,
        truncated: the link must end) and `ChunkProtocolError` for a chunk that opens but breaks
        the framing (unknown flags, a message over the bound).
        """
        if len(sealed) < TAG_SIZE + 1 or len(sealed) > SEALED_CHUNK_BYTES_MAX:
            raise ChannelError(f"a sealed chunk of {len(sealed)} bytes")
        if self._counter >= CHUNK_COUNTER_MAX:
            raise ChannelError("chunk counter exhausted")
        try:
            plain = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                sealed, None, _nonce(self._counter), self._key
            )
        except nacl.exceptions.CryptoError:
            raise ChannelError("a chunk failed authentication (forged, replayed or damaged)") from None
        self._counter += 1
        flags, data = plain[0], plain[1:]
        if flags & ~_FLAG_FINAL:
            raise ChunkProtocolError(f"unknown chunk flags {flags:#x}")
        self._size += len(data)
        if self._size > self.message_bytes_max:
            raise ChunkProtocolError(
                f"a message of more than {self.message_bytes_max} bytes (limit at this point of the link)"
            )
        if not flags & _FLAG_FINAL:
            self._parts.append(data)
            return None
        parts, self._parts, self._size = self._parts, [], 0
        parts.append(data)
        return b"".join(parts)
