"""The patient's web app and a real health node (node/web_app.py, ADR 0018).

A node serves the checkout's build (`web/dist`, made by scripts/bootstrap.sh) at `/app/`; another
serves a directory the test lays out, to show what is refused (a directory listing, hidden files,
unknown types, a way out of the directory) and the page a node without a build shows; and a node
accepts and applies transactions the app's TypeScript code signed.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import nacl.pwhash.argon2id
from health_harness import NODE_ENV, PASSPHRASE, Reply, request
from playwright.sync_api import expect, sync_playwright

from medledger.crypto import Identity, decode_identity, save_identity
from medledger.health.types import compute_patient_id
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet
from medledger.node.web_app import CONTENT_SECURITY_POLICY

WEB: Final = Path(__file__).resolve().parents[2] / "web"
BUILT_APP: Final = WEB / "dist"
#: Screenshots the browser test leaves for people to look at (not committed).
ARTIFACTS: Final = WEB.parent / ".artifacts" / "app"
CHAIN_ID: Final = "medledger-web-app-test"


@contextlib.contextmanager
def health_node(out: Path, env: dict[str, str]) -> Iterator[str]:
    """One health validator (a clinic) as its own process; yields its API URL, always stopped."""
    with health_node_and_token(out, env) as (url, _token):
        yield url


@contextlib.contextmanager
def health_node_and_token(out: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """One health validator (a clinic) and its API token; the process is always stopped."""
    (node,) = create_testnet(
        out,
        validators=1,
        chain_id=CHAIN_ID,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=["clinic"],
        roles=["clinic"],
    )
    process = NodeProcess(node.home, env={**NODE_ENV, **env}, use_config_ports=True)
    try:
        process.start()
        yield process.wait_ready(60.0), node.api_token
    finally:
        process.stop()


def get(url: str, path: str) -> tuple[Reply, dict[str, str]]:
    """GET without credentials (the app is public); the reply and its headers (lower-case)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname == "127.0.0.1"
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        content_type = headers.get("content-type", "").split(";", 1)[0].strip()
        return Reply(response.status, content_type, body), headers
    finally:
        connection.close()


