"""Shared builders for the health tests: a one-node in-memory ledger over `HealthApp`, parties, records.

`Ledger` drives the application exactly as the chain does: `check_tx` at admission, then one block
per tx through `apply_block`, with the block time from the header and the writes applied to a dict.
Every submission asserts the two invariants every rule owes: a tx refused at admission is refused
in its block (for the same rule, or an earlier rule on the block's time), and a refused tx changes
nothing (the full state is compared).

Identities are derived from names, times are fixed constants and nonces count up, so a failing
example replays exactly (only envelope nonces and salts are random, as on a real client).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from medledger.chain.errors import TxRejectedError
from medledger.chain.types import ZERO_HASH, Block, Genesis, Header, Tx, TxId, Validator, ValidatorSet
from medledger.chain.validation import compute_tx_root
from medledger.crypto import Identity, digest
from medledger.health.app import HealthApp, encode_genesis
from medledger.health.client import SignedTx
from medledger.health.events import LedgerEvent, compute_block_events
from medledger.health.types import (
    RESEARCH_K_MIN_DEFAULT,
    ROLE_CLINIC,
    ROLE_HOSPITAL,
    ROLE_INSURER,
    ROLE_RESEARCH,
    STATE_LAYOUT_LATEST,
    HealthGenesis,
    Institution,
)

CHAIN_ID = "medledger-health-test"
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 1_000
#: Rules that depend on the block time, which admission (`check_tx`) cannot apply.
TIME_RULES = frozenset({"health.expiry", "health.inquiry_expired", "health.grant_expired"})


def make_identity(name: str) -> Identity:
    """A deterministic identity for a named test party (never a real person)."""
    return Identity.from_secrets(digest(b"sign/" + name.encode()), digest(b"enc/" + name.encode()))


INSTITUTION_ROLES: dict[str, str] = {
    "clinic": ROLE_CLINIC,
    "hospital": ROLE_HOSPITAL,
    "insurer": ROLE_INSURER,
    "research": ROLE_RESEARCH,
}


def make_institution(name: str, role: str) -> Institution:
    identity = make_identity(name)
    return Institution(name, role, identity.public.sign_key, identity.public.enc_key)


class DictState:
    """The simplest `StateReader`: a dict of committed state."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedBlock:
    """What a node keeps of a block to derive its events: position, times, txs and their results."""

    height: int
    time_ms: int
    parent_time_ms: int
    txs: tuple[tuple[Tx, TxId, bool], ...]
    raws: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    rule: str
    message: str
    tx_id: bytes
    height: int
    time_ms: int


