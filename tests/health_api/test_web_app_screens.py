"""The patient's web app end to end: Debian's Chromium (Playwright) against real node processes.

A clinic and a hospital run as two validator processes. The page opens a key file, registers,
follows and verifies the chain from the genesis the link pins, and shows the records the clinic
adds, live (decrypted in the page, values as written, a chart of the repeated glucose, documents
whose attachments download, and a correction the patient asked for in the page, as versions); an
inquiry the hospital files appears without a reload; the patient narrows it to fewer record types
and approves (a grant signed in the page); the hospital reads what was granted and nothing else,
and its read appears in the access history; the patient revokes, and the hospital reads nothing
more; a representative is added and removed; the records export as a FHIR R4 Bundle, as written.
No request carries the key or a record's plaintext; no console error (a CSP violation is one).

A lying node (`lying_proxy.LyingProxy` in front of the clinic's node) rewrites a record and an
inquiry it serves and hides a record: the page refuses each, names the node, and shows neither;
one that substitutes an institution's key (in its listing and its genesis) is not believed at all.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from health_harness import PASSPHRASE, HealthNet, Institution, make_patient_key, patient_cli, request
from lying_proxy import LyingProxy
from playwright.sync_api import Browser, Page, expect, sync_playwright

from medledger.chain.codec import decode, encode
from medledger.chain.types import decode_genesis as decode_chain_genesis
from medledger.chain.types import encode_genesis as encode_chain_genesis
from medledger.crypto import Identity
from medledger.health.app import decode_genesis, encode_genesis
from medledger.health.types import InquiryState, RecordState, compute_patient_id

WEB: Final = Path(__file__).resolve().parents[2] / "web"
BUILT_APP: Final = WEB / "dist"
ARTIFACTS: Final = WEB.parent / ".artifacts" / "app"
UI_TIMEOUT_MS: Final = 60_000

GLUCOSE: Final = {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}


def glucose(value: float, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [GLUCOSE]},
        "subject": {"reference": "Patient/synthetic-web"},
        "effectiveDateTime": f"{day}T08:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
        "referenceRange": [
            {"low": {"value": 3.9, "unit": "mmol/L"}, "high": {"value": 5.6, "unit": "mmol/L"}}
        ],
    }


IMMUNIZATION: Final = {
    "resourceType": "Immunization",
    "status": "completed",
    "vaccineCode": {
        "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza, seasonal"}]
    },
    "patient": {"reference": "Patient/synthetic-web"},
    "occurrenceDateTime": "2024-10-02",
    "lotNumber": "SYN-4711",
}
CONDITION: Final = {
    "resourceType": "Condition",
    "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    },
    "code": {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}
        ]
    },
    "subject": {"reference": "Patient/synthetic-web"},
    "onsetDateTime": "2019-06-01",
}
LETTER_TEXT: Final = "Discharge letter: synthetic, for the browser test."
DOCUMENT: Final = {
    "resourceType": "DocumentReference",
    "status": "current",
    "description": "Discharge letter",
    "subject": {"reference": "Patient/synthetic-web"},
    "content": [
        {
            "attachment": {
                "contentType": "text/plain",
                "title": "letter.txt",
                "data": base64.b64encode(LETTER_TEXT.encode()).decode(),
            }
        }
    ],
}


REPORT_BYTES: Final = b"%PDF-1.4 synthetic lab report\n" + bytes(range(256)) * 40


def upload_blob(institution: Institution, data: bytes) -> str:
    """Upload an attachment to the institution's node; its `urn:medledger:blob:` URL."""
    headers = {**institution.auth, "Content-Type": "application/octet-stream"}
    reply = request(institution.url, "POST", "/v1/health/institution/blobs", body=data, headers=headers)
    assert reply.status == 201, reply
    return str(reply.json()["url"])


def report(url: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "description": "Lab report",
        "subject": {"reference": "Patient/synthetic-web"},
        "content": [{"attachment": {"contentType": "application/pdf", "title": "report.pdf", "url": url}}],
    }