def test_a_health_node_serves_the_built_app_with_its_types_and_policy(tmp_path: Path) -> None:
    index = BUILT_APP / "index.html"
    assert index.is_file(), "web/dist is not built: run scripts/bootstrap.sh (npm ci, then the Vite build)"
    with health_node(tmp_path / "net", {}) as url:
        page, headers = get(url, "/app/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert page.body == index.read_bytes()
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-cache"

        # Every file the page names is served, each with the type a browser requires of it.
        referenced = re.findall(r'(?:src|href)="(/app/assets/[^"]+)"', page.body.decode())
        assert any(r.endswith(".js") for r in referenced)
        assert any(r.endswith(".css") for r in referenced)
        for path in referenced:
            asset, asset_headers = get(url, path)
            assert asset.status == 200, path
            assert asset.body == (BUILT_APP / path.removeprefix("/app/")).read_bytes(), path
            expected_type = {".js": "text/javascript", ".css": "text/css"}[Path(path).suffix]
            assert asset.content_type == expected_type, path
            assert "immutable" in asset_headers["cache-control"], path
            assert asset_headers["content-security-policy"] == CONTENT_SECURITY_POLICY

        moved, moved_headers = get(url, "/app")
        assert moved.status == 308
        assert moved_headers["location"] == "/app/"


def test_invalid_app_paths_are_refused_and_an_unbuilt_app_says_how_to_build_it(tmp_path: Path) -> None:
    root = tmp_path / "dist"
    (root / "assets" / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>test app</title>\n")
    (root / "assets" / "app.js").write_text("export {};\n")
    (root / "assets" / "sodium.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (root / "assets" / ".hidden.js").write_text("hidden\n")
    (root / "assets" / "notes.exe").write_text("unknown type\n")
    outside = tmp_path / "outside.js"
    outside.write_text("secret outside the app\n")
    (root / "assets" / "link.js").symlink_to(outside)
    with health_node(tmp_path / "net", {"MEDLEDGER_API_APP_DIR": str(root)}) as url:
        wasm, _ = get(url, "/app/assets/sodium.wasm")
        assert (wasm.status, wasm.content_type) == (200, "application/wasm")
        script, _ = get(url, "/app/assets/app.js")
        assert (script.status, script.content_type) == (200, "text/javascript")
        refused = [
            "/app/assets/",  # a directory: never listed
            "/app/assets/sub",
            "/app/assets/.hidden.js",
            "/app/assets/notes.exe",
            "/app/assets/link.js",  # a symlink out of the directory
            "/app/assets/%2e%2e/%2e%2e/outside.js",
            "/app/assets//app.js",
            "/app/missing.js",
            "/app/" + "a/" * 20 + "x.js",
        ]
        for path in refused:
            reply, headers = get(url, path)
            assert reply.status == 404, path
            assert b"secret" not in reply.body, path
            assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path

        # The build disappears (a fresh checkout before the set-up ran): a page says what to do.
        (root / "index.html").unlink()
        page, headers = get(url, "/app/")
        assert page.status == 503
        assert page.content_type == "text/html"
        assert b"scripts/bootstrap.sh" in page.body
        assert str(tmp_path).encode() not in page.body  # names no path of the machine
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_a_node_accepts_and_applies_transactions_the_web_app_signed(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed: run scripts/bootstrap.sh"
    made = subprocess.run(
        [npm, "run", "-s", "sign-for-node", "--", CHAIN_ID],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    signed = json.loads(made.stdout)
    with health_node_and_token(tmp_path / "net", {}) as (url, token):
        auth = {"Authorization": f"Bearer {token}"}
        for tx in signed["txs"]:  # in order: the representative needs the registered patient
            body = json.dumps({"tx": base64.b64encode(bytes.fromhex(tx["tx"])).decode()}).encode()
            headers = {**auth, "Content-Type": "application/json"}
            reply = request(url, "POST", "/v1/txs?wait_ms=30000", body=body, headers=headers)
            assert reply.status == 200, (tx["kind"], reply)
            result = reply.json()
            assert result["status"] == "committed"
            assert result["tx_id"] == tx["tx_id"]  # the id the app computed before sending
            assert result["result"]["ok"] is True, result  # applied, not refused by the rules
        patient = request(url, "GET", f"/v1/health/patients/{signed['patient_id']}", headers=auth)
        assert patient.status == 200, patient
        state = patient.json()
        assert state["sign_key"] == signed["sign_key"]
        assert state["enc_key"] == signed["enc_key"]
        assert state["representatives"] == [signed["representative"]]


def test_the_page_opens_the_cli_key_file_and_writes_one_python_opens_sending_no_secret(
    tmp_path: Path,
) -> None:
    """In Debian's Chromium (Playwright), against a real node: the key file Python writes as
    `medledger patient keys` does opens in the page and shows the same patient id; a wrong
    passphrase is said in words; the key is kept in IndexedDB only wrapped (a reload asks for
    the passphrase; the exported backup is the same file); an identity the page creates downloads
    as a key file Python opens; forgetting removes it; no request the page makes carries the
    passphrase or a secret, and the node's CSP blocks nothing the app needs (libsodium's
    WebAssembly runs under it)."""
    assert (BUILT_APP / "index.html").is_file(), "web/dist is not built: run scripts/bootstrap.sh"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).is_file(), "Debian's chromium is not installed: run scripts/bootstrap.sh dev"
    identity = Identity.generate()
    passphrase = "a patient's passphrase ✓"
    key_file = tmp_path / "patient.key"
    save_identity(key_file, identity, passphrase.encode())  # the CLI's own call and cost
    secrets = [s.hex() for s in identity.secrets()] + [
        base64.b64encode(s).decode() for s in identity.secrets()
    ]
    new_passphrase = "the page's new passphrase"
    requests: list[tuple[str, str, bytes]] = []
    problems: list[str] = []
    refused: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with health_node(tmp_path / "net", {}) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 360, "height": 800}, accept_downloads=True)
            page.on("request", lambda r: requests.append((r.url, r.method, r.post_data_buffer or b"")))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)
            page.goto(f"{url}/app/")
            expect(page.locator("#status")).to_have_text(re.compile("^Ready"), timeout=30_000)
            page.screenshot(path=ARTIFACTS / "keys-360.png", full_page=True)

            page.set_input_files("#key-file", key_file)
            page.fill("#import-passphrase", passphrase + "?")
            page.click("#import-form button")
            expect(page.locator("#status")).to_have_text(re.compile("does not open"), timeout=30_000)

            page.fill("#import-passphrase", passphrase)
            page.click("#import-form button")
            patient_id = compute_patient_id(identity.public.sign_key).hex()
            expect(page.locator("#patient-id")).to_have_text(patient_id, timeout=30_000)
            expect(page.locator("#fingerprint")).to_have_text(identity.public.fingerprint())

            # Kept in IndexedDB, wrapped: after a reload the page asks for the passphrase only,
            # and the backup it exports is the very file `medledger patient` wrote.
            page.reload()
            expect(page.locator("#status")).to_have_text(re.compile("^Ready"), timeout=30_000)
            expect(page.locator("#unlock-form")).to_be_visible()
            expect(page.locator("#identity")).to_be_hidden()
            page.fill("#unlock-passphrase", passphrase)
            page.click("#unlock-form button[type=submit]")
            expect(page.locator("#patient-id")).to_have_text(patient_id, timeout=30_000)
            # Unlocked: the unlock form folds away; export and forget are one click away.
            expect(page.locator("#unlock-form")).to_be_hidden()
            expect(page.locator("#export-key")).to_be_hidden()
            page.click("#key-stored summary")
            with page.expect_download(timeout=30_000) as exported_info:
                page.click("#export-key")
            exported = tmp_path / "exported.key"
            exported_info.value.save_as(exported)
            assert exported.read_bytes() == key_file.read_bytes()

            # With a key open, the forms for another fold away; the patient unfolds them.
            expect(page.locator("#create-passphrase")).to_be_hidden()
            page.click("#key-forms summary")
            page.fill("#create-passphrase", new_passphrase)
            with page.expect_download(timeout=30_000) as download_info:
                page.click("#create-form button")
            created = tmp_path / "created.key"
            download_info.value.save_as(created)
            opened = decode_identity(created.read_bytes(), new_passphrase.encode())
            expect(page.locator("#patient-id")).to_have_text(compute_patient_id(opened.public.sign_key).hex())
            page.set_viewport_size({"width": 1280, "height": 800})
            page.screenshot(path=ARTIFACTS / "keys-1280.png", full_page=True)
            expect(page.locator("#unlock-form")).to_be_hidden()
            page.click("#key-stored summary")
            page.click("#forget-key")
            # The page says so once the deletion is durable; reloading before that would race it.
            expect(page.locator("#status")).to_have_text(re.compile("no longer keeps"), timeout=30_000)
            page.reload()
            expect(page.locator("#status")).to_have_text(re.compile("^Ready"), timeout=30_000)
            expect(page.locator("#unlock-form")).to_be_hidden()
            expect(page.locator("#key-stored")).to_be_hidden()
        finally:
            browser.close()
    origin = f"{url}/"
    assert requests, "the page made no request at all"
    for request_url, method, body in requests:
        assert request_url.startswith(origin), request_url  # nothing leaves for another origin
        for secret in [passphrase, new_passphrase, *secrets]:
            assert secret not in request_url, request_url
            assert secret.encode() not in body, (method, request_url)
    # Once a key opens, the page asks the node for the patient (a signed read); these keys are not
    # registered, so the node refuses (403) and the page offers to register. Those refusals, and
    # the browser's line for each, are the only ones.
    assert refused, "the page never asked the node for the patient"
    assert all(re.fullmatch(rf"{re.escape(url)}/v1/health/patients/[0-9a-f]{{64}}", r) for r in refused), (
        refused
    )
    forbidden = "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    assert [p for p in problems if p != forbidden] == [], problems  # no CSP violation, no uncaught error
    assert problems.count(forbidden) <= len(refused), problems
