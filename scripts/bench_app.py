#!/usr/bin/env python3
"""Benchmark the patient's web app: time to first render of the records screen, and to verify them.

Machine: whatever runs it (printed: CPU count, platform). The node, Chromium and this script share
this machine's cores.

Setup, in a temporary directory:

1. A health testnet of one validator, a clinic (`medledger start`, one process on loopback, block
   interval 50 ms), started as the browser tests start theirs (`tests/health_api/health_harness.py`).
2. A patient key (argon2id at its minimum cost, as in the tests), registered with the Python SDK
   (`medledger patient register`), so the page has nothing to sign.
3. `--records` records of that patient added by the clinic through the institution API
   (`POST /v1/health/institution/records`, each committed before the measurement starts):
   glucose Observations with units and reference ranges on distinct days (one chart), with an
   Immunization and a Condition every tenth record. Each is sealed by the node for the patient.
4. Debian's Chromium (`/usr/bin/chromium`, headless, driven by Playwright as the browser tests
   drive it) opens `/app/#genesis=…` from the node and the patient's key file.

Measured, never asserted, by the page itself (`performance.measure`, always on in `web/src`):

- `first_render_ms`: `medledger:first-render`, from the key being open (`openApp`) to the records
  screen rendered into the page: pinning the genesis, following and verifying every block from it
  (light client), the signed reads of the patient, records, inquiries, grants and audit trail, the
  checks and decryption below, and building the screens' DOM (the browser paints just after).
  The passphrase's argon2id is before it and not counted.
- `decrypt_verify_ms`: `medledger:records-verify`, within it, checking each of the records against
  the verified chain (its tx in a verified block, signed by its author, its body byte for byte)
  and opening it with the patient's key (sealed box, XChaCha20-Poly1305, binding and commitment).

The script then checks the page shows every record (`li.record`), verified. Targets (issue 15):
first render under 1,500 ms and decrypt-and-verify under 1,000 ms with 200 records. The last line
printed is one JSON object: {"bench": "app", "records": …, "first_render_ms": …,
"decrypt_verify_ms": …, …setup fields}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "health_api"))

from health_harness import (
    BLOCK_INTERVAL_MS,
    HealthNet,
    make_patient_key,
    patient_cli,
    start_health_net,
)
from playwright.sync_api import expect, sync_playwright
from test_web_app_screens import (
    BUILT_APP,
    CONDITION,
    IMMUNIZATION,
    UI_TIMEOUT_MS,
    glucose,
    launch,
    open_key,
)

from medledger.health.types import compute_patient_id

#: Records are added by a few clients at once, so that a block carries several.
WRITERS: Final = 8


def make_resource(index: int) -> dict[str, Any]:
    resource: dict[str, Any]
    if index % 10 == 8:
        resource = IMMUNIZATION
    elif index % 10 == 9:
        resource = CONDITION
    else:
        day = time.strftime("%Y-%m-%d", time.gmtime(1_600_000_000 + index * 86_400))
        resource = glucose(round(4.0 + (index % 37) / 10, 1), day)
    return resource


def add_records(net: HealthNet, patient_id: str, count: int) -> None:
    clinic = net["clinic"]
    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda i: clinic.add_record(patient_id, make_resource(i)), range(count)))
    net.sync()


def measure(page: Any, name: str) -> float:
    """The page's first `performance.measure` of that name, in ms."""
    duration = page.evaluate(
        "(name) => { const m = performance.getEntriesByName(name, 'measure');"
        " return m.length ? m[0].duration : null; }",
        name,
    )
    if duration is None:
        raise SystemExit(f"the page recorded no {name!r} measure (is web/dist built from this checkout?)")
    return round(float(duration), 1)


def run(records: int) -> dict[str, Any]:
    if not (BUILT_APP / "index.html").is_file():
        raise SystemExit("web/dist is not built: run `cd web && npm run build`")
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        key_file = Path(tmp) / "patient.key"
        identity = make_patient_key(key_file)
        patient_id = compute_patient_id(identity.public.sign_key).hex()
        with start_health_net(Path(tmp) / "net", {"clinic": "clinic"}) as net:
            clinic = net["clinic"]
            patient_cli(key_file, clinic.url, "register")
            started = time.monotonic()
            add_records(net, patient_id, records)
            took_s = time.monotonic() - started
            print(f"setup: {records} records added by the clinic in {took_s:.1f} s", flush=True)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    open_key(page, clinic.url, key_file)
                    expect(page.locator("#records li.record")).to_have_count(records, timeout=UI_TIMEOUT_MS)
                    expect(page.locator("#records .verified")).to_have_count(records)
                    first_render_ms = measure(page, "medledger:first-render")
                    decrypt_verify_ms = measure(page, "medledger:records-verify")
                    shown = page.locator("#verified-height").text_content() or ""
                    height = int(shown.split(" ")[-1])
                finally:
                    browser.close()
    return {
        "bench": "app",
        "records": records,
        "first_render_ms": first_render_ms,
        "decrypt_verify_ms": decrypt_verify_ms,
        "blocks_verified": height,
        "block_interval_ms": BLOCK_INTERVAL_MS,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200, help="records of the patient (default 200)")
    args = parser.parse_args()
    if args.records < 1:
        parser.error("--records must be at least 1")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(
        f"setup: one clinic node (block interval {BLOCK_INTERVAL_MS} ms), a registered patient, "
        f"{args.records} records added through the institution API, headless Chromium driven by Playwright"
    )
    print(
        "measured by the page: first_render_ms = key open → records screen rendered (genesis, every "
        "block verified, signed reads, checks, decryption, DOM); decrypt_verify_ms = the records checked "
        "against the verified chain and opened with the patient's key"
    )
    summary = run(args.records)
    print(
        f"first render {summary['first_render_ms']} ms (target < 1500), decrypt and verify "
        f"{summary['decrypt_verify_ms']} ms (target < 1000), {summary['blocks_verified']} blocks followed"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
