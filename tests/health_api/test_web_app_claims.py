"""The insurer's part of the patient's web app (issue 12 item 4, issue 15), in Chromium, real nodes.

A clinic and an insurer run as two node processes. The patient registers and gives the insurer a
standing consent with the Python SDK (`medledger patient consent grant`); the clinic writes an
encounter's records (one labelled HIV, which the consent does not name) and files a claim; the
insurer reads what it may for the claim (each read receipted), pends the claim for a missing lab,
the clinic amends it with the lab, the insurer reads that and approves. The page shows, each
verified against the chain: the consent with everything it covers (insurer, types, authors,
window, expiry, no sensitive label), the claim, each decision with its reason in the insurer's
words, and exactly which records the insurer read for it; the patient revokes the consent in the
page (a `health.revoke` signed here, which the SDK then sees), and gives a new one in the page
(the scope and the records it re-seals shown first; Python sees the consent and its re-sealed
record). Screenshots at 1280 and 360 px.

A lying node (`lying_proxy.LyingProxy` in front of the clinic's node) serves the consent with fewer
types than were signed, a pended decision as approved, and an audit trail without the insurer's
read for a claim: the page refuses each, names the node, shows no lie, and signs nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from health_harness import HealthNet, make_patient_key, patient_cli
from lying_proxy import LyingProxy
from playwright.sync_api import Browser, expect
from test_claims_story import MISSING, claim, encounter, hiv_condition, key_of, response
from test_web_app_screens import UI_TIMEOUT_MS, browser, glucose, open_key, shoot

from medledger.chain.codec import decode, encode
from medledger.health.claims_types import ClaimDecision
from medledger.health.types import AuditEvent, GrantState, compute_patient_id

__all__ = ["browser"]  # the fixture, shared with the screens' test


def test_the_patient_sees_consents_claims_decisions_and_reads_verified_and_revokes(
    shared_net: HealthNet, browser: Browser, tmp_path: Path
) -> None:
    net = shared_net
    clinic, insurer = net["clinic"], net["insurer"]
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key_file, clinic.url, "register")
    shown = patient_cli(
        key_file,
        clinic.url,
        *("consent", "grant", "insurer", "--type", "Encounter", "--type", "Observation"),
        *("--type", "Condition", "--author", "clinic", "--days", "30", "--yes"),
    )
    consent_id = shown.split("granted consent ")[1].split()[0]
    net.sync()

    def add(resource: dict[str, Any]) -> str:
        reply = clinic.post(
            "/v1/health/institution/records", {"patient_id": patient_id, "resource": resource}
        )
        assert reply.status == 201, reply
        return str(reply.json()["record_id"])

    visit, vitals, diagnosis = add(encounter()), add(glucose(6.1, "2026-11-30")), add(hiv_condition())
    net.sync()
    cited = sorted([visit, vitals, diagnosis])
    filing = {
        "patient_id": patient_id,
        "insurer": key_of(net, "insurer"),
        "encounter_id": visit,
        "record_ids": cited,
        "claim": claim(120.0),
    }
    filed = clinic.post("/v1/health/institution/claims", filing)
    assert filed.status == 201, filed
    claim_id = filed.json()["claim_id"]
    net.sync()
    read_path = f"/v1/health/institution/claims/{claim_id}/records/"
    assert insurer.get(read_path + vitals).status == 200
    assert insurer.get(read_path + diagnosis).status == 403  # labelled HIV: the consent names no label
    decision_path = f"/v1/health/institution/claims/{claim_id}/decision"
    pended = insurer.post(decision_path, {"version": 1, "outcome": "pended", "response": response("pended")})
    assert pended.status == 201, pended
    lab = add(glucose(7.4, "2026-12-01"))
    net.sync()
    amended = clinic.post(
        f"/v1/health/institution/claims/{claim_id}/versions",
        {"record_ids": sorted([*cited, lab]), "claim": claim(120.0)},
    )
    assert amended.status == 201, amended
    net.sync()
    assert insurer.get(read_path + lab).status == 200
    approved = insurer.post(
        decision_path, {"version": 2, "outcome": "approved", "response": response("approved")}
    )
    assert approved.status == 201, approved
    net.sync()

    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    open_key(page, clinic.url, key_file)
    expect(page.locator("#app-status")).to_have_text(
        re.compile("verified against the ledger"), timeout=UI_TIMEOUT_MS
    )
    page.click("#tab-claims")
    screen = page.locator("#claims")

    # The consent, in full, verified.
    consent = screen.locator(f'li.consent[data-consent-id="{consent_id}"]')
    expect(consent).to_contain_text("insurer (insurer) may receive, for payment of your claims")
    expect(consent.locator(".consent-types li")).to_have_text(
        [
            "conditions and diagnoses (Condition)",
            "visits and hospital stays (Encounter)",
            "measurements and test results (Observation)",
        ]
    )
    # The CLI's window: from the start of the records to the consent's expiry.
    expect(consent.locator(".consent-authors")).to_have_text(
        re.compile(r"^written by clinic \(clinic\), written until \w{3} \d{1,2}, \d{4}\.$")
    )
    expect(consent.locator(".consent-labels")).to_contain_text("No record labelled sensitive")
    expect(consent).to_contain_text("Live until")
    expect(consent.locator(".verified")).to_have_count(1)

    # The claim: its status, each decision with its reason, and what the insurer read for it.
    card = screen.locator(f'li.claim[data-claim-id="{claim_id}"]')
    expect(card).to_contain_text("clinic (clinic) claims from insurer (insurer): 99213: 120.0 EUR.")
    # Every cited record is one of the patient's verified records (the HIV-labelled one too).
    expect(card.locator("details li")).to_have_count(4)
    expect(card.locator("details")).not_to_contain_text("not among yours")
    expect(card.locator(".claim-status")).to_contain_text("Approved. Filed")
    expect(card.locator(".claim-status")).to_contain_text("version 2")
    decisions = card.locator("li.decision")
    expect(decisions).to_have_count(2)
    expect(decisions.nth(0)).to_contain_text("Pended: the insurer needs more (version 1)")
    expect(decisions.nth(0).locator(".decision-reason")).to_have_text(f"Reason: {MISSING}")
    expect(decisions.nth(1)).to_contain_text("Approved (version 2)")
    expect(decisions.nth(1).locator(".decision-reason")).to_have_text("Reason: Settled in full")
    reads = card.locator("li.claim-read")
    expect(reads).to_have_count(2)  # the vitals, then the lab; never the HIV-labelled record
    expect(reads.nth(0).locator("li")).to_have_text(
        ["Glucose, 2026-11-30T08:30:00Z (measurements and test results)"]
    )
    expect(reads.nth(1).locator("li")).to_have_text(
        ["Glucose, 2026-12-01T08:30:00Z (measurements and test results)"]
    )
    expect(card.locator(".verified")).to_have_count(5)  # the claim, two decisions, two reads
    expect(screen.locator(".refused")).to_have_count(0)
    shoot(page, "claims")

    # Revoked in the page: a revoke signed here, which the Python SDK sees on the chain.
    consent.locator("button.revoke").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile("Revoking insurer \\(insurer\\)'s consent: done, and verified"), timeout=UI_TIMEOUT_MS
    )
    expect(consent).to_contain_text("Revoked")
    expect(consent.locator("button.revoke")).to_have_count(0)
    net.sync()
    (listed,) = json.loads(patient_cli(key_file, insurer.url, "consent", "list", "--json"))
    assert (listed["consent_id"], listed["revoked"]) == (consent_id, True)

    # A new consent given in the page: the scope in full before signing, with the records already
    # on the ledger it re-seals (a labelled record only once its label is ticked); then signed here
    # as claims_client signs it, and those records re-sealed in a consent manifest and its part.
    later = add(glucose(8.0, "2026-12-02"))  # after the revocation: sealed for nobody but the patient
    net.sync()
    expect(screen.locator("li.consent")).to_have_count(1)
    screen.locator("#consent-new summary").click()
    form = screen.locator("#consent-form")
    form.get_by_label("measurements and test results (Observation)").check()
    form.get_by_label("conditions and diagnoses (Condition)").check()
    form.get_by_label("clinic (clinic)").check()
    form.get_by_label("For how many days").fill("30")
    preview = form.locator(".consent-preview")
    expect(preview).to_contain_text(
        "insurer may receive, for payment (HPAYMT), your conditions and diagnoses, "
        "measurements and test results"
    )
    expect(preview).to_contain_text("no record labelled sensitive")
    expect(preview).to_contain_text("re-seals for the insurer the 1 record(s)", timeout=UI_TIMEOUT_MS)
    form.get_by_label("HIV (HIV)").check()
    expect(preview).to_contain_text("re-seals for the insurer the 2 record(s)")  # the HIV diagnosis too
    form.get_by_label("HIV (HIV)").uncheck()
    form.locator("button[type=submit]").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile("Giving insurer a standing consent: done, and verified"), timeout=UI_TIMEOUT_MS
    )
    net.sync()
    consents = json.loads(patient_cli(key_file, insurer.url, "consent", "list", "--json"))
    (given,) = [c for c in consents if c["consent_id"] != consent_id]
    assert (given["record_types"], given["authors"], given["labels"], given["revoked"]) == (
        ["Condition", "Observation"],
        ["clinic"],
        [],
        False,
    )
    expect(screen.locator(f'li.consent[data-consent-id="{given["consent_id"]}"]')).to_contain_text(
        "Live until"
    )
    trail = json.loads(patient_cli(key_file, clinic.url, "audit", "--json"))
    parts = [e for e in trail if e["event"] == "grant_part"]
    assert [(p["subject_id"], p["record_ids"]) for p in parts] == [(given["consent_id"], [later])], parts
    shoot(page, "claims-consent")
    assert problems == []


def _claim_lies(patient_id: str, decided_claim: str) -> Any:
    """Serve the consent with fewer types than signed, a decision with another outcome, and an
    audit trail without the insurer's read for a claim."""

    def rewrite(path: str, body: Any) -> Any:
        base = f"/v1/health/patients/{patient_id}"
        if path == f"{base}/grants":
            for item in body.get("grants", []):
                grant = decode(GrantState, base64.b64decode(item["encoded"]), max_bytes=1 << 20)
                narrowed = dataclasses.replace(grant.scope, record_types=("Observation",))
                item["encoded"] = base64.b64encode(
                    encode(dataclasses.replace(grant, scope=narrowed))
                ).decode()
        if path == f"{base}/claims":
            for item in body.get("claims", []):
                if item["claim_id"] != decided_claim:
                    continue
                for entry in item["decisions"]:
                    decision = decode(ClaimDecision, base64.b64decode(entry["encoded"]), max_bytes=1 << 20)
                    lied = dataclasses.replace(decision, outcome="approved")
                    entry["encoded"] = base64.b64encode(encode(lied)).decode()
        if path == f"{base}/audit":
            body["events"] = [
                e
                for e in body.get("events", [])
                if decode(AuditEvent, base64.b64decode(e["encoded"]), max_bytes=1 << 20).event != "claim_read"
            ]
        return body

    return rewrite


