"""The patient's web app, served by every health node at `/app/` (docs/adr/0018-web-app-foundation.md).

The app is built from `web/` by the set-up (`scripts/bootstrap.sh`: `npm ci`, then Vite) into
`web/dist/`; `[api] app_dir` (or `MEDLEDGER_API_APP_DIR`) points elsewhere. This module serves
that directory and nothing else, the way a careful static server does:

- only regular files under the directory, by a path of plain segments (no `..`, no hidden
  files, no symlink leading out of it); a directory is never listed, an unknown extension is
  never served (404 for all of these, as for a missing file);
- each file with its content type from one table (JavaScript and WebAssembly exactly as browsers
  require for modules), `X-Content-Type-Options: nosniff`;
- every answer with a Content-Security-Policy that allows the app's own scripts, styles and API
  calls only, and WebAssembly compilation (`'wasm-unsafe-eval'`: libsodium is WebAssembly), no
  inline script, no framing, no other origin;
- `index.html` never cached (it names the current build), Vite's hashed `assets/` cached for good.

A node whose app was not built answers `/app/` with a page saying so and how to build it (503:
the node is up, this part of it is not), rather than a bare 404.

The routes are public (`Access.PUBLIC`): the app holds no secret, and everything it asks the
node afterwards goes through the API's own access rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from medledger.node.auth import Access, add_route
from medledger.node.config import NodeConfig

APP_PREFIX: Final = "/app/"
#: The checkout's build output, used when `[api] app_dir` is empty.
DEFAULT_APP_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "dist"
#: Longest request path segment count and length we look up (a bound on work per request).
APP_PATH_SEGMENTS_MAX: Final = 8
APP_PATH_CHARS_MAX: Final = 256

CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

NOT_BUILT_PAGE: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>medledger: the patient's app is not built</title></head>
<body>
<h1>The patient's app is not built on this node</h1>
<p>This node serves the patient's web app from the checkout's <code>web/dist/</code> (or
<code>[api] app_dir</code>), where no build was found.</p>
<p>Build it from the medledger checkout with <code>bash scripts/bootstrap.sh</code> (it installs
Node.js and npm when they are missing, then runs <code>npm ci</code> and the Vite build in
<code>web/</code>), or point <code>[api] app_dir</code> at a built copy, then reload this page.</p>
</body>
</html>
"""


def resolve_app_dir(config: NodeConfig) -> Path:
    """Where the built app is: `[api] app_dir` (relative to the home) or the checkout's `web/dist`."""
    return config.resolve(config.api.app_dir) if config.api.app_dir else DEFAULT_APP_DIR


def _headers(content_type: str, *, immutable: bool) -> dict[str, str]:
    cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
    return {**SECURITY_HEADERS, "Content-Type": content_type, "Cache-Control": cache}


def _not_found() -> web.Response:
    return web.Response(
        status=404, text="not found\n", headers=_headers("text/plain; charset=utf-8", immutable=False)
    )


def find_app_file(root: Path, relative: str) -> Path | None:
    """The regular file `relative` names under `root`, or None: never a directory, a hidden
    file, a file of an unknown type, or anything a `..` or a symlink would reach outside `root`."""
    if len(relative) > APP_PATH_CHARS_MAX:
        return None
    segments = relative.split("/") if relative else ["index.html"]
    if len(segments) > APP_PATH_SEGMENTS_MAX:
        return None
    if any(not s or s.startswith(".") or "\\" in s or "\x00" in s for s in segments):
        return None
    if Path(segments[-1]).suffix.lower() not in CONTENT_TYPES:
        return None
    try:
        base = root.resolve(strict=True)
        path = base.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def add_app_routes(app: web.Application, config: NodeConfig) -> None:
    """Serve the built app at `/app/` (and send `/app` there)."""
    root = resolve_app_dir(config)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(APP_PREFIX)

    async def serve(request: web.Request) -> web.StreamResponse:
        relative = request.match_info.get("path", "")
        if not (root / "index.html").is_file():
            # The page names no path of this machine: whoever asks is anyone.
            headers = _headers(CONTENT_TYPES[".html"], immutable=False)
            return web.Response(status=503, text=NOT_BUILT_PAGE, headers=headers)
        path = find_app_file(root, relative)
        if path is None:
            return _not_found()
        # Vite names what it builds under assets/ by content hash: such a file never changes.
        immutable = relative.startswith("assets/")
        headers = _headers(CONTENT_TYPES[path.suffix.lower()], immutable=immutable)
        # FileResponse reads off the event loop (sendfile) and answers conditional and range requests.
        return web.FileResponse(path, headers=headers)

    add_route(app, "GET", "/app", redirect, Access.PUBLIC)
    add_route(app, "GET", APP_PREFIX, serve, Access.PUBLIC)
    add_route(app, "GET", APP_PREFIX + "{path:.+}", serve, Access.PUBLIC)