def launch(playwright: Any) -> Browser:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).is_file(), "Debian's chromium is not installed: run scripts/bootstrap.sh dev"
    browser: Browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    return browser


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert (BUILT_APP / "index.html").is_file(), "web/dist is not built: run scripts/bootstrap.sh"
    with sync_playwright() as playwright:
        launched = launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


def genesis_hash(url: str) -> str:
    return str(request(url, "GET", "/v1/proofs/genesis").json()["hash"])


def open_key(page: Page, url: str, key_file: Path) -> None:
    page.goto(f"{url}/app/#genesis={genesis_hash(url)}")
    expect(page.locator("#status")).to_have_text(re.compile("^Ready"), timeout=UI_TIMEOUT_MS)
    page.set_input_files("#key-file", key_file)
    page.fill("#import-passphrase", PASSPHRASE)
    page.click("#import-form button")


def shoot(page: Page, name: str) -> None:
    """Each screen at 1280 and 360 px wide."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=ARTIFACTS / f"{name}-{width}.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_patient_sees_verified_records_and_controls_who_reads_them(
    clinic_and_hospital: HealthNet, browser: Browser, tmp_path: Path
) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    secrets = [s.hex() for s in identity.secrets()] + [
        base64.b64encode(s).decode() for s in identity.secrets()
    ]
    requests: list[tuple[str, str, bytes]] = []
    problems: list[str] = []

    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.on("request", lambda r: requests.append((r.url, r.method, r.post_data_buffer or b"")))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)

    # Keys, then registration signed in the page.
    open_key(page, clinic.url, key_file)
    expect(page.locator("#register")).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Before registering, the page's signed read of the patient is refused (403): that is how it
    # learns it must register; the browser logs that refusal, and it is the only one all along.
    assert refused == [f"{clinic.url}/v1/health/patients/{patient_id}"]
    expected_console = "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    page.click("#register")
    expect(page.locator("#app-status")).to_have_text(
        re.compile("verified against the ledger"), timeout=UI_TIMEOUT_MS
    )
    expect(page.locator("#records")).to_contain_text("No records yet")

    # The clinic adds records; a correction supersedes one (the patient asks, the clinic accepts).
    values = {"2024-01-05": 5.4, "2024-03-09": 7.1, "2024-06-20": 6.2}
    glucose_ids = {day: clinic.add_record(patient_id, glucose(v, day)) for day, v in values.items()}
    immunization_id = clinic.add_record(patient_id, IMMUNIZATION)
    clinic.add_record(patient_id, CONDITION)
    clinic.add_record(patient_id, DOCUMENT)
    report_resource = report(upload_blob(clinic, REPORT_BYTES))
    clinic.add_record(patient_id, report_resource)
    net.sync()
    # New records arrive live (no reload); the patient asks, in the page, to correct one (the text
    # sealed here for the clinic, which opens it), and the clinic's correction arrives live too.
    records = page.locator("#records")
    expect(records.locator("li.record")).to_have_count(7, timeout=UI_TIMEOUT_MS)
    wrong = records.locator(f'li.record[data-record-id="{glucose_ids["2024-06-20"]}"]')
    wrong.locator("details.ask-correction summary").click()
    wrong.get_by_label(re.compile("What is wrong")).fill("La valeur était 6,0 — pas 6,2")
    wrong.locator("form.amend button").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile("Asking clinic to correct the record: done, and verified"), timeout=UI_TIMEOUT_MS
    )
    net.sync()
    asked = clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]
    (amendment,) = [a for a in asked if a["patient_id"] == patient_id]
    assert (amendment["record_id"], amendment["text"]) == (
        glucose_ids["2024-06-20"],
        "La valeur était 6,0 — pas 6,2",
    )
    accepted = clinic.post(
        f"/v1/health/institution/amendments/{amendment['amendment_id']}/accept",
        {"resource": glucose(6.0, "2024-06-20")},
    )
    assert accepted.status == 201, accepted
    net.sync()

    # Decrypted here, values as written, each verified.
    expect(records.locator("li.record")).to_have_count(7, timeout=UI_TIMEOUT_MS)
    observations = records.locator("li.record-observation")
    expect(observations).to_have_count(3)
    expect(records.locator("details.versions")).to_have_count(1, timeout=UI_TIMEOUT_MS)  # the correction
    # Newest first, current versions only (6.2 is the earlier version, under its correction).
    shown = observations.locator(":scope > div.record-body > p.record-value")
    expect(shown).to_have_text(["6.0 mmol/L", "7.1 mmol/L", "5.4 mmol/L"])  # 6.0 as written
    expect(observations.first).to_contain_text("Reference range: 3.9–5.6 mmol/L")
    expect(records.locator("li.record-immunization")).to_contain_text("Influenza, seasonal")
    expect(records.locator("li.record-immunization")).to_contain_text("Lot: SYN-4711")
    expect(records.locator("li.record-condition")).to_contain_text("Diabetes mellitus type 2")
    expect(records.locator(".verified")).to_have_count(8)  # seven current records and one earlier version
    corrected = observations.filter(has=page.locator("details.versions"))
    expect(corrected.locator("details.versions summary")).to_have_text("Corrected: 1 earlier version(s)")
    expect(corrected.locator("details.versions")).to_contain_text("6.2 mmol/L")
    expect(records.locator("svg.chart")).to_have_count(1)
    expect(records.locator("figure.series figcaption")).to_contain_text("3 measurements")
    with page.expect_download(timeout=UI_TIMEOUT_MS) as letter:
        records.locator("li.record-document button", has_text="letter.txt").click()
    letter_path = tmp_path / "letter.txt"
    letter.value.save_as(letter_path)
    assert letter_path.read_text() == LETTER_TEXT
    # An attachment kept on the network: manifest and chunks checked, decrypted in the page.
    with page.expect_download(timeout=UI_TIMEOUT_MS) as pdf:
        records.locator("li.record-document button", has_text="report.pdf").click()
    pdf_path = tmp_path / "report.pdf"
    pdf.value.save_as(pdf_path)
    assert pdf_path.read_bytes() == REPORT_BYTES
    shoot(page, "records")

    # The right of access: ask the hospital for what it holds (a tx signed in the page).
    page.select_option("#records-request-institution", label="hospital (hospital)")
    page.fill("#records-request-from", "2020-01-01")
    page.click("#records-request-form button")
    expect(page.locator("#app-status")).to_have_text(
        re.compile("Asking hospital.*done, and verified"), timeout=UI_TIMEOUT_MS
    )
    net.sync()
    asked_of = hospital.get("/v1/health/institution/records-requests?status=open").json()["requests"]
    assert [(r["patient_id"], r["from_ms"]) for r in asked_of] == [(patient_id, 1_577_836_800_000)]

    # An inquiry arrives live; the patient narrows it to fewer types and approves.
    page.click("#tab-requests")
    reply = hospital.post(
        "/v1/health/institution/inquiries",
        {
            "patient_id": patient_id,
            "purpose": "TREAT",
            "reason": "Suivi après l'hospitalisation",
            "record_types": ["Immunization", "Observation"],
        },
    )
    assert reply.status == 201, reply
    inquiry_id = reply.json()["inquiry_id"]
    card = page.locator(f'li.inquiry[data-inquiry-id="{inquiry_id}"]')
    expect(card).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(card).to_contain_text("hospital (hospital) asks to see your records to treat you")
    expect(card.locator("q.reason")).to_have_text("Suivi après l'hospitalisation")
    expect(card.locator(".share-count")).to_contain_text("Approving shares 5 of the 5 record(s)")
    shoot(page, "requests")
    # By keyboard: the checkbox toggled with Space, the approval with Enter.
    card.get_by_label(re.compile(r"\(Immunization\)")).focus()
    page.keyboard.press("Space")
    expect(card.locator(".share-count")).to_contain_text("Approving shares 4 of the 5 record(s)")
    # A live update re-renders the screens while the patient decides: the narrowing stays as it was.
    verified_at = page.locator("#verified-height").inner_text()
    clinic.add_record(patient_id, {**CONDITION, "onsetDateTime": "2021-02-03"})
    expect(page.locator("#verified-height")).not_to_have_text(verified_at, timeout=UI_TIMEOUT_MS)
    expect(page.locator("#records li.record-condition")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    expect(card.get_by_label(re.compile(r"\(Immunization\)"))).not_to_be_checked()
    expect(card.locator(".share-count")).to_contain_text("Approving shares 4 of the 5 record(s)")
    card.locator("button.approve").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#app-status")).to_have_text(re.compile("done, and verified"), timeout=UI_TIMEOUT_MS)
    expect(card).to_have_count(0)

    # The grant itself is narrowed on the ledger (health.grant_narrowed): Observations only, so
    # no later Immunization is ever sealed for the hospital under it.
    net.sync()
    (granted,) = hospital.get(f"/v1/health/patients/{patient_id}/grants").json()["grants"]
    assert granted["scope"]["record_types"] == ["Observation"], granted
    # The hospital reads what was granted, and nothing else; the read shows in the history, live.
    assert hospital.read(glucose_ids["2024-01-05"]).status == 200
    assert hospital.read(immunization_id).status == 403
    page.focus("#tab-history")
    page.keyboard.press("Enter")
    history = page.locator("#history")
    expect(history.locator("li.event-read")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(history.locator("li.event-read")).to_contain_text(
        "hospital (hospital) read your records, 1 record(s)"
    )
    expect(history.locator("li.event-grant")).to_contain_text("You approved a request")
    expect(history.locator("li.event-inquiry")).to_contain_text("asked to see your records")
    expect(history.locator("li.event .verified")).to_have_count(history.locator("li.event").count())
    shoot(page, "history")

    # Who can see my data: the grant, and its revocation.
    page.click("#tab-grants")
    grants = page.locator("#grants")
    expect(grants.locator("li.grant")).to_have_count(1)
    expect(grants).to_contain_text("hospital (hospital) may read 4 of your records")
    expect(grants).to_contain_text("cannot undo a read that already happened")
    shoot(page, "grants")
    grants.locator("button.revoke").click()
    expect(page.locator("#app-status")).to_have_text(
        re.compile("Revoking.*done, and verified"), timeout=UI_TIMEOUT_MS
    )
    expect(grants.locator("li.grant")).to_have_count(0)
    net.sync()
    assert hospital.read(glucose_ids["2024-03-09"]).status == 403

    # Representatives: add one and remove it.
    page.click("#tab-representatives")
    representative = make_patient_key(tmp_path / "representative.key").public.sign_key.hex()
    page.fill("#representative-key", representative)
    page.click("#representative-form button")
    expect(page.locator("#representatives li code")).to_have_text(representative, timeout=UI_TIMEOUT_MS)
    shoot(page, "representatives")
    page.locator("#representatives li button").click()
    expect(page.locator("#representatives")).to_contain_text(
        "You have no representative", timeout=UI_TIMEOUT_MS
    )

    # Export: the current version of every record, as written, in a FHIR R4 Bundle.
    page.click("#tab-records")
    with page.expect_download(timeout=UI_TIMEOUT_MS) as exported:
        page.click("#export-records")
    bundle_path = tmp_path / "bundle.json"
    exported.value.save_as(bundle_path)
    bundle_text = bundle_path.read_text()
    assert '"value": 6.0' in bundle_text  # each resource as the clinic wrote it, digits and all
    bundle = json.loads(bundle_text)
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    resources = [e["resource"] for e in bundle["entry"]]
    assert sorted(r["valueQuantity"]["value"] for r in resources if r["resourceType"] == "Observation") == [
        5.4,
        6.0,
        7.1,
    ]
    assert [r for r in resources if r["resourceType"] == "Immunization"] == [IMMUNIZATION]
    documents = [r for r in resources if r["resourceType"] == "DocumentReference"]
    assert sorted(documents, key=lambda r: str(r["description"])) == [DOCUMENT, report_resource]

    # Installable: the manifest is served, and the service worker caches the app shell only.
    manifest = request(clinic.url, "GET", "/app/manifest.webmanifest")
    assert (manifest.status, manifest.content_type) == (200, "application/manifest+json")
    assert manifest.json()["start_url"] == "/app/"
    cached: list[str] = page.evaluate(
        """async () => {
            await navigator.serviceWorker.ready;
            const urls = [];
            for (const name of await caches.keys())
                for (const r of await (await caches.open(name)).keys()) urls.push(r.url);
            return urls;
        }"""
    )
    assert f"{clinic.url}/app/" in cached
    assert all(u.startswith(f"{clinic.url}/app/") for u in cached), cached  # never the API

    # Nothing secret or plaintext left the page, and nothing went to another origin.
    origin = f"{clinic.url}/"
    plaintexts = [
        "Glucose",
        "SYN-4711",
        "Diabetes",
        LETTER_TEXT,
        "synthetic lab report",
        "Suivi",
        "La valeur",
        PASSPHRASE,
    ]
    for request_url, method, body in requests:
        assert request_url.startswith(origin), request_url
        for secret in [*secrets, *plaintexts]:
            assert secret not in request_url, request_url
            assert secret.encode() not in body, (method, request_url, secret)
    assert [p for p in problems if p != expected_console] == [], problems
    assert problems.count(expected_console) <= 1, problems
    assert len(refused) == 1, refused


def _rewrite_lies(patient_id: str, hidden: str) -> Any:
    """Serve one record with another commitment, hide another, and an inquiry with another purpose."""

    def rewrite(path: str, body: Any) -> Any:
        if path == f"/v1/health/patients/{patient_id}/records" and body.get("records"):
            body["records"] = [r for r in body["records"] if r["record_id"] != hidden]
            item = body["records"][0]
            record = decode(RecordState, base64.b64decode(item["encoded"]), max_bytes=1 << 20)
            item["encoded"] = base64.b64encode(
                encode(dataclasses.replace(record, commitment=bytes(32)))
            ).decode()
        if path == f"/v1/health/patients/{patient_id}/inquiries" and body.get("inquiries"):
            item = body["inquiries"][0]
            inquiry = decode(InquiryState, base64.b64decode(item["encoded"]), max_bytes=1 << 20)
            item["encoded"] = base64.b64encode(
                encode(dataclasses.replace(inquiry, purpose="ETREAT"))
            ).decode()
        return body

    return rewrite


def test_invalid_record_and_inquiry_from_a_lying_node_are_refused_in_the_page(
    clinic_and_hospital: HealthNet, browser: Browser, tmp_path: Path
) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key_file, clinic.url, "register")
    net.sync()
    honest = clinic.add_record(patient_id, glucose(5.4, "2024-01-05"))
    forged = clinic.add_record(patient_id, glucose(8.8, "2024-02-05"))
    hidden = clinic.add_record(patient_id, IMMUNIZATION)
    reply = hospital.post(
        "/v1/health/institution/inquiries",
        {
            "patient_id": patient_id,
            "purpose": "TREAT",
            "reason": "follow-up",
            "record_types": ["Observation"],
        },
    )
    assert reply.status == 201, reply
    net.sync()
    listed = clinic.get(f"/v1/health/patients/{patient_id}/records").json()["records"]
    first = next(r["record_id"] for r in listed if r["record_id"] != hidden)
    assert first in (honest, forged)
    kept_value = "5.4 mmol/L" if first == forged else "8.8 mmol/L"
    lied_value = "8.8 mmol/L" if first == forged else "5.4 mmol/L"

    with LyingProxy(clinic.url) as proxy:
        proxy.rewrite = _rewrite_lies(patient_id, hidden)
        proxy.refuse_prefixes = ("/v1/events/stream",)
        page = browser.new_page(viewport={"width": 360, "height": 800})
        open_key(page, proxy.url, key_file)
        refused = page.locator("#records .refused")
        expect(refused).to_contain_text(f"the node at {proxy.url}", timeout=UI_TIMEOUT_MS)
        expect(refused).to_contain_text("differs from what its author put on the ledger")
        expect(refused).to_contain_text(f"record {hidden[:16]}…: the ledger holds this record")
        expect(refused).to_contain_text("and the node did not list it")
        records = page.locator("#records li.record")
        expect(records).to_have_count(1)
        expect(records).to_contain_text(kept_value)
        expect(page.locator("#records")).not_to_contain_text(lied_value.split(" ", maxsplit=1)[0] + " mmol/L")
        page.click("#tab-requests")
        expect(page.locator("#requests .refused")).to_contain_text(
            "the inquiry differs from what its requester put on the ledger"
        )
        expect(page.locator("#requests li.inquiry")).to_have_count(0)
        expect(page.locator("#requests")).to_contain_text("No pending requests")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "lying-node-360.png", full_page=True)
        assert proxy.posts == []  # nothing was signed and sent


def test_invalid_substituted_institution_key_from_a_lying_node_is_refused_in_the_page(
    clinic_and_hospital: HealthNet, browser: Browser, tmp_path: Path
) -> None:
    """A node that swaps the hospital's encryption key for an attacker's (so that a grant would
    re-seal the patient's records for the attacker) must change the genesis to make the page use
    it: the page takes institutions from the genesis the link pinned, and refuses another one."""
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key_file = tmp_path / "patient.key"
    identity = make_patient_key(key_file)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key_file, clinic.url, "register")
    net.sync()
    clinic.add_record(patient_id, glucose(5.4, "2024-01-05"))
    reply = hospital.post(
        "/v1/health/institution/inquiries",
        {
            "patient_id": patient_id,
            "purpose": "TREAT",
            "reason": "follow-up",
            "record_types": ["Observation"],
        },
    )
    assert reply.status == 201, reply
    net.sync()
    pinned = genesis_hash(clinic.url)  # what the patient's link carries
    attacker = Identity.generate().public.enc_key

    def substitute(path: str, body: Any) -> Any:
        if path == "/v1/health/institutions":
            for item in body["institutions"]:
                if item["name"] == "hospital":
                    item["enc_key"] = attacker.hex()
        if path == "/v1/proofs/genesis":
            genesis = decode_chain_genesis(base64.b64decode(body["genesis"]), max_bytes=1 << 24)
            app = decode_genesis(genesis.app_state)
            swapped = tuple(
                dataclasses.replace(i, enc_key=attacker) if i.name == "hospital" else i
                for i in app.institutions
            )
            forged = dataclasses.replace(
                genesis, app_state=encode_genesis(dataclasses.replace(app, institutions=swapped))
            )
            body = {
                "genesis": base64.b64encode(encode_chain_genesis(forged)).decode(),
                "hash": forged.hash().hex(),
            }
        return body

    with LyingProxy(clinic.url) as proxy:
        proxy.rewrite = substitute
        proxy.refuse_prefixes = ("/v1/events/stream",)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{proxy.url}/app/#genesis={pinned}")
        expect(page.locator("#status")).to_have_text(re.compile("^Ready"), timeout=UI_TIMEOUT_MS)
        page.set_input_files("#key-file", key_file)
        page.fill("#import-passphrase", PASSPHRASE)
        page.click("#import-form button")
        status = page.locator("#app-status")
        expect(status).to_have_text(
            re.compile(f"The node at {re.escape(proxy.url)} serves another network"), timeout=UI_TIMEOUT_MS
        )
        expect(page.locator("#screens")).to_be_hidden()  # nothing shown, nothing to approve
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "lying-genesis-1280.png", full_page=True)
        assert proxy.posts == []
