"""A lying node for tests: an aiohttp proxy in front of a real node that rewrites its JSON answers.

It runs in its own thread and event loop, forwards every request to the real node, and passes each
JSON answer through `rewrite(path, body)`: a dishonest operator, or anyone on the path, could do
the same. It counts the POSTs it forwards (a signed action), so "nothing was signed" is checked
where it matters. Used by the SDK's and the web app's lying-node tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from aiohttp import web

Rewrite = Callable[[str, Any], Any]
PROXY_START_S: Final = 30.0


class LyingProxy:
    """Forwards every request to `target`; JSON answers pass through `rewrite(path, body)`."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.rewrite: Rewrite = lambda path, body: body
        self.posts: list[str] = []
        #: Answer POSTs "committed" without forwarding them (a node that drops the patient's txs).
        self.swallow_posts = False
        #: Answer every tx proof 404 (a node that will not prove what its own blocks hold).
        self.hide_tx_proofs = False
        #: Answer 404 to paths with these prefixes (e.g. an endless event stream the proxy, which
        #: reads each answer whole, cannot pass on).
        self.refuse_prefixes: tuple[str, ...] = ()
        #: Called (in the proxy's thread) with each request's path and query before it is forwarded.
        self.before: Callable[[str], None] = lambda path_qs: None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def __enter__(self) -> LyingProxy:
        self._thread.start()
        assert self._ready.wait(PROXY_START_S), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        assert stop is not None
        self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(PROXY_START_S)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def handle(request: web.Request) -> web.Response:
                # A challenge for a signed read is not a signed action: only tx posts count.
                if request.method == "POST" and request.path != "/v1/auth/challenge":
                    self.posts.append(request.path)
                    if self.swallow_posts:
                        fake = {"tx_id": "00" * 32, "status": "committed", "height": 1, "index": 0}
                        return web.json_response({**fake, "result": {"ok": True, "code": "ok"}})
                self.before(request.path_qs)
                if (
                    self.hide_tx_proofs and request.path.startswith("/v1/proofs/txs/")
                ) or request.path.startswith(self.refuse_prefixes):
                    problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no tx"}
                    return web.json_response(problem, status=404, content_type="application/problem+json")
                headers = {k: v for k, v in request.headers.items() if k in ("Content-Type", "Authorization")}
                async with session.request(
                    request.method, self.target + request.path_qs, data=await request.read(), headers=headers
                ) as upstream:
                    body = await upstream.read()
                    content_type = upstream.content_type
                    if content_type == "application/json":
                        body = json.dumps(self.rewrite(request.path, json.loads(body))).encode()
                    return web.Response(status=upstream.status, body=body, content_type=content_type)

            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()
