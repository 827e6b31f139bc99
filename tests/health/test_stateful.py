"""A stateful property test of the health rules against a model of who may do and read what.

Hypothesis drives random sequences of registrations, representatives, records, corrections,
inquiries, grants, denials, revocations, reads, time passing, and forged or unauthorised attempts,
as real signed txs through `HealthApp.check_tx` and `apply_block` (`health_testkit.Ledger`). The
model predicts for every tx whether it must be accepted; `Ledger.submit` asserts that every refusal
changes nothing. After every step the invariants are checked against the ledger's state:

* who can decrypt each record, by actually opening envelopes and grant-sealed keys as each party's
  client would with what the ledger state gives it, is exactly: the patient, the author, the holders
  of grants that covered the record when it was sealed, and the grantees it was re-sealed for;
  and no one the patient did not authorise (a revoked grantee gets nothing added after revocation);
* the plaintext each of them gets is the one the author wrote (its commitment verifies);
* every read performed has a read receipt in the patient's audit trail;
* inquiries, grants and representatives on the ledger are the model's.

Claims (issue 12) add standing consents, security labels and claims to the same machine:

* a record is sealed for nobody but the patient and its author unless a grant live at its block
  time covers it, and a labelled record only for a grant naming every one of its labels; so an
  insurer decrypts only records its live standing consent covered when they were written (never a
  labelled one unless the consent names the label), and after a revocation nothing new is sealed
  for it;
* only the addressed insurer decides a claim, once per claim version; only the filing clinic files
  for its own encounter or amends; claims and decisions on the ledger are the model's;
* every insurer read (for a claim or not) has a receipt, and a read for a claim names the claim;
* a consent's re-sealing of records already on the ledger (ADR 0017, amendment) is accepted only
  from its signer, once, while live, and each part only if every record in it is in the consent's
  scope and terms; what it re-sealed is exactly what the insurer can then decrypt (the first
  invariant counts it as a grant's keys);
* the other way round (ADR 0017, amendment 2): no record on the ledger lacks the insurer of a
  standing consent live and covering it (beyond the margin of its edges) at its block; a record
  sealed before such a consent committed is refused, and sealed again it is accepted.
"""

from __future__ import annotations

import contextlib
import dataclasses

from claims_testkit import make_encounter, seal_test_claim, seal_test_response
from health_testkit import BLOCK_INTERVAL_MS, CHAIN_ID, RECORD_MAKERS, Ledger, make_identity
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as stg
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from medledger.chain.txbuilder import sign_tx
from medledger.crypto import DecryptionError, Identity
from medledger.health import claims_client, client, policy
from medledger.health import state as st
from medledger.health.claim_seal import ClaimUnreadableError, open_claim, open_claim_response
from medledger.health.claims_types import CLAIM_OPEN, CLAIM_VERSIONS_MAX, OUTCOME_APPROVED, OUTCOMES
from medledger.health.membership_types import (
    KIND_INSTITUTION_ADD,
    KIND_INSTITUTION_REINSTATE,
    KIND_INSTITUTION_REMOVE,
    KIND_INSTITUTION_SUSPEND,
)
from medledger.health.records import (
    encrypt_record,
    open_record,
    reseal_record_keys,
)
from medledger.health.types import (
    EVENT_CLAIM_READ,
    EVENT_READ,
    INQUIRY_DENIED,
    INQUIRY_GRANTED,
    INQUIRY_OPEN,
    INQUIRY_TTL_MS_MAX,
    PURPOSES,
    PURPOSES_BY_ROLE,
    TX_KINDS,
    GrantState,
    Institution,
    RecordState,
    Scope,
    compute_patient_id,
    is_covered,
)

INSTITUTIONS = ("clinic", "hospital", "insurer", "research", "insurer-2")
PATIENTS = ("patient-0", "patient-1")
REPRESENTATIVES = ("rep-0", "rep-1")
STRANGER = "stranger"
PARTIES = (*INSTITUTIONS, *PATIENTS, *REPRESENTATIVES, STRANGER)
IDENTITIES: dict[str, Identity] = {name: make_identity(name) for name in PARTIES}
ROLES = {
    "clinic": "clinic",
    "hospital": "hospital",
    "insurer": "insurer",
    "research": "research",
    "insurer-2": "insurer",
}
AUTHORS = frozenset({"clinic", "hospital"})
INSURERS = frozenset({"insurer", "insurer-2"})
MAKERS = {**RECORD_MAKERS, "Encounter": make_encounter}
RECORD_TYPES = tuple(sorted(MAKERS))
#: Label sets a record may carry (most carry none).
LABEL_SETS: tuple[tuple[str, ...], ...] = ((), (), (), ("HIV",), ("PSY", "R"), ("SUD",))
#: Label sets a standing consent may name.
CONSENT_LABEL_SETS: tuple[tuple[str, ...], ...] = ((), (), ("HIV",), ("PSY", "R", "SUD"))
MAX_RECORDS = 12


def pid(name: str) -> bytes:
    return compute_patient_id(IDENTITIES[name].public.sign_key)


def enc(name: str) -> bytes:
    return IDENTITIES[name].public.enc_key


@dataclasses.dataclass
class MRecord:
    record_id: bytes
    patient: str
    author: str
    record_type: str
    time_ms: int
    plaintext: bytes
    #: Parties the author's client sealed the content key for.
    readers: set[str]
    superseded: bool = False
    labels: tuple[str, ...] = ()
    #: The correction that superseded it (b"": none).
    superseded_by: bytes = b""


@dataclasses.dataclass
class MInquiry:
    inquiry_id: bytes
    patient: str
    requester: str
    scope: Scope
    expires_ms: int
    status: str = INQUIRY_OPEN


@dataclasses.dataclass
class MGrant:
    grant_id: bytes
    patient: str
    grantee: str
    scope: Scope
    expires_ms: int
    record_ids: set[bytes]
    revoked: bool = False
    #: A standing consent's authors and labels (None: a grant answering an inquiry).
    authors: frozenset[str] | None = None
    labels: frozenset[str] = frozenset()
    #: The block time of the revocation (None: not revoked).
    revoked_ms: int | None = None
    #: Who signed it (a standing consent: its re-sealing manifest must be theirs), and whether a
    #: consent's manifest of records already on the ledger was accepted (once).
    granted_by: str = ""
    manifested: bool = False
    #: The block time of the grant (a standing consent's: from then on records need its insurer).
    granted_ms: int = 0


@dataclasses.dataclass
class MClaim:
    claim_id: bytes
    patient: str
    clinic: str
    insurer: str
    encounter_id: bytes
    record_ids: tuple[bytes, ...]
    version: int = 1
    status: str = CLAIM_OPEN
    decided_version: int = 0


class HealthMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(ROLES)
        self.registered: set[str] = set()
        self.reps: dict[str, set[str]] = {p: set() for p in PATIENTS}
        self.records: dict[bytes, MRecord] = {}
        self.inquiries: list[MInquiry] = []
        self.grants: list[MGrant] = []
        #: (grant id, record ids) of every read an institution performed.
        self.reads: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.claims: list[MClaim] = []
        #: (claim id, record ids) of every read an insurer performed for a claim.
        self.claim_reads: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.counter = 0

    # --- helpers --------------------------------------------------------------------------------

    def submit(self, signed: client.SignedTx, expect_ok: bool, why: str) -> bytes | None:
        outcome = self.ledger.submit(signed)
        event(f"{why}: {'accepted' if outcome.ok else outcome.rule}")
        assert outcome.ok == expect_ok, (
            f"{why}: expected ok={expect_ok}, got {outcome.rule}: {outcome.message}"
        )
        return outcome.tx_id if outcome.ok else None

    def is_live(self, grant: MGrant, time_ms: int) -> bool:
        return not grant.revoked and time_ms < grant.expires_ms

    def acts_for(self, signer: str, patient: str) -> bool:
        return signer == patient or signer in self.reps[patient]

    def terms_cover(self, grant: MGrant, author: str, labels: tuple[str, ...]) -> bool:
        """A standing consent covers the author and every label; another grant no label."""
        if grant.authors is None:
            return not labels
        return author in grant.authors and set(labels) <= grant.labels

    def current_labels(self, record: MRecord) -> tuple[str, ...]:
        """The labels of the record's latest version (a correction keeps every earlier label)."""
        while record.superseded_by:
            record = self.records[record.superseded_by]
        return record.labels

    def sealable_readers(
        self, patient: str, author: str, record_type: str, time_ms: int, labels: tuple[str, ...] = ()
    ) -> set[str]:
        """What an honest author's client seals for: patient, author, live covering grantees."""
        readers = {patient, author}
        for g in self.grants:
            if (
                g.patient == patient
                and self.is_live(g, time_ms)
                and is_covered(g.scope, b"", record_type, time_ms)
                and self.terms_cover(g, author, labels)
            ):
                readers.add(g.grantee)
        return readers

    def requires(
        self, g: MGrant, patient: str, author: str, record_type: str, time_ms: int, labels: tuple[str, ...]
    ) -> bool:
        """Whether a record's block must seal it for `g`'s grantee (ADR 0017, amendment 2): a
        standing consent of the patient, live and covering throughout the rules' margin around the
        record's block time (inside the margin of an edge, sealing is allowed, not required)."""
        margin = policy.CONSENT_SEAL_MARGIN_MS
        return (
            g.authors is not None
            and g.patient == patient
            and g.granted_ms < time_ms
            and not g.revoked
            and time_ms + margin < g.expires_ms
            and is_covered(g.scope, b"", record_type, time_ms - margin)
            and is_covered(g.scope, b"", record_type, time_ms + margin)
            and self.terms_cover(g, author, labels)
        )

    def required_readers(
        self, patient: str, author: str, record_type: str, time_ms: int, labels: tuple[str, ...]
    ) -> set[str]:
        return {
            g.grantee for g in self.grants if self.requires(g, patient, author, record_type, time_ms, labels)
        }

    def coverable(self, grant: MGrant, record: MRecord) -> bool:
        if record.patient != grant.patient:
            return False
        if record.record_id in grant.record_ids:
            return True
        return (
            grant.grantee in record.readers
            and is_covered(grant.scope, record.record_id, record.record_type, record.time_ms)
            and self.terms_cover(grant, record.author, record.labels)
        )

    # --- patients and representatives -----------------------------------------------------------

    @initialize()
    def register_first_patient(self) -> None:
        # Most interesting sequences need a registered patient; the rule below covers the rest.
        self.register_patient(PATIENTS[0])

    @rule(patient=stg.sampled_from(PATIENTS))
    def register_patient(self, patient: str) -> None:
        signed = self.ledger.sign(client.build_register_patient, IDENTITIES[patient])
        if self.submit(signed, patient not in self.registered, "register patient"):
            self.registered.add(patient)

    @rule(name=stg.sampled_from((*INSTITUTIONS, *REPRESENTATIVES, STRANGER)))
    def register_non_patient(self, name: str) -> None:
        # Institutions may not double as patients; others may register (but we keep them apart).
        if name in INSTITUTIONS:
            self.submit(
                self.ledger.sign(client.build_register_patient, IDENTITIES[name]), False, "institution"
            )

    @rule(
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        rep=stg.sampled_from((*REPRESENTATIVES, *REPRESENTATIVES, *PATIENTS)),
        signer=stg.sampled_from(("patient", "patient", "patient", *PATIENTS, *REPRESENTATIVES, STRANGER)),
        add=stg.booleans(),
    )
    def change_representative(self, patient: str, rep: str, signer: str, add: bool) -> None:
        signer = patient if signer == "patient" else signer
        build = client.build_add_representative if add else client.build_remove_representative
        signed = self.ledger.sign(build, IDENTITIES[signer], pid(patient), IDENTITIES[rep].public.sign_key)
        ok = patient in self.registered and signer == patient and rep != patient
        ok = ok and ((rep not in self.reps[patient]) if add else (rep in self.reps[patient]))
        if self.submit(signed, ok, "representative change"):
            (self.reps[patient].add if add else self.reps[patient].discard)(rep)

    # --- records --------------------------------------------------------------------------------

    @rule(
        author=stg.sampled_from(
            ("clinic", "hospital", "clinic", "hospital", "insurer", STRANGER, PATIENTS[0])
        ),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        record_type=stg.sampled_from(RECORD_TYPES),
        leak=stg.one_of(
            stg.none(), stg.none(), stg.sampled_from((*INSTITUTIONS, STRANGER, *REPRESENTATIVES))
        ),
        drop_patient=stg.sampled_from((False, False, False, True)),
        drop_consents=stg.sampled_from((False, False, False, True)),
        supersede=stg.booleans(),
        labels=stg.sampled_from(LABEL_SETS),
        data=stg.data(),
    )
    def add_record(
        self,
        author: str,
        patient: str,
        record_type: str,
        leak: str | None,
        drop_patient: bool,
        drop_consents: bool,
        supersede: bool,
        labels: tuple[str, ...],
        data: stg.DataObject,
    ) -> None:
        if len(self.records) >= MAX_RECORDS:
            return
        time_ms = self.ledger.next_time_ms
        self.counter += 1
        target: MRecord | None = None
        if supersede and self.records:
            target = data.draw(stg.sampled_from(list(self.records.values())))
        # A correction keeps every label of the record it corrects (the rules add them).
        effective = tuple(sorted(set(labels) | set(target.labels if target is not None else ())))
        sealable = self.sealable_readers(patient, author, record_type, time_ms, effective)
        readers = set(sealable)
        # A node that sealed before a consent committed: its insurers left out. Refused if the
        # consent is required at this block (covering beyond the margin), allowed otherwise.
        if drop_consents:
            readers -= {g.grantee for g in self.grants if g.authors is not None} - {patient, author}
        # A leak seals for someone without a live covering grant (e.g. a revoked grantee).
        leaked = leak is not None and leak not in sealable
        if leak is not None:
            readers = readers | {leak}
        if drop_patient and author != patient:
            readers = readers - {patient}
        required = self.required_readers(patient, author, record_type, time_ms, effective)
        encrypted = encrypt_record(
            MAKERS[record_type](self.counter),
            patient_id=pid(patient),
            author=IDENTITIES[author].public.sign_key,
            readers=[enc(r) for r in readers],
            supersedes=target.record_id if target is not None else b"",
        )
        ok = (
            author in AUTHORS
            and patient in self.registered
            and not leaked
            and patient in readers
            and author in readers
            and required <= readers
        )
        if labels:
            if target is not None:
                ok = ok and target.author == author and target.patient == patient and not target.superseded
            signed = self.ledger.sign(
                claims_client.build_add_labelled_record,
                IDENTITIES[author],
                pid(patient),
                encrypted,
                labels,
            )
        elif target is not None:
            ok = ok and target.author == author and target.patient == patient and not target.superseded
            signed = self.ledger.sign(
                client.build_supersede_record, IDENTITIES[author], pid(patient), target.record_id, encrypted
            )
        else:
            signed = self.ledger.sign(client.build_add_record, IDENTITIES[author], pid(patient), encrypted)
        record_id = self.submit(signed, ok, "add record")
        if record_id is not None:
            stored = st.get_record(self.ledger.state, record_id)
            assert stored is not None
            assert stored.time_ms == time_ms
            plaintext = open_record(stored, IDENTITIES[patient]).canonical_json
            self.records[record_id] = MRecord(
                record_id, patient, author, record_type, time_ms, plaintext, readers, labels=effective
            )
            assert st.get_record_labels(self.ledger.state, record_id) == effective
            if target is not None:
                target.superseded = True
                target.superseded_by = record_id

    # --- inquiries and decisions ----------------------------------------------------------------

    @rule(
        requester=stg.sampled_from((*INSTITUTIONS, *INSTITUTIONS, STRANGER)),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        scope_kind=stg.sampled_from(("all", "types", "ids", "past")),
        purpose=stg.sampled_from(sorted(PURPOSES)),
        honest_purpose=stg.sampled_from((True, True, True, False)),
        ttl_ms=stg.sampled_from((3_600_000, 3_600_000, 3_600_000, 5_000, -1, INQUIRY_TTL_MS_MAX + 1)),
        data=stg.data(),
    )
    def request_access(
        self,
        requester: str,
        patient: str,
        scope_kind: str,
        purpose: str,
        honest_purpose: bool,
        ttl_ms: int,
        data: stg.DataObject,
    ) -> None:
        time_ms = self.ledger.next_time_ms
        if honest_purpose and requester in ROLES:
            purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        if scope_kind == "types":
            scope = client.make_scope(
                record_types=data.draw(stg.sets(stg.sampled_from(RECORD_TYPES), min_size=1))
            )
        elif scope_kind == "ids":
            ids = [r.record_id for r in self.records.values() if r.patient == patient]
            chosen = data.draw(stg.sets(stg.sampled_from(ids), min_size=1)) if ids else {bytes(32)}
            scope = client.make_scope(record_ids=chosen)
        elif scope_kind == "past":
            scope = client.make_scope(to_ms=time_ms - 1)
        else:
            scope = client.make_scope()
        expires_ms = time_ms + ttl_ms
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            expires_ms,
            "synthetic",
            patient_enc_key=enc(patient),
        )
        ok = (
            requester in ROLES
            and patient in self.registered
            and purpose in PURPOSES_BY_ROLE[ROLES[requester]]
            and 0 < ttl_ms <= INQUIRY_TTL_MS_MAX
        )
        inquiry_id = self.submit(signed, ok, "request access")
        if inquiry_id is not None:
            self.inquiries.append(MInquiry(inquiry_id, patient, requester, scope, expires_ms))

    @rule(
        who=stg.sampled_from(
            ("patient", "patient", "patient", *REPRESENTATIVES, STRANGER, "clinic", PATIENTS[1])
        ),
        grant=stg.sampled_from((True, True, False)),
        outside=stg.sampled_from((False, False, True)),
        data=stg.data(),
    )
    def decide(self, who: str, grant: bool, outside: bool, data: stg.DataObject) -> None:
        if not self.inquiries:
            return
        inquiry = data.draw(stg.sampled_from(self.inquiries))
        signer = inquiry.patient if who == "patient" else who
        time_ms = self.ledger.next_time_ms
        ok = (
            inquiry.status == INQUIRY_OPEN
            and time_ms < inquiry.expires_ms
            and self.acts_for(signer, inquiry.patient)
        )
        if not grant:
            signed = self.ledger.sign(client.build_deny, IDENTITIES[signer], inquiry.inquiry_id)
            if self.submit(signed, ok, "deny"):
                inquiry.status = INQUIRY_DENIED
            return
        # Draws index lists in insertion order, never in (random) id order, so examples replay.
        own = [r for r in self.records.values() if r.patient == inquiry.patient]
        covered = [r for r in own if is_covered(inquiry.scope, r.record_id, r.record_type, r.time_ms)]
        uncovered = [r for r in own if r not in covered]
        chosen: list[MRecord] = []
        # Only the patient's client holds reader keys to re-seal; a representative's grant (and a
        # stranger's attempt) carries none and covers only records sealed for the grantee later.
        if signer == inquiry.patient:
            if covered:
                chosen = data.draw(stg.lists(stg.sampled_from(covered), unique_by=lambda r: r.record_id))
            if outside and uncovered:
                chosen.append(data.draw(stg.sampled_from(uncovered)))
                ok = False
        stored = [st.get_record(self.ledger.state, r.record_id) for r in chosen]
        keys = reseal_record_keys(
            [r for r in stored if r is not None], IDENTITIES[signer], enc(inquiry.requester)
        )
        signed = self.ledger.sign(client.build_grant, IDENTITIES[signer], inquiry.inquiry_id, keys)
        grant_id = self.submit(signed, ok, "grant")
        if grant_id is not None:
            inquiry.status = INQUIRY_GRANTED
            self.grants.append(
                MGrant(
                    grant_id,
                    inquiry.patient,
                    inquiry.requester,
                    inquiry.scope,
                    inquiry.expires_ms,
                    {k.record_id for k in keys},
                )
            )

    @rule(
        who=stg.sampled_from(("patient", "patient", *REPRESENTATIVES, STRANGER, "hospital")), data=stg.data()
    )
    def revoke(self, who: str, data: stg.DataObject) -> None:
        if not self.grants:
            return
        grant = data.draw(stg.sampled_from(self.grants))
        signer = grant.patient if who == "patient" else who
        ok = not grant.revoked and self.acts_for(signer, grant.patient)
        revoked_ms = self.ledger.next_time_ms
        if self.submit(
            self.ledger.sign(client.build_revoke, IDENTITIES[signer], grant.grant_id), ok, "revoke"
        ):
            grant.revoked = True
            grant.revoked_ms = revoked_ms

    # --- reads ----------------------------------------------------------------------------------

    @rule(
        who=stg.sampled_from(("grantee", "grantee", "grantee", *INSTITUTIONS, STRANGER)),
        stray=stg.sampled_from((False, False, True)),
        data=stg.data(),
    )
    def read(self, who: str, stray: bool, data: stg.DataObject) -> None:
        """An institution's node reads under a grant: it must file a receipt first, and only then decrypt."""
        if not self.grants:
            return
        grant = data.draw(stg.sampled_from(self.grants))
        reader = grant.grantee if who == "grantee" else who
        coverable = [r.record_id for r in self.records.values() if self.coverable(grant, r)]
        others = [r for r in self.records if r not in coverable]
        chosen = set(data.draw(stg.lists(stg.sampled_from(coverable), max_size=3))) if coverable else set()
        if stray and others:
            chosen.add(data.draw(stg.sampled_from(others)))
        ok = (
            reader == grant.grantee
            and self.is_live(grant, self.ledger.next_time_ms)
            and bool(chosen)
            and all(r in coverable for r in chosen)
        )
        signed = self.ledger.sign(client.build_read_receipt, IDENTITIES[reader], grant.grant_id, chosen)
        if self.submit(signed, ok, "read receipt") is None:
            return
        stored_grant = st.get_grant(self.ledger.state, grant.grant_id)
        assert stored_grant is not None
        for record_id in sorted(chosen):
            record = st.get_record(self.ledger.state, record_id)
            assert record is not None
            sealed = policy.get_grant_sealed_key(self.ledger.state, stored_grant, record_id)
            opened = open_record(record, IDENTITIES[reader], grant=stored_grant, sealed_key=sealed)
            assert opened.canonical_json == self.records[record_id].plaintext
        self.reads.append((grant.grant_id, tuple(sorted(chosen))))

    @rule(
        requester=stg.sampled_from(("hospital", "clinic", "research", "insurer")),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        types=stg.sets(stg.sampled_from(RECORD_TYPES), max_size=2),
    )
    def share_and_read(self, requester: str, patient: str, types: set[str]) -> None:
        """The honest path in one step: inquiry, the patient's grant of every covered record, a read."""
        if patient not in self.registered:
            return
        time_ms = self.ledger.next_time_ms
        scope = client.make_scope(record_types=types)
        purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            time_ms + 3_600_000,
            "x",
            patient_enc_key=enc(patient),
        )
        inquiry_id = self.submit(signed, True, "share: request")
        assert inquiry_id is not None
        inquiry = MInquiry(inquiry_id, patient, requester, scope, time_ms + 3_600_000)
        self.inquiries.append(inquiry)
        covered = [
            st.get_record(self.ledger.state, r.record_id)
            for r in self.records.values()
            if r.patient == patient and is_covered(scope, r.record_id, r.record_type, r.time_ms)
        ]
        keys = reseal_record_keys([r for r in covered if r is not None], IDENTITIES[patient], enc(requester))
        grant_id = self.submit(
            self.ledger.sign(client.build_grant, IDENTITIES[patient], inquiry_id, keys), True, "share: grant"
        )
        assert grant_id is not None
        inquiry.status = INQUIRY_GRANTED
        grant = MGrant(grant_id, patient, requester, scope, inquiry.expires_ms, {k.record_id for k in keys})
        self.grants.append(grant)
        if not keys:
            return
        record_ids = tuple(k.record_id for k in keys)
        signed = self.ledger.sign(client.build_read_receipt, IDENTITIES[requester], grant_id, record_ids)
        self.submit(signed, True, "share: read receipt")
        stored_grant = st.get_grant(self.ledger.state, grant_id)
        assert stored_grant is not None
        for record_id in record_ids:
            record = st.get_record(self.ledger.state, record_id)
            assert record is not None
            opened = open_record(record, IDENTITIES[requester], grant=stored_grant)
            assert opened.canonical_json == self.records[record_id].plaintext
        self.reads.append((grant_id, record_ids))

    @rule(
        requester=stg.sampled_from(("hospital", "clinic", "research", "insurer")),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        types=stg.sets(stg.sampled_from(RECORD_TYPES), max_size=2),
        deliver=stg.sampled_from(("all", "all", "some", "none")),
    )
    def share_in_parts(self, requester: str, patient: str, types: set[str], deliver: str) -> None:
        """A grant in parts (ADR 0012): the manifest, then its parts (all, some or none of them),
        each key delivered by a part opening its record for the grantee, and nothing else."""
        if patient not in self.registered:
            return
        time_ms = self.ledger.next_time_ms
        scope = client.make_scope(record_types=types)
        purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            time_ms + 3_600_000,
            "x",
            patient_enc_key=enc(patient),
        )
        inquiry_id = self.submit(signed, True, "parts: request")
        assert inquiry_id is not None
        inquiry = MInquiry(inquiry_id, patient, requester, scope, time_ms + 3_600_000, INQUIRY_GRANTED)
        self.inquiries.append(inquiry)
        covered = [
            st.get_record(self.ledger.state, r.record_id)
            for r in self.records.values()
            if r.patient == patient and is_covered(scope, r.record_id, r.record_type, r.time_ms)
        ]
        keys = reseal_record_keys([r for r in covered if r is not None], IDENTITIES[patient], enc(requester))
        manifest = client.compute_grant_manifest(inquiry_id, keys)
        grant_id = self.submit(
            self.ledger.sign(client.build_grant_manifest, IDENTITIES[patient], manifest),
            True,
            "parts: manifest",
        )
        assert grant_id is not None
        grant = MGrant(grant_id, patient, requester, scope, inquiry.expires_ms, set())
        self.grants.append(grant)
        parts = client.split_grant_parts(keys)
        for index, part in enumerate(parts):
            if deliver == "none" or (deliver == "some" and index % 2):
                continue
            signed = self.ledger.sign(client.build_grant_part, IDENTITIES[patient], grant_id, index, part)
            self.submit(signed, True, "parts: part")
            grant.record_ids |= {k.record_id for k in part}
            # A part again, or by the requester, is refused.
            again = self.ledger.sign(client.build_grant_part, IDENTITIES[requester], grant_id, index, part)
            self.submit(again, False, "parts: forged part")

    # --- standing consents and claims (issue 12) -------------------------------------------------

    @rule(
        who=stg.sampled_from(("patient", "patient", "patient", *REPRESENTATIVES, STRANGER, "clinic")),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        grantee=stg.sampled_from(("insurer", "insurer", "insurer-2", "research", "clinic")),
        types=stg.sets(stg.sampled_from(RECORD_TYPES), max_size=3),
        authors=stg.sets(stg.sampled_from(("clinic", "clinic", "hospital", "insurer")), max_size=2),
        labels=stg.sampled_from(CONSENT_LABEL_SETS),
        window=stg.sampled_from(("future", "open", "open", "past", "inverted")),
        ttl_ms=stg.sampled_from((3_600_000, 3_600_000, 5_000, -1, INQUIRY_TTL_MS_MAX + 1)),
    )
    def grant_consent(
        self,
        who: str,
        patient: str,
        grantee: str,
        types: set[str],
        authors: set[str],
        labels: tuple[str, ...],
        window: str,
        ttl_ms: int,
    ) -> None:
        signer = patient if who == "patient" else who
        time_ms = self.ledger.next_time_ms
        from_ms, to_ms = {
            "future": (time_ms, time_ms + 7_200_000),
            # Opened before the consent: a record right after it is required to reach the insurer.
            "open": (time_ms - 3_600_000, time_ms + 7_200_000),
            "past": (0, time_ms - 1),
            "inverted": (time_ms + 10, time_ms),
        }[window]
        consent = claims_client.make_consent(
            pid(patient),
            IDENTITIES[grantee].public.sign_key,
            record_types=types,
            authors=[IDENTITIES[a].public.sign_key for a in authors],
            labels=labels,
            from_ms=from_ms,
            to_ms=to_ms,
            expires_ms=time_ms + ttl_ms,
        )
        ok = (
            patient in self.registered
            and self.acts_for(signer, patient)
            and grantee in INSURERS
            and bool(types)
            and bool(authors)
            and authors <= AUTHORS
            and window != "inverted"
            and 0 < ttl_ms <= INQUIRY_TTL_MS_MAX
        )
        grant_id = self.submit(
            self.ledger.sign(claims_client.build_grant_consent, IDENTITIES[signer], consent), ok, "consent"
        )
        if grant_id is not None:
            self.grants.append(
                MGrant(
                    grant_id,
                    patient,
                    grantee,
                    client.make_scope(record_types=types, from_ms=from_ms, to_ms=to_ms),
                    time_ms + ttl_ms,
                    set(),
                    authors=frozenset(authors),
                    labels=frozenset(labels),
                    granted_by=signer,
                    granted_ms=time_ms,
                )
            )

    @rule(
        who=stg.sampled_from(("signer", "signer", "signer", STRANGER, "insurer")),
        data=stg.data(),
    )
    def reseal_for_consent(self, who: str, data: stg.DataObject) -> None:
        """A consent's re-sealing of records already on the ledger (ADR 0017, amendment): a manifest
        of some of the patient's records (covered by the consent or not), then one part a slice;
        a part is accepted only if every record in it is in the consent's scope and terms (the
        labels of its latest version)."""
        consents = [g for g in self.grants if g.authors is not None]
        if not consents:
            return
        grant = data.draw(stg.sampled_from(consents))
        # Insertion order, never (random) id order: a draw by index must pick the same record when
        # hypothesis replays the example (the builder sorts the keys itself).
        mine = [r for r in self.records.values() if r.patient == grant.patient]
        if not mine:
            return
        chosen = data.draw(
            stg.lists(stg.sampled_from(mine), min_size=1, max_size=4, unique_by=lambda r: r.record_id)
        )
        stored = [st.get_record(self.ledger.state, r.record_id) for r in chosen]
        keys = reseal_record_keys(
            [r for r in stored if r is not None], IDENTITIES[grant.patient], enc(grant.grantee)
        )
        signer = grant.granted_by if who == "signer" else who
        manifest, _ = claims_client.build_consent_in_parts(
            IDENTITIES[signer],
            grant.grant_id,
            keys,
            chain_id=CHAIN_ID,
            nonce=self.ledger.nonce(),
            timestamp_ms=self.ledger.next_time_ms,
        )
        ok = (
            signer == grant.granted_by
            and self.acts_for(signer, grant.patient)
            and self.is_live(grant, self.ledger.next_time_ms)
            and not grant.manifested
        )
        if self.submit(manifest, ok, "consent manifest") is None:
            return
        grant.manifested = True
        by_id = {r.record_id: r for r in chosen}
        for index, part in enumerate(client.split_grant_parts(keys)):
            part_ok = self.is_live(grant, self.ledger.next_time_ms) and all(
                is_covered(
                    grant.scope,
                    by_id[k.record_id].record_id,
                    by_id[k.record_id].record_type,
                    by_id[k.record_id].time_ms,
                )
                and self.terms_cover(
                    grant, by_id[k.record_id].author, self.current_labels(by_id[k.record_id])
                )
                for k in part
            )
            signed = self.ledger.sign(
                client.build_grant_part, IDENTITIES[signer], grant.grant_id, index, part
            )
            if self.submit(signed, part_ok, "consent part") is not None:
                grant.record_ids |= {k.record_id for k in part}

    def claim_readers(self, patient: str, clinic: str, insurer: str) -> list[bytes]:
        return [enc(patient), enc(clinic), enc(insurer)]

    @rule(
        filer=stg.sampled_from(("clinic", "clinic", "clinic", "hospital", "insurer", STRANGER)),
        insurer=stg.sampled_from(("insurer", "insurer", "insurer", "insurer-2", "research")),
        encounter_kind=stg.sampled_from(("own", "own", "own", "any", "missing")),
        readers_kind=stg.sampled_from(("honest", "honest", "honest", "extra", "no_patient")),
        empty=stg.sampled_from((False, False, False, True)),
        data=stg.data(),
    )
    def file_claim(
        self,
        filer: str,
        insurer: str,
        encounter_kind: str,
        readers_kind: str,
        empty: bool,
        data: stg.DataObject,
    ) -> None:
        encounters = [
            r
            for r in self.records.values()
            if r.record_type == "Encounter" and (encounter_kind != "own" or r.author == filer)
        ]
        if encounter_kind == "missing" or not encounters:
            encounter_id, patient, encounter = bytes(32), PATIENTS[0], None
        else:
            encounter = data.draw(stg.sampled_from(encounters))
            encounter_id, patient = encounter.record_id, encounter.patient
            if encounter_kind == "any":  # any record at all, of any type, patient or author
                encounter = data.draw(stg.sampled_from(list(self.records.values())))
                encounter_id = encounter.record_id
        candidates = [r.record_id for r in self.records.values()]
        record_ids = (
            set()
            if empty or not candidates
            else set(data.draw(stg.lists(stg.sampled_from(candidates), min_size=1, max_size=4)))
        )
        readers = self.claim_readers(patient, filer, insurer)
        if readers_kind == "extra":
            readers.append(enc("research" if insurer != "research" else "hospital"))
        elif readers_kind == "no_patient":
            readers = readers[1:]
        self.counter += 1
        sealed = seal_test_claim(
            self.counter,
            readers,
            patient_id=pid(patient),
            clinic=IDENTITIES[filer].public.sign_key,
            insurer=IDENTITIES[insurer].public.sign_key,
            encounter_id=encounter_id,
            version=1,
        )
        ok = (
            filer in AUTHORS
            and patient in self.registered
            and insurer in INSURERS
            and encounter is not None
            and encounter.record_type == "Encounter"
            and encounter.author == filer
            and encounter.patient == patient
            and bool(record_ids)
            and all(self.records[r].patient == patient for r in record_ids)
            and readers_kind == "honest"
            and filer != insurer
        )
        signed = self.ledger.sign(
            claims_client.build_file_claim,
            IDENTITIES[filer],
            pid(patient),
            IDENTITIES[insurer].public.sign_key,
            encounter_id,
            record_ids,
            sealed,
        )
        claim_id = self.submit(signed, ok, "file claim")
        if claim_id is not None:
            self.claims.append(
                MClaim(claim_id, patient, filer, insurer, encounter_id, tuple(sorted(record_ids)))
            )

    @rule(
        who=stg.sampled_from(("clinic-of-claim", "clinic-of-claim", "clinic-of-claim", *INSTITUTIONS)),
        bump=stg.sampled_from((1, 1, 1, 0, 2)),
        data=stg.data(),
    )
    def amend_claim(self, who: str, bump: int, data: stg.DataObject) -> None:
        if not self.claims:
            return
        claim = data.draw(stg.sampled_from(self.claims))
        if claim.version + bump > CLAIM_VERSIONS_MAX or claim.version + bump < 2:
            return
        signer = claim.clinic if who == "clinic-of-claim" else who
        own = [r.record_id for r in self.records.values() if r.patient == claim.patient]
        record_ids = set(data.draw(stg.lists(stg.sampled_from(own), min_size=1, max_size=4)))
        version = claim.version + bump
        self.counter += 1
        sealed = seal_test_claim(
            self.counter,
            self.claim_readers(claim.patient, claim.clinic, claim.insurer),
            patient_id=pid(claim.patient),
            clinic=IDENTITIES[claim.clinic].public.sign_key,
            insurer=IDENTITIES[claim.insurer].public.sign_key,
            encounter_id=claim.encounter_id,
            version=version,
        )
        ok = signer == claim.clinic and claim.status != OUTCOME_APPROVED and bump == 1
        signed = self.ledger.sign(
            claims_client.build_amend_claim, IDENTITIES[signer], claim.claim_id, version, record_ids, sealed
        )
        if self.submit(signed, ok, "amend claim"):
            claim.version = version
            claim.record_ids = tuple(sorted(record_ids))
            claim.status = CLAIM_OPEN

    @rule(
        who=stg.sampled_from(("insurer-of-claim", "insurer-of-claim", "insurer-of-claim", *INSTITUTIONS)),
        outcome=stg.sampled_from(sorted(OUTCOMES)),
        stale=stg.sampled_from((False, False, False, True)),
        honest_readers=stg.sampled_from((True, True, True, False)),
        data=stg.data(),
    )
    def decide_claim(
        self, who: str, outcome: str, stale: bool, honest_readers: bool, data: stg.DataObject
    ) -> None:
        if not self.claims:
            return
        claim = data.draw(stg.sampled_from(self.claims))
        signer = claim.insurer if who == "insurer-of-claim" else who
        version = claim.version - 1 if stale and claim.version > 1 else claim.version
        readers = self.claim_readers(claim.patient, claim.clinic, claim.insurer)
        if not honest_readers:
            readers = readers[:2]
        sealed = seal_test_response(
            outcome,
            readers,
            claim_id=claim.claim_id,
            version=version,
            insurer=IDENTITIES[claim.insurer].public.sign_key,
        )
        ok = (
            signer == claim.insurer
            and version == claim.version
            and claim.decided_version != claim.version
            and honest_readers
        )
        signed = self.ledger.sign(
            claims_client.build_decide_claim, IDENTITIES[signer], claim.claim_id, version, outcome, sealed
        )
        if self.submit(signed, ok, "decide claim"):
            claim.status = outcome
            claim.decided_version = version
            decision = st.get_claim_decision(self.ledger.state, claim.claim_id, version)
            assert decision is not None
            for party in (claim.patient, claim.clinic, claim.insurer):
                assert open_claim_response(decision, IDENTITIES[party])["resourceType"] == "ClaimResponse"
            for party in (STRANGER, "research", *(INSURERS - {claim.insurer})):
                try:
                    open_claim_response(decision, IDENTITIES[party])
                except ClaimUnreadableError:
                    continue
                raise AssertionError(f"{party} opened a claim response not sealed for it")

    @rule(
        who=stg.sampled_from(("insurer-of-claim", "insurer-of-claim", "insurer-of-claim", *INSTITUTIONS)),
        stray=stg.sampled_from((False, False, False, True)),
        data=stg.data(),
    )
    def read_for_claim(self, who: str, stray: bool, data: stg.DataObject) -> None:
        """The insurer's node reads a claim's supporting records under a grant: a receipt naming the
        claim first, then it decrypts exactly those records."""
        if not self.claims or not self.grants:
            return
        claim = data.draw(stg.sampled_from(self.claims))
        reader = claim.insurer if who == "insurer-of-claim" else who
        mine = [g for g in self.grants if g.grantee == reader and g.patient == claim.patient]
        grant = data.draw(stg.sampled_from(mine or self.grants))
        # Insertion order (a claim keeps its ids sorted, and ids are random): draws must replay.
        coverable = [
            r for r in self.records if r in claim.record_ids and self.coverable(grant, self.records[r])
        ]
        chosen = set(data.draw(stg.lists(stg.sampled_from(coverable), max_size=3))) if coverable else set()
        others = [r for r in self.records if r not in coverable]
        if stray and others:
            chosen.add(data.draw(stg.sampled_from(others)))
        ok = (
            reader == claim.insurer == grant.grantee
            and grant.patient == claim.patient
            and self.is_live(grant, self.ledger.next_time_ms)
            and bool(chosen)
            and all(r in coverable for r in chosen)
        )
        signed = self.ledger.sign(
            claims_client.build_claim_read_receipt, IDENTITIES[reader], claim.claim_id, grant.grant_id, chosen
        )
        if self.submit(signed, ok, "claim read receipt") is None:
            return
        stored_grant = st.get_grant(self.ledger.state, grant.grant_id)
        assert stored_grant is not None
        for record_id in sorted(chosen):
            record = st.get_record(self.ledger.state, record_id)
            assert record is not None
            sealed = policy.get_grant_sealed_key(self.ledger.state, stored_grant, record_id)
            opened = open_record(record, IDENTITIES[reader], grant=stored_grant, sealed_key=sealed)
            assert opened.canonical_json == self.records[record_id].plaintext
        self.reads.append((grant.grant_id, tuple(sorted(chosen))))
        self.claim_reads.append((claim.claim_id, tuple(sorted(chosen))))

    @rule(
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        author=stg.sampled_from(sorted(AUTHORS)),
        insurer=stg.sampled_from(sorted(INSURERS)),
        record_type=stg.sampled_from(RECORD_TYPES),
        labels=stg.sampled_from(LABEL_SETS),
        named=stg.sampled_from(CONSENT_LABEL_SETS),
    )
    def race_a_consent(
        self,
        patient: str,
        author: str,
        insurer: str,
        record_type: str,
        labels: tuple[str, ...],
        named: tuple[str, ...],
    ) -> None:
        """ADR 0017, amendment 2: a record sealed by its node before a consent commits, committed
        after it. Refused if the consent covers it (`health.record_consent_unsealed`), and then
        sealed again from the new state and accepted; accepted as it was if not covered."""
        if patient not in self.registered or len(self.records) >= MAX_RECORDS:
            return
        consent_ms = self.ledger.next_time_ms
        record_ms = consent_ms + BLOCK_INTERVAL_MS
        self.counter += 1
        resource = MAKERS[record_type](self.counter)

        def sealed(readers: set[str]) -> client.SignedTx:
            encrypted = encrypt_record(
                resource,
                patient_id=pid(patient),
                author=IDENTITIES[author].public.sign_key,
                readers=[enc(r) for r in readers],
            )
            if labels:
                return self.ledger.sign(
                    claims_client.build_add_labelled_record,
                    IDENTITIES[author],
                    pid(patient),
                    encrypted,
                    labels,
                )
            return self.ledger.sign(client.build_add_record, IDENTITIES[author], pid(patient), encrypted)

        before = self.sealable_readers(patient, author, record_type, record_ms, labels)
        stale = sealed(before)  # the node does not know the consent yet
        consent = claims_client.make_consent(
            pid(patient),
            IDENTITIES[insurer].public.sign_key,
            record_types=("Condition", "Encounter", "Observation"),
            authors=[IDENTITIES["clinic"].public.sign_key],
            labels=named,
            from_ms=consent_ms - 3_600_000,
            to_ms=consent_ms + 7_200_000,
            expires_ms=consent_ms + 3_600_000,
        )
        outcome = self.ledger.submit(
            self.ledger.sign(claims_client.build_grant_consent, IDENTITIES[patient], consent)
        )
        event(f"race: consent: {'accepted' if outcome.ok else outcome.rule}")
        if not outcome.ok:
            assert outcome.rule == "health.too_many_grants", outcome
            return
        self.grants.append(
            MGrant(
                outcome.tx_id,
                patient,
                insurer,
                client.make_scope(
                    record_types=("Condition", "Encounter", "Observation"),
                    from_ms=consent_ms - 3_600_000,
                    to_ms=consent_ms + 7_200_000,
                ),
                consent_ms + 3_600_000,
                set(),
                authors=frozenset({"clinic"}),
                labels=frozenset(named),
                granted_by=patient,
                granted_ms=consent_ms,
            )
        )
        covered = not self.required_readers(patient, author, record_type, record_ms, labels) <= before
        assert (
            covered == (author == "clinic" and record_type != "Immunization" and set(labels) <= set(named))
            or insurer in before
        ), (author, record_type, labels, named)
        readers = before
        record_id = self.submit(stale, not covered, "race: stale record")
        if record_id is None:  # the node seals it again from the state after the consent's block
            readers = self.sealable_readers(patient, author, record_type, self.ledger.next_time_ms, labels)
            assert insurer in readers
            record_ms = self.ledger.next_time_ms
            record_id = self.submit(sealed(readers), True, "race: sealed again")
        assert record_id is not None
        stored = st.get_record(self.ledger.state, record_id)
        assert stored is not None
        assert stored.time_ms == record_ms
        plaintext = open_record(stored, IDENTITIES[patient]).canonical_json
        self.records[record_id] = MRecord(
            record_id, patient, author, record_type, record_ms, plaintext, readers, labels=labels
        )

    @rule(
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        insurer=stg.sampled_from(sorted(INSURERS)),
        named=stg.sampled_from(((), (), ("HIV",))),
        outcome=stg.sampled_from((OUTCOME_APPROVED, "pended")),
    )
    def insurer_story(self, patient: str, insurer: str, named: tuple[str, ...], outcome: str) -> None:
        """The honest path in one go, sealed as the node seals (`policy.compute_node_record_readers`):
        a standing consent, an encounter's records (one labelled HIV), a claim citing them, the
        insurer reading what it may (never the labelled record unless the consent names HIV) and a
        decision."""
        if patient not in self.registered or len(self.records) + 3 > MAX_RECORDS:
            return
        state = self.ledger.state
        time_ms = self.ledger.next_time_ms
        consent = claims_client.make_consent(
            pid(patient),
            IDENTITIES[insurer].public.sign_key,
            record_types=("Condition", "Encounter", "Observation"),
            authors=[IDENTITIES["clinic"].public.sign_key],
            labels=named,
            from_ms=time_ms - 3_600_000,
            to_ms=time_ms + 7_200_000,
            expires_ms=time_ms + 3_600_000,
        )
        grant_id = self.submit(
            self.ledger.sign(claims_client.build_grant_consent, IDENTITIES[patient], consent),
            True,
            "story: consent",
        )
        assert grant_id is not None
        grant = MGrant(
            grant_id,
            patient,
            insurer,
            client.make_scope(
                record_types=("Condition", "Encounter", "Observation"),
                from_ms=time_ms - 3_600_000,
                to_ms=time_ms + 7_200_000,
            ),
            time_ms + 3_600_000,
            set(),
            authors=frozenset({"clinic"}),
            labels=frozenset(named),
            granted_by=patient,
            granted_ms=time_ms,
        )
        self.grants.append(grant)
        patient_state = st.get_patient(state, pid(patient))
        clinic = self.ledger.institutions["clinic"]
        assert patient_state is not None
        ids: list[bytes] = []
        for record_type, labels in (("Encounter", ()), ("Observation", ()), ("Condition", ("HIV",))):
            now_ms = self.ledger.next_time_ms
            node_readers = policy.compute_node_record_readers(
                self.ledger.state, patient_state, clinic, record_type, now_ms, labels
            )
            model_readers = self.sealable_readers(patient, "clinic", record_type, now_ms, labels)
            names = {p for p in PARTIES if enc(p) in node_readers}
            # The node never seals for more than the model allows (it may seal for fewer: margins).
            assert names <= model_readers, (names, model_readers)
            # This consent covers the unlabelled records, and the labelled one only if it names HIV
            # (another live consent of the same insurer may name it: the model says so above).
            if not labels or set(labels) <= set(named):
                assert insurer in names, (labels, named, names)
            self.counter += 1
            encrypted = encrypt_record(
                MAKERS[record_type](self.counter),
                patient_id=pid(patient),
                author=clinic.sign_key,
                readers=sorted(node_readers),
            )
            if labels:
                signed = self.ledger.sign(
                    claims_client.build_add_labelled_record,
                    IDENTITIES["clinic"],
                    pid(patient),
                    encrypted,
                    labels,
                )
            else:
                signed = self.ledger.sign(
                    client.build_add_record, IDENTITIES["clinic"], pid(patient), encrypted
                )
            record_id = self.submit(signed, True, "story: record")
            assert record_id is not None
            stored = st.get_record(self.ledger.state, record_id)
            assert stored is not None
            self.records[record_id] = MRecord(
                record_id,
                patient,
                "clinic",
                record_type,
                now_ms,
                open_record(stored, IDENTITIES[patient]).canonical_json,
                names,
                labels=labels,
            )
            ids.append(record_id)
        encounter_id = ids[0]
        self.counter += 1
        sealed = seal_test_claim(
            self.counter,
            self.claim_readers(patient, "clinic", insurer),
            patient_id=pid(patient),
            clinic=clinic.sign_key,
            insurer=IDENTITIES[insurer].public.sign_key,
            encounter_id=encounter_id,
            version=1,
        )
        signed = self.ledger.sign(
            claims_client.build_file_claim,
            IDENTITIES["clinic"],
            pid(patient),
            IDENTITIES[insurer].public.sign_key,
            encounter_id,
            ids,
            sealed,
        )
        claim_id = self.submit(signed, True, "story: claim")
        assert claim_id is not None
        claim = MClaim(claim_id, patient, "clinic", insurer, encounter_id, tuple(sorted(ids)))
        self.claims.append(claim)
        stored_claim = st.get_claim(self.ledger.state, claim_id)
        assert stored_claim is not None
        assert open_claim(stored_claim, IDENTITIES[insurer])["resourceType"] == "Claim"
        readable = tuple(sorted(r for r in ids if self.coverable(grant, self.records[r])))
        assert len(readable) == (3 if "HIV" in named else 2)
        signed = self.ledger.sign(
            claims_client.build_claim_read_receipt, IDENTITIES[insurer], claim_id, grant_id, readable
        )
        self.submit(signed, True, "story: read")
        self.reads.append((grant_id, readable))
        self.claim_reads.append((claim_id, readable))
        sealed_response = seal_test_response(
            outcome,
            self.claim_readers(patient, "clinic", insurer),
            claim_id=claim_id,
            version=1,
            insurer=IDENTITIES[insurer].public.sign_key,
        )
        signed = self.ledger.sign(
            claims_client.build_decide_claim, IDENTITIES[insurer], claim_id, 1, outcome, sealed_response
        )
        self.submit(signed, True, "story: decision")
        claim.status, claim.decided_version = outcome, 1

    # --- time and garbage -----------------------------------------------------------------------

    @rule(ms=stg.sampled_from((1_000, 6_000, 3_600_000)))
    def advance_time(self, ms: int) -> None:
        self.ledger.advance(ms)

    @rule(
        signer=stg.sampled_from(PARTIES),
        kind=stg.sampled_from((*sorted(TX_KINDS), "health.unknown")),
        body=stg.binary(max_size=40),
    )
    def garbage(self, signer: str, kind: str, body: bytes) -> None:
        _, raw, tx_id = signed = sign_tx(
            IDENTITIES[signer],
            chain_id="medledger-health-test",
            kind=kind,
            body=body,
            nonce=self.ledger.nonce(),
        )
        outcome = self.ledger.submit(signed)
        assert not outcome.ok
        assert outcome.rule == ("health.kind" if kind == "health.unknown" else "health.body"), outcome.rule
        assert raw
        assert tx_id

    # --- invariants -----------------------------------------------------------------------------

    def can_decrypt(
        self, party: str, record_id: bytes, grants: dict[bytes, list[GrantState]] | None = None
    ) -> bytes | None:
        """What `party`'s client gets from the ledger state for this record: plaintext or nothing.

        `grants` caches each patient's grants (`st.list_grants`) across one invariant check."""
        state = self.ledger.state
        record = st.get_record(state, record_id)
        assert record is not None
        identity = IDENTITIES[party]
        try:
            return open_record(record, identity).canonical_json
        except DecryptionError:
            pass
        if grants is None:
            grants = {}
        if record.patient_id not in grants:
            grants[record.patient_id] = st.list_grants(state, record.patient_id)
        for grant in grants[record.patient_id]:
            sealed = policy.get_grant_sealed_key(state, grant, record_id)  # one-tx grant or a part
            if grant.grantee == identity.public.sign_key and sealed is not None:
                try:
                    return open_record(record, identity, grant=grant, sealed_key=sealed).canonical_json
                except DecryptionError:
                    continue
        return None

    @invariant()
    def only_authorised_parties_decrypt(self) -> None:
        grants: dict[bytes, list[GrantState]] = {}
        for record in self.records.values():
            granted_to = {g.grantee for g in self.grants if record.record_id in g.record_ids}
            expected = record.readers | granted_to
            assert record.patient in expected
            assert record.author in expected
            for party in PARTIES:
                plaintext = self.can_decrypt(party, record.record_id, grants)
                if party in expected:
                    assert plaintext == record.plaintext, f"{party} should read the record"
                else:
                    assert plaintext is None, f"{party} must not read the record"

    @invariant()
    def every_read_has_a_receipt(self) -> None:
        receipts: set[tuple[bytes, tuple[bytes, ...]]] = set()
        for patient in PATIENTS:
            for audit in st.list_audit_events(self.ledger.state, pid(patient)):
                if audit.event == EVENT_READ:
                    receipts.add((audit.subject_id, audit.record_ids))
                    assert audit.height >= 1
                    assert audit.time_ms > 0
        assert set(self.reads) <= receipts
        assert len(receipts) == len(set(self.reads))

    @invariant()
    def ledger_matches_model(self) -> None:
        state = self.ledger.state
        for patient in PATIENTS:
            stored = st.get_patient(state, pid(patient))
            assert (stored is not None) == (patient in self.registered)
            if stored is not None:
                assert set(stored.representatives) == {
                    IDENTITIES[r].public.sign_key for r in self.reps[patient]
                }
                assert len(st.list_records(state, pid(patient))) == sum(
                    1 for r in self.records.values() if r.patient == patient
                )
        for inquiry in self.inquiries:
            stored_inquiry = st.get_inquiry(state, inquiry.inquiry_id)
            assert stored_inquiry is not None
            assert stored_inquiry.status == inquiry.status
        for grant in self.grants:
            stored_grant = st.get_grant(state, grant.grant_id)
            assert stored_grant is not None
            assert stored_grant.is_revoked == grant.revoked

    @invariant()
    def sealed_only_under_live_cover(self) -> None:
        """Nobody but the patient and the author is sealed a record unless a grant live at the
        record's block time covered it, authors and labels included: a labelled record never
        reaches a consent that does not name its labels, nor anything a revoked consent."""
        for record in self.records.values():
            stored = st.get_record(self.ledger.state, record.record_id)
            assert stored is not None
            for party in PARTIES:
                if enc(party) not in stored.envelope.readers or party in (record.patient, record.author):
                    continue
                assert any(
                    g.grantee == party
                    and g.patient == record.patient
                    and not (g.revoked_ms is not None and g.revoked_ms <= record.time_ms)
                    and record.time_ms < g.expires_ms
                    and is_covered(g.scope, record.record_id, record.record_type, record.time_ms)
                    and self.terms_cover(g, record.author, record.labels)
                    for g in self.grants
                ), f"{party} was sealed a record no live grant of it covered"

    @invariant()
    def covered_records_reach_the_consents_insurer(self) -> None:
        """Issue 12: while a standing consent is live, every new record it covers (beyond the
        margin of its edges) is sealed for its insurer: no record on the ledger lacks it."""
        for record in self.records.values():
            stored = st.get_record(self.ledger.state, record.record_id)
            assert stored is not None
            for g in self.grants:
                live_then = g.revoked_ms is None or g.revoked_ms > record.time_ms
                if live_then and self.requires(
                    dataclasses.replace(g, revoked=False),
                    record.patient,
                    record.author,
                    record.record_type,
                    record.time_ms,
                    record.labels,
                ):
                    assert enc(g.grantee) in stored.envelope.readers, (
                        f"{g.grantee}'s live consent covered a record not sealed for it"
                    )

    @invariant()
    def claims_match_model(self) -> None:
        state = self.ledger.state
        for claim in self.claims:
            stored = st.get_claim(state, claim.claim_id)
            assert stored is not None
            assert stored.clinic == IDENTITIES[claim.clinic].public.sign_key
            assert stored.insurer == IDENTITIES[claim.insurer].public.sign_key
            assert (stored.version, stored.status, stored.decided_version) == (
                claim.version,
                claim.status,
                claim.decided_version,
            )
            assert stored.record_ids == claim.record_ids
            if claim.decided_version:
                decision = st.get_claim_decision(state, claim.claim_id, claim.decided_version)
                assert decision is not None
                assert decision.insurer == stored.insurer
                assert claim.status in (decision.outcome, CLAIM_OPEN)
            assert claim.claim_id in st.list_insurer_claim_ids(state, stored.insurer)
            assert claim.claim_id in st.list_clinic_claim_ids(state, stored.clinic)
        for insurer in INSURERS:
            listed = st.list_insurer_claim_ids(state, IDENTITIES[insurer].public.sign_key)
            assert listed == [c.claim_id for c in self.claims if c.insurer == insurer]

    @invariant()
    def every_claim_read_has_a_receipt(self) -> None:
        receipts: list[tuple[bytes, tuple[bytes, ...]]] = []
        for patient in PATIENTS:
            for audit in st.list_audit_events(self.ledger.state, pid(patient)):
                if audit.event == EVENT_CLAIM_READ:
                    receipts.append((audit.subject_id, audit.record_ids))
        assert sorted(receipts) == sorted(self.claim_reads)


