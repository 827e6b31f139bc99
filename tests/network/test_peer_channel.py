"""The secret channel's cryptography (network/channel.py), without sockets: what both sides agree
on, and what a relay, a replay or a reordering gets (issue 9 #4)."""

from __future__ import annotations

import pytest

from medledger.network.channel import (
    CHUNK_DATA_BYTES_MAX,
    PROTOCOL_VERSION,
    SEALED_CHUNK_BYTES_MAX,
    ChannelError,
    ChunkAssembler,
    ChunkProtocolError,
    ChunkSealer,
    EphemeralKeys,
    SessionSecrets,
    compute_auth_bytes,
    compute_session_secrets,
)

CHAIN = "channel-test"


def agree(
    dialer: EphemeralKeys, acceptor: EphemeralKeys, *, chain_id: str = CHAIN
) -> tuple[SessionSecrets, SessionSecrets]:
    d = compute_session_secrets(
        dialer, acceptor.public, is_dialer=True, version=PROTOCOL_VERSION, chain_id=chain_id
    )
    a = compute_session_secrets(
        acceptor, dialer.public, is_dialer=False, version=PROTOCOL_VERSION, chain_id=chain_id
    )
    return d, a


def test_both_sides_agree_on_two_directional_keys_and_one_challenge() -> None:
    d, a = agree(EphemeralKeys.generate(), EphemeralKeys.generate())
    assert d.send_key == a.receive_key
    assert d.receive_key == a.send_key
    assert d.send_key != d.receive_key
    assert d.challenge == a.challenge


def test_trust_4_a_relay_running_two_agreements_sees_two_challenges() -> None:
    """A relay that agrees with each side separately cannot move a signature from one to the
    other: the two challenges differ, and so do the keys it would need."""
    alice, bob, relay_a, relay_b = (EphemeralKeys.generate() for _ in range(4))
    alice_side, _ = agree(alice, relay_a)
    _, bob_side = agree(relay_b, bob)
    assert alice_side.challenge != bob_side.challenge
    # Splicing without agreeing (each side's hello handed to the other, both dialling):
    spliced_a = compute_session_secrets(
        alice, bob.public, is_dialer=True, version=PROTOCOL_VERSION, chain_id=CHAIN
    )
    spliced_b = compute_session_secrets(
        bob, alice.public, is_dialer=True, version=PROTOCOL_VERSION, chain_id=CHAIN
    )
    assert spliced_a.challenge != spliced_b.challenge
    assert spliced_a.send_key != spliced_b.receive_key


def test_the_chain_id_and_the_roles_are_bound_into_the_challenge() -> None:
    dialer, acceptor = EphemeralKeys.generate(), EphemeralKeys.generate()
    d, _ = agree(dialer, acceptor)
    other_chain, _ = agree(dialer, acceptor, chain_id="another-chain")
    assert d.challenge != other_chain.challenge
    assert d.send_key != other_chain.send_key
    assert compute_auth_bytes(d.challenge, signer_is_dialer=True) != compute_auth_bytes(
        d.challenge, signer_is_dialer=False
    )


@pytest.mark.parametrize("their_key", [bytes(32), b"\x01" + bytes(31), b"short"])
def test_invalid_ephemeral_keys_give_no_agreement(their_key: bytes) -> None:
    with pytest.raises(ChannelError):
        compute_session_secrets(
            EphemeralKeys.generate(), their_key, is_dialer=True, version=PROTOCOL_VERSION, chain_id=CHAIN
        )


def test_invalid_reflection_of_our_own_ephemeral_key() -> None:
    mine = EphemeralKeys.generate()
    with pytest.raises(ChannelError):
        compute_session_secrets(mine, mine.public, is_dialer=True, version=PROTOCOL_VERSION, chain_id=CHAIN)


def pair() -> tuple[ChunkSealer, ChunkAssembler]:
    d, a = agree(EphemeralKeys.generate(), EphemeralKeys.generate())
    return ChunkSealer(d.send_key), ChunkAssembler(a.receive_key, message_bytes_max=1 << 20)


def test_messages_round_trip_in_chunks_no_larger_than_the_websocket_bound() -> None:
    sealer, assembler = pair()
    for message in (b"", b"x", bytes(CHUNK_DATA_BYTES_MAX), bytes(range(256)) * 300):
        chunks = list(sealer.iter_sealed(message))
        assert all(len(chunk) <= SEALED_CHUNK_BYTES_MAX for chunk in chunks)
        opened = [assembler.open_chunk(chunk) for chunk in chunks]
        assert opened[:-1] == [None] * (len(chunks) - 1)
        assert opened[-1] == message


def test_invalid_replayed_reordered_or_damaged_chunks_do_not_open() -> None:
    sealer, assembler = pair()
    first, second = list(sealer.iter_sealed(b"one")), list(sealer.iter_sealed(b"two"))
    assert assembler.open_chunk(first[0]) == b"one"
    with pytest.raises(ChannelError):
        assembler.open_chunk(first[0])  # replayed: the counter moved on
    sealer2, assembler2 = pair()
    a, b = list(sealer2.iter_sealed(b"a")), list(sealer2.iter_sealed(b"b"))
    with pytest.raises(ChannelError):
        assembler2.open_chunk(b[0])  # reordered
    sealer3, assembler3 = pair()
    chunk = next(sealer3.iter_sealed(b"c"))
    with pytest.raises(ChannelError):
        assembler3.open_chunk(chunk[:-1] + bytes([chunk[-1] ^ 1]))
    del second, a


def test_invalid_message_over_the_bound_is_the_senders_fault() -> None:
    d, a = agree(EphemeralKeys.generate(), EphemeralKeys.generate())
    sealer, assembler = ChunkSealer(d.send_key), ChunkAssembler(a.receive_key, message_bytes_max=100)
    first = next(sealer.iter_sealed(bytes(CHUNK_DATA_BYTES_MAX * 2)))
    with pytest.raises(ChunkProtocolError):
        assembler.open_chunk(first)
    assert assembler.pending_bytes <= CHUNK_DATA_BYTES_MAX + 100
