"""The patient's web app served by a real health node at `/app/` (node/web_app.py, ADR 0018).

Two node processes: one serving the checkout's build (`web/dist`, made by scripts/bootstrap.sh),
one serving a directory the test lays out, to show what is refused (a directory listing, hidden
files, unknown types, a way out of the directory) and the page a node without a build shows.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import nacl.pwhash.argon2id
from health_harness import NODE_ENV, PASSPHRASE, Reply

from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet
from medledger.node.web_app import CONTENT_SECURITY_POLICY

BUILT_APP: Final = Path(__file__).resolve().parents[2] / "web" / "dist"


@contextlib.contextmanager
def health_node(out: Path, env: dict[str, str]) -> Iterator[str]:
    """One health validator (a clinic) as its own process; yields its API URL, always stopped."""
    (node,) = create_testnet(
        out,
        validators=1,
        chain_id="medledger-web-app-test",
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
        yield process.wait_ready(60.0)
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