def test_invalid_consent_decision_and_hidden_read_from_a_lying_node_are_refused_in_the_page(
    shared_net: HealthNet, browser: Browser, tmp_path: Path
) -> None:
    net = shared_net
    clinic, insurer = net["clinic"], net["insurer"]
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key_file, clinic.url, "register")
    patient_cli(
        key_file,
        clinic.url,
        *("consent", "grant", "insurer", "--type", "Encounter", "--type", "Observation"),
        *("--author", "clinic", "--days", "30", "--yes"),
    )
    net.sync()
    visit = clinic.add_record(patient_id, encounter())
    vitals = clinic.add_record(patient_id, glucose(6.1, "2026-11-30"))
    net.sync()
    filing = {
        "patient_id": patient_id,
        "insurer": key_of(net, "insurer"),
        "encounter_id": visit,
        "record_ids": sorted([visit, vitals]),
        "claim": claim(80.0),
    }
    decided, read = (clinic.post("/v1/health/institution/claims", filing) for _ in range(2))
    assert decided.status == read.status == 201, (decided, read)
    decided_id, read_id = decided.json()["claim_id"], read.json()["claim_id"]
    net.sync()
    pend = {"version": 1, "outcome": "pended", "response": response("pended")}
    assert insurer.post(f"/v1/health/institution/claims/{decided_id}/decision", pend).status == 201
    assert insurer.get(f"/v1/health/institution/claims/{read_id}/records/{vitals}").status == 200
    net.sync()

    with LyingProxy(clinic.url) as proxy:
        proxy.rewrite = _claim_lies(patient_id, decided_id)
        proxy.refuse_prefixes = ("/v1/events/stream",)
        page = browser.new_page(viewport={"width": 360, "height": 800})
        open_key(page, proxy.url, key_file)
        expect(page.locator("#app-status")).to_have_text(
            re.compile("verified against the ledger"), timeout=UI_TIMEOUT_MS
        )
        page.click("#tab-claims")
        refused = page.locator("#claims .refused")
        expect(refused.first).to_contain_text(f"the node at {proxy.url}")
        expect(page.locator("#claims")).to_contain_text(
            "the consent differs from what was signed on the ledger"
        )
        expect(page.locator("#claims")).to_contain_text(
            "the decision differs from what the insurer put on the ledger"
        )
        expect(page.locator("#claims")).to_contain_text("the node's audit trail does not show it")
        expect(page.locator("#claims li.consent")).to_have_count(0)
        # The lied-about decision is not shown, so the claim it decided is not believed either.
        expect(page.locator(f'#claims li.claim[data-claim-id="{decided_id}"]')).to_have_count(0)
        shown = page.locator(f'#claims li.claim[data-claim-id="{read_id}"]')
        expect(shown.locator(".claim-reads-none")).to_have_text("Nothing read yet.")
        expect(page.locator("#claims")).not_to_contain_text("Approved")
        assert proxy.posts == []  # nothing was signed and sent
