"""Event numbers and MQTT topic tokens (ADR 0015): order, and who can name a patient's topic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.crypto import Identity
from medledger.health.event_topics import (
    compute_patient_password,
    compute_patient_subscription,
    compute_patient_topic_token,
    compute_shared_secret,
)
from medledger.health.events import EVENT_INDEX_MAX, TX_INDEX_MAX, compute_seq, get_seq_height
from medledger.health.types import compute_patient_id

positions = st.tuples(
    st.integers(0, 2**40 - 1), st.integers(0, TX_INDEX_MAX), st.integers(0, EVENT_INDEX_MAX)
)


@settings(max_examples=200)
@given(positions, positions)
def test_event_numbers_sort_in_chain_order(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    assert (compute_seq(*a) < compute_seq(*b)) == (a < b)
    assert get_seq_height(compute_seq(*a)) == a[0]


def test_invalid_event_positions_are_refused() -> None:
    for position in ((0, TX_INDEX_MAX + 1, 0), (0, 0, EVENT_INDEX_MAX + 1), (-1, 0, 0)):
        with pytest.raises(ValueError):
            compute_seq(*position)


@settings(max_examples=10, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_the_patient_and_the_node_derive_the_same_topic_and_nobody_else_does(chain_id: str) -> None:
    patient, node, other = Identity.generate(), Identity.generate(), Identity.generate()
    node_key = node.public
    user, password, topic = compute_patient_subscription(
        patient, chain_id, node_key.sign_key, node_key.enc_key
    )
    # The node computes the same from the patient's public key, as it publishes.
    secret = compute_shared_secret(node, patient.public.enc_key)
    token = compute_patient_topic_token(secret, chain_id, node_key.sign_key)
    assert topic.endswith("/pat/" + token.hex())
    assert user == "p-" + token.hex()[:32]
    assert password == compute_patient_password(secret, chain_id, node_key.sign_key)
    # Not the patient's id nor keys; another node's (or anyone else's) secret gives another topic.
    patient_id = compute_patient_id(patient.public.sign_key).hex()
    for public in (patient_id, patient.public.sign_key.hex(), patient.public.enc_key.hex()):
        assert public not in topic
        assert public not in user
    _, _, elsewhere = compute_patient_subscription(
        patient, chain_id, other.public.sign_key, other.public.enc_key
    )
    assert elsewhere != topic
    assert (
        compute_patient_topic_token(
            compute_shared_secret(other, patient.public.enc_key), chain_id, node_key.sign_key
        )
        != token
    )