TestHealthRules = HealthMachine.TestCase
TestHealthRules.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- institution membership (issue 16, ADR 0020) ------------------------------------------------


M_GENESIS = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
M_JOINERS = {"joiner-a": "clinic", "joiner-b": "insurer"}
M_ROLES = {**M_GENESIS, **M_JOINERS}
M_INSTITUTIONS = tuple(M_ROLES)
M_IDENTITIES: dict[str, Identity] = {name: make_identity(name) for name in M_INSTITUTIONS}
M_PATIENT = "patient-m"
M_PATIENT_ID = compute_patient_id(make_identity(M_PATIENT).public.sign_key)
M_VALIDATORS = 4
#: What each status kind needs the institution's status to be, and the status it sets.
M_STATUS_KINDS = {
    KIND_INSTITUTION_SUSPEND: ({"active"}, "suspended"),
    KIND_INSTITUTION_REINSTATE: ({"suspended"}, "active"),
    KIND_INSTITUTION_REMOVE: ({"active", "suspended"}, "removed"),
}


def m_institution(name: str) -> Institution:
    identity = M_IDENTITIES[name]
    return Institution(name, M_ROLES[name], identity.public.sign_key, identity.public.enc_key)


class MembershipMachine(RuleBasedStateMachine):
    """Joins, suspensions, reinstatements and removals by the validators' vote, among records,
    inquiries, grants and reads: the model predicts every outcome, and the invariants read the
    ledger: no key authors, is granted, reads or is sealed for while it is inactive (from the block
    that suspends or removes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(M_GENESIS, validator_count=M_VALIDATORS)
        self.patient = make_identity(M_PATIENT)
        self.voters = [*self.ledger.validator_identities, M_IDENTITIES["clinic"], make_identity("stranger")]
        self.status: dict[str, str | None] = {
            n: ("active" if n in M_GENESIS else None) for n in M_INSTITUTIONS
        }
        self.rounds: dict[str, int] = dict.fromkeys(M_INSTITUTIONS, 0)
        self.approvals: dict[tuple[str, str, int], set[int]] = {}
        #: (name, first height inactive, first height active again or None).
        self.inactive: list[tuple[str, int, int | None]] = []
        self.inquiries: list[tuple[bytes, str]] = []
        self.grants: list[tuple[bytes, str, tuple[bytes, ...]]] = []

    @initialize()
    def register_patient(self) -> None:
        self.ledger.submit_ok(self.ledger.sign(client.build_register_patient, self.patient))

    def active(self, name: str) -> bool:
        return self.status[name] == "active"

    def check(self, signed: client.SignedTx, expect_ok: bool, rule: str, why: str) -> bytes | None:
        outcome = self.ledger.submit(signed)
        event(f"{why}: {'accepted' if outcome.ok else outcome.rule}")
        assert outcome.ok == expect_ok, (why, outcome.rule, outcome.message)
        if not expect_ok and rule:
            assert outcome.rule == rule, (why, outcome.rule, rule)
        return outcome.tx_id if outcome.ok else None

    def refusal(self, name: str) -> str:
        return "health.institution_inactive" if self.status[name] is not None else "health.not_institution"

    # --- votes ----------------------------------------------------------------------------------

    @rule(
        kind=stg.sampled_from((KIND_INSTITUTION_ADD, *M_STATUS_KINDS)),
        whom=stg.sampled_from(M_INSTITUTIONS),
        voter=stg.integers(0, M_VALIDATORS + 1),
    )
    def vote(self, kind: str, whom: str, voter: int) -> None:
        target = whom
        identity = self.voters[voter]
        if kind == KIND_INSTITUTION_ADD:
            signed = self.ledger.sign(client.build_institution_add, identity, m_institution(target))
        else:
            signed = self.ledger.sign(
                client.build_institution_status, identity, kind, M_IDENTITIES[target].public.sign_key
            )
        status = self.status[target]
        if voter == M_VALIDATORS and not self.active("clinic"):
            self.check(signed, False, "health.institution_inactive", "vote by an inactive institution")
            return
        if voter >= M_VALIDATORS:
            self.check(signed, False, "health.membership_approver", "vote by a non-validator")
            return
        if kind == KIND_INSTITUTION_ADD and status is not None:
            self.check(signed, False, "health.membership_exists", "add of a registered institution")
            return
        if kind != KIND_INSTITUTION_ADD:
            if status is None:
                self.check(signed, False, "health.membership_unknown", "status of no institution")
                return
            if status not in M_STATUS_KINDS[kind][0]:
                self.check(signed, False, "health.membership_status", "status change that does not apply")
                return
        change = (kind, target, self.rounds[target])
        approvals = self.approvals.setdefault(change, set())
        if voter in approvals:
            self.check(signed, False, "health.membership_duplicate", "duplicate approval")
            return
        approvals.add(voter)
        self.check(signed, True, "", "approval")
        if len(approvals) * 3 <= 2 * M_VALIDATORS:
            return
        after = "active" if kind == KIND_INSTITUTION_ADD else M_STATUS_KINDS[kind][1]
        height = self.ledger.height
        if status == "active" and after != "active":
            self.inactive.append((target, height, None))
        if status == "suspended" and after != "suspended":
            self.inactive = [
                (n, start, height if n == target and end is None else end) for n, start, end in self.inactive
            ]
            if after == "removed":
                self.inactive.append((target, height, None))
        self.status[target] = after
        self.rounds[target] += 1

    @rule(
        kind=stg.sampled_from((KIND_INSTITUTION_ADD, *M_STATUS_KINDS)), whom=stg.sampled_from(M_INSTITUTIONS)
    )
    def vote_through(self, kind: str, whom: str) -> None:
        """Every validator in turn approves the same change (most random votes never agree)."""
        before = (self.status[whom], self.rounds[whom])
        for voter in range(M_VALIDATORS):
            self.vote(kind, whom, voter)
            if (self.status[whom], self.rounds[whom]) != before:
                event(f"passed: {kind}")
                return

    # --- what institutions do -------------------------------------------------------------------

    def records(self) -> list[RecordState]:
        return list(st.list_records(self.ledger.state, M_PATIENT_ID))

    @rule(author=stg.sampled_from(M_INSTITUTIONS), data=stg.data())
    def add_record(self, author: str, data: stg.DataObject) -> None:
        also = data.draw(stg.sampled_from([None, *M_INSTITUTIONS]))
        readers = [self.patient.public.enc_key, M_IDENTITIES[author].public.enc_key]
        live = {g for _, g, _ in self.grants}
        if also is not None:
            readers.append(M_IDENTITIES[also].public.enc_key)
        encrypted = encrypt_record(
            MAKERS["Observation"](self.counter_value()),
            patient_id=M_PATIENT_ID,
            author=M_IDENTITIES[author].public.sign_key,
            readers=readers,
        )
        signed = self.ledger.sign(client.build_add_record, M_IDENTITIES[author], M_PATIENT_ID, encrypted)
        if not self.active(author):
            self.check(signed, False, self.refusal(author), "record by a non-member")
        elif M_ROLES[author] not in ("clinic", "hospital"):
            self.check(signed, False, "health.author_role", "record by an insurer")
        elif also is not None and also != author and not (also in live and self.active(also)):
            self.check(signed, False, "health.record_readers", "record sealed for one without cover")
        else:
            self.check(signed, True, "", "record")

    def counter_value(self) -> int:
        return self.ledger.height

    @rule(requester=stg.sampled_from(M_INSTITUTIONS))
    def inquire(self, requester: str) -> None:
        purpose = "HPAYMT" if M_ROLES[requester] == "insurer" else "TREAT"
        signed = self.ledger.sign(
            client.build_request_access,
            M_IDENTITIES[requester],
            M_PATIENT_ID,
            client.make_scope(),
            purpose,
            self.ledger.next_time_ms + INQUIRY_TTL_MS_MAX // 2,
            "synthetic follow-up",
            patient_enc_key=self.patient.public.enc_key,
        )
        if not self.active(requester):
            self.check(signed, False, self.refusal(requester), "inquiry by a non-member")
            return
        tx_id = self.check(signed, True, "", "inquiry")
        assert tx_id is not None
        self.inquiries.append((tx_id, requester))

    @rule(data=stg.data())
    def grant(self, data: stg.DataObject) -> None:
        if not self.inquiries:
            return
        inquiry_id, requester = self.inquiries.pop(data.draw(stg.integers(0, len(self.inquiries) - 1)))
        records = self.records()
        keys = reseal_record_keys(records, self.patient, M_IDENTITIES[requester].public.enc_key)
        signed = self.ledger.sign(client.build_grant, self.patient, inquiry_id, keys)
        if not self.active(requester):
            self.check(signed, False, "health.institution_inactive", "grant to a non-member")
            self.inquiries.append((inquiry_id, requester))  # still open: it may be denied
            return
        tx_id = self.check(signed, True, "", "grant")
        assert tx_id is not None
        self.grants.append((tx_id, requester, tuple(r.record_id for r in records)))

    @rule(data=stg.data())
    def read(self, data: stg.DataObject) -> None:
        candidates = [g for g in self.grants if g[2]]
        if not candidates:
            return
        grant_id, grantee, record_ids = data.draw(stg.sampled_from(candidates))
        signed = self.ledger.sign(
            client.build_read_receipt, M_IDENTITIES[grantee], grant_id, list(record_ids)
        )
        if not self.active(grantee):
            self.check(signed, False, "health.institution_inactive", "read by a non-member")
        else:
            self.check(signed, True, "", "read")

    @rule(data=stg.data())
    def deny(self, data: stg.DataObject) -> None:
        """The patient may always close an inquiry, even a removed institution's."""
        if not self.inquiries:
            return
        inquiry_id, _ = self.inquiries.pop(data.draw(stg.integers(0, len(self.inquiries) - 1)))
        self.check(self.ledger.sign(client.build_deny, self.patient, inquiry_id), True, "", "deny")

    # --- invariants -----------------------------------------------------------------------------

    def inactive_at(self, key: bytes, height: int) -> bool:
        return any(
            M_IDENTITIES[n].public.sign_key == key and start <= height and (end is None or height < end)
            for n, start, end in self.inactive
        )

    @invariant()
    def statuses_match_the_ledger(self) -> None:
        for name, status in self.status.items():
            key = M_IDENTITIES[name].public.sign_key
            if status is None:
                assert st.get_institution(self.ledger.state, key) is None
                continue
            assert st.get_institution(self.ledger.state, key) == m_institution(name)
            assert st.is_active_institution(self.ledger.state, key) == (status == "active")

    @invariant()
    def nothing_for_an_inactive_key_after_its_block(self) -> None:
        state = self.ledger.state
        for record in self.records():
            assert not self.inactive_at(record.author, record.height), "an inactive key authored"
            for name, identity in M_IDENTITIES.items():
                if name == M_IDENTITIES_NAME_OF.get(record.author):
                    continue
                if self.inactive_at(identity.public.sign_key, record.height):
                    with contextlib.suppress(DecryptionError):
                        open_record(record, identity)
                        raise AssertionError(
                            f"a record of block {record.height} is sealed for inactive {name}"
                        )
        for audit in st.list_audit_events(state, M_PATIENT_ID):
            assert not self.inactive_at(audit.actor, audit.height), f"an inactive key acted: {audit.event}"
        for grant_id, _, _ in self.grants:
            grant = st.get_grant(state, grant_id)
            assert grant is not None
            assert not self.inactive_at(grant.grantee, grant.height), "an inactive key was granted"


M_IDENTITIES_NAME_OF = {identity.public.sign_key: name for name, identity in M_IDENTITIES.items()}

TestMembershipRules = MembershipMachine.TestCase
TestMembershipRules.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