class Ledger:
    """One node's view of a health chain, in memory: genesis, then a block per submitted tx."""

    def __init__(
        self,
        institutions: dict[str, str] | None = None,
        *,
        layout: int = STATE_LAYOUT_LATEST,
        research_k_min: int = RESEARCH_K_MIN_DEFAULT,
        validator_count: int = 1,
    ) -> None:
        roles = INSTITUTION_ROLES if institutions is None else institutions
        self.state = DictState()
        self.institutions = {name: make_institution(name, role) for name, role in roles.items()}
        #: The validators' identities (the first is the proposer of every block).
        self.validator_identities = [
            make_identity("validator" if i == 0 else f"validator{i}") for i in range(validator_count)
        ]
        self.proposer = self.validator_identities[0].public.sign_key
        self.validators = ValidatorSet.of(
            [
                Validator(f"v{i}", v.public.sign_key, v.public.enc_key)
                for i, v in enumerate(self.validator_identities)
            ]
        )
        self.app = HealthApp(self.validators)
        genesis = Genesis(
            CHAIN_ID,
            GENESIS_TIME_MS,
            self.validators,
            encode_genesis(
                HealthGenesis(tuple(self.institutions.values()), layout), research_k_min=research_k_min
            ),
        )
        execution = self.app.init_state(genesis)
        self._write(execution.writes)
        self.state_root = execution.state_root
        self.height = 0
        #: The time of the last committed block (the genesis time before the first).
        self.time_ms = GENESIS_TIME_MS
        #: Every committed block: what `list_events` derives events from, as a node does.
        self.blocks: list[CommittedBlock] = []
        #: The time of the next block.
        self.next_time_ms = GENESIS_TIME_MS + BLOCK_INTERVAL_MS
        self._nonce = 0

    def _write(self, writes: Any) -> None:
        for key, value in writes.items():
            if value is None:
                self.state.data.pop(key, None)
            else:
                self.state.data[key] = value

    def nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    def sign(self, build: Callable[..., SignedTx], *args: Any, **kwargs: Any) -> SignedTx:
        """Call a `client.build_*` with this chain's id, a fresh nonce and the next block's time."""
        return build(*args, chain_id=CHAIN_ID, nonce=self.nonce(), timestamp_ms=self.next_time_ms, **kwargs)

    def advance(self, ms: int) -> None:
        self.next_time_ms += ms

    def submit(self, signed: SignedTx) -> Outcome:
        """Admit then commit `signed` alone in the next block; assert a refusal changes nothing."""
        tx, raw, tx_id = signed
        admission_rule: str | None = None
        try:
            self.app.check_tx(tx, tx_id, self.state)
        except TxRejectedError as exc:
            admission_rule = exc.rule
        before = dict(self.state.data)
        height = self.height + 1
        header = Header(
            chain_id=CHAIN_ID,
            height=height,
            round=0,
            parent_hash=ZERO_HASH,
            time_ms=self.next_time_ms,
            proposer=self.proposer,
            tx_count=1,
            tx_root=compute_tx_root((raw,)),
            state_root=self.state_root,
            validators_hash=self.validators.hash(),
            next_validators_hash=self.validators.hash(),
        )
        execution = self.app.apply_block(Block(header, (raw,)), (tx,), self.state, self.state_root)
        (result,) = execution.results
        self.blocks.append(
            CommittedBlock(height, self.next_time_ms, self.time_ms, ((tx, tx_id, result.ok),), (raw,))
        )
        if admission_rule is not None:
            assert not result.ok, f"admitted in a block after refusal at admission ({admission_rule})"
            # The same rule refuses it, unless a rule on the block's time fired first.
            assert result.code in {admission_rule, *TIME_RULES}, (admission_rule, result.code)
        if not result.ok:
            assert not execution.writes, f"a refused tx wrote state ({result.code})"
        self._write(execution.writes)
        if not result.ok:
            assert self.state.data == before
        self.height = height
        self.state_root = execution.state_root
        time_ms = self.next_time_ms
        self.time_ms = time_ms
        self.next_time_ms += BLOCK_INTERVAL_MS
        return Outcome(result.ok, result.code, result.message, tx_id, height, time_ms)

    def commit_empty(self) -> None:
        """Commit a block without txs at the next block time (time passes on the chain)."""
        height = self.height + 1
        header = Header(
            chain_id=CHAIN_ID,
            height=height,
            round=0,
            parent_hash=ZERO_HASH,
            time_ms=self.next_time_ms,
            proposer=self.proposer,
            tx_count=0,
            tx_root=compute_tx_root(()),
            state_root=self.state_root,
            validators_hash=self.validators.hash(),
            next_validators_hash=self.validators.hash(),
        )
        execution = self.app.apply_block(Block(header, ()), (), self.state, self.state_root)
        assert not execution.writes, "an empty block wrote state"
        self.blocks.append(CommittedBlock(height, self.next_time_ms, self.time_ms, (), ()))
        self.height = height
        self.state_root = execution.state_root
        self.time_ms = self.next_time_ms
        self.next_time_ms += BLOCK_INTERVAL_MS

    def list_events(self) -> list[LedgerEvent]:
        """Every event of every committed block, derived now (at the current height's state)."""
        events: list[LedgerEvent] = []
        for block in self.blocks:
            events.extend(
                compute_block_events(
                    self.state, block.height, block.time_ms, block.txs, parent_time_ms=block.parent_time_ms
                )
            )
        return events

    def submit_ok(self, signed: SignedTx) -> Outcome:
        outcome = self.submit(signed)
        assert outcome.ok, f"rejected by {outcome.rule}: {outcome.message}"
        return outcome

    def submit_rejected(self, signed: SignedTx, rule: str) -> Outcome:
        """The one helper of `test_invalid_*`: refused by `rule`, state unchanged (`submit` checks)."""
        before = dict(self.state.data)
        outcome = self.submit(signed)
        assert not outcome.ok, f"expected rejection by {rule}, was accepted"
        assert outcome.rule == rule, f"expected {rule}, got {outcome.rule}: {outcome.message}"
        assert self.state.data == before
        return outcome


# --- synthetic FHIR records (no real persons: invented ids, codes from public code systems) -------


def make_observation(value: float, *, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/synthetic-1"},
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def make_immunization(lot: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "Patient/synthetic-1"},
        "occurrenceDateTime": "2023-10-15",
        "lotNumber": lot,
    }


def make_condition(note: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}],
            "text": "Hypertension",
        },
        "subject": {"reference": "Patient/synthetic-1"},
        "note": [{"text": note}],
    }


RECORD_MAKERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "Observation": lambda n: make_observation(60 + n),
    "Immunization": lambda n: make_immunization(f"LOT-{n}"),
    "Condition": lambda n: make_condition(f"synthetic note {n}"),
}
