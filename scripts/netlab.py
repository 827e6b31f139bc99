"""Institutions on separate network stacks of one machine: namespaces, veth pairs, a delaying proxy.

This machine's kernel has no `netem` qdisc (`tc qdisc … netem` answers "Specified qdisc kind is
unknown"), so wide-area delay and loss come from the project's own userspace component instead:

- `Namespaces`: one network namespace per institution (`ip netns add`), each joined to the root
  namespace by a veth pair: `10.<net>.<i>.1` on the root side, `10.<net>.<i>.2` inside, where the
  institution's node listens; `10.<net>.0.0/16` is otherwise unreachable, so a site whose link is
  taken down (`set_link`) is cut off. Needs root. Everything is removed on exit, even after a failure
  (and left-overs of an earlier run with the same prefix are removed first).
- `DelayProxy`: TCP forwarders in the root namespace, one per ordered pair of institutions. Node i
  dials its peer j at `10.<net>.<i>.1:<port of j>`; the proxy holds each chunk for the one-way
  delay (and drops the link with probability `loss` per chunk, which TCP sees as a broken
  connection, as a lossy WAN link ends up for a TCP stream: the node's peer layer redials), then
  forwards it to j's node. Both directions are delayed, so a round trip costs twice the delay. It
  runs in a process of its own so that a benchmark's client does not share its event loop.

Used by `scripts/bench_latency_wan.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from medledger.node.process import NodeProcess
from medledger.node.testnet import TestnetNode

READ_BYTES = 256 * 1024


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Site:
    """One institution's namespace: its name, its inside address and the root side's address."""

    index: int
    namespace: str
    inside: str
    outside: str

    def exec_prefix(self) -> tuple[str, ...]:
        """The argv prefix that runs a command inside this namespace."""
        return ("ip", "netns", "exec", self.namespace)


class Namespaces:
    """`count` namespaces named `<prefix><i>`, each with a veth pair to the root namespace."""

    def __init__(self, count: int, *, prefix: str = "mlw", net: int = 201) -> None:
        if not re.fullmatch(r"[a-z]{1,6}", prefix) or not 1 <= count <= 200 or not 11 <= net <= 254:
            raise ValueError("a short lower-case prefix, 1 to 200 sites, net in 11..254")
        self.prefix = prefix
        #: Unreachable as a whole: a site whose link is down is cut off, not routed elsewhere (the
        #: root namespace's default route would take its packets out of the machine).
        self.block = f"10.{net}.0.0/16"
        self.sites = [Site(i, f"{prefix}{i}", f"10.{net}.{i}.2", f"10.{net}.{i}.1") for i in range(count)]

    def __enter__(self) -> Namespaces:
        self.remove()  # an earlier run's, if it was killed
        try:
            run("ip", "route", "replace", "unreachable", self.block)
            for site in self.sites:
                host, inner = f"{self.prefix}{site.index}h", f"{self.prefix}{site.index}n"
                run("ip", "netns", "add", site.namespace)
                run("ip", "link", "add", host, "type", "veth", "peer", "name", inner)
                run("ip", "link", "set", inner, "netns", site.namespace)
                run("ip", "addr", "add", f"{site.outside}/24", "dev", host)
                run("ip", "link", "set", host, "up")
                inside = ("ip", "-n", site.namespace)
                run(*inside, "addr", "add", f"{site.inside}/24", "dev", inner)
                run(*inside, "link", "set", inner, "up")
                run(*inside, "link", "set", "lo", "up")
                run(*inside, "route", "add", "default", "via", site.outside)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        for site in self.sites:
            if re.search(rf"^{re.escape(site.namespace)}\b", listed, re.MULTILINE):
                subprocess.run(["ip", "netns", "del", site.namespace], capture_output=True, check=False)
            # Deleting the namespace deletes the pair; a pair left in the root namespace goes here.
            subprocess.run(
                ["ip", "link", "del", f"{self.prefix}{site.index}h"], capture_output=True, check=False
            )
        subprocess.run(["ip", "route", "del", "unreachable", self.block], capture_output=True, check=False)

    def set_link(self, index: int, up: bool) -> None:
        """Take an institution's link down (a partition) or up again."""
        run("ip", "link", "set", f"{self.prefix}{index}h", "up" if up else "down")


@dataclass(frozen=True)
class Route:
    """Listen on `listen`:`listen_port` and forward to `target`:`target_port`."""

    listen: str
    listen_port: int
    target: str
    target_port: int


#: How often the proxy looks for routes that were cut (seconds).
CUT_POLL_S = 0.02


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay_s: float,
    loss: float,
    rng: random.Random,
    is_cut: Callable[[], bool],
) -> None:
    """Copy reader to writer, each chunk held `delay_s`; a lost chunk or a cut ends the connection."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the delay itself
            if data is None or is_cut():
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(READ_BYTES):
            if is_cut() or (loss and rng.random() < loss):
                break
            queue.put_nowait((loop.time() + delay_s, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((loop.time() + delay_s, None))
    with contextlib.suppress(ConnectionError, OSError):
        await delivering


async def _serve(
    routes: list[Route], delay_ms: float, loss: float, seed: int, flags: Any, ready: Any
) -> None:
    rng = random.Random(seed)
    delay_s = delay_ms / 1000
    open_links: list[set[asyncio.StreamWriter]] = [set() for _ in routes]

    def handler(index: int, route: Route) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        def is_cut() -> bool:
            return bool(flags[index])

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if is_cut():
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(route.target, route.target_port)
            except OSError:
                writer.close()
                return
            open_links[index].update((writer, up_writer))
            try:
                await asyncio.gather(
                    _pump(reader, up_writer, delay_s, loss, rng, is_cut),
                    _pump(up_reader, writer, delay_s, loss, rng, is_cut),
                )
            finally:
                open_links[index].difference_update((writer, up_writer))

        return handle

    async def sweep() -> None:
        """Close the connections of cut routes (an idle link sees the cut too)."""
        while True:
            await asyncio.sleep(CUT_POLL_S)  # polling the shared flags
            for index, links in enumerate(open_links):
                if flags[index]:
                    for link in list(links):
                        link.close()

    servers = [
        await asyncio.start_server(handler(i, r), r.listen, r.listen_port, reuse_address=True)
        for i, r in enumerate(routes)
    ]
    ready.set()
    await asyncio.gather(sweep(), *(s.serve_forever() for s in servers))


def _proxy_main(routes: list[Route], delay_ms: float, loss: float, seed: int, flags: Any, ready: Any) -> None:
    asyncio.run(_serve(routes, delay_ms, loss, seed, flags, ready))


class DelayProxy:
    """The forwarders of `routes` in a process of their own, each direction delayed `delay_ms`;
    `cut` breaks routes (their connections close, new ones are refused) until `heal`."""

    def __init__(self, routes: list[Route], *, delay_ms: float, loss: float = 0.0, seed: int = 0) -> None:
        if delay_ms < 0 or not 0 <= loss < 1:
            raise ValueError("a delay of at least 0 ms and a loss in [0, 1)")
        self.routes = routes
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self._flags = context.Array("b", len(routes))
        self._process = context.Process(
            target=_proxy_main, args=(routes, delay_ms, loss, seed, self._flags, self._ready), daemon=True
        )

    def cut(self, indexes: Iterable[int]) -> None:
        for index in indexes:
            self._flags[index] = 1

    def heal(self) -> None:
        for index in range(len(self.routes)):
            self._flags[index] = 0

    def __enter__(self) -> DelayProxy:
        self._process.start()
        if not self._ready.wait(30):
            self._process.kill()
            raise RuntimeError("the delaying proxy did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._process.kill()
        self._process.join(10)


def mesh_routes(sites: list[Site], p2p_port: int, listen_base: int) -> Iterator[tuple[int, int, Route]]:
    """For each ordered pair (i, j): the route node i dials to reach node j (`listen_base + j` on
    i's root-side address), with every node's peer endpoint on `p2p_port` inside its namespace."""
    for a in sites:
        for b in sites:
            if a.index != b.index:
                yield a.index, b.index, Route(a.outside, listen_base + b.index, b.inside, p2p_port)


#: Ports inside each namespace (each has its own port space).
API_PORT, P2P_PORT, OPS_PORT = 26657, 26656, 26660
#: Node i reaches node j at port LISTEN_BASE + j of i's root-side address (the proxy).
LISTEN_BASE = 36000


def place(config: Path, inside: str, peers: list[str]) -> None:
    """Point a node's config at its namespace: its endpoints inside, its peers through the proxy."""
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^host = "127\.0\.0\.1"$', f'host = "{inside}"', text)
    text = re.sub(r'(?m)^ops_host = "127\.0\.0\.1"$', f'ops_host = "{inside}"', text)
    ports = {"[api]": API_PORT, "[p2p]": P2P_PORT}
    sections = []
    for section in re.split(r"(?m)^(?=\[)", text):
        port = next((p for name, p in ports.items() if section.startswith(name)), None)
        placed = section if port is None else re.sub(r"(?m)^port = \d+$", f"port = {port}", section)
        sections.append(re.sub(r"(?m)^ops_port = \d+$", f"ops_port = {OPS_PORT}", placed))
    text = "".join(sections)
    text = re.sub(r"(?m)^peers = \[.*\]$", "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]", text)
    config.write_text(text, encoding="utf-8")


class NamespacedCluster:
    """Testnet nodes (`create_testnet`), each a process in a namespace of its own, every peer link
    through one `DelayProxy`; `partition` cuts the links between groups, `isolate` takes a site's
    link down, `heal` undoes both. Stops everything it started on exit."""

    def __init__(
        self,
        nodes: list[TestnetNode],
        *,
        delay_ms: float,
        env: dict[str, str],
        loss: float = 0.0,
        prefix: str = "mlw",
        net: int = 201,
    ) -> None:
        self.nodes = nodes
        self.lab = Namespaces(len(nodes), prefix=prefix, net=net)
        self.pairs = list(mesh_routes(self.lab.sites, P2P_PORT, LISTEN_BASE))
        self.proxy = DelayProxy([r for _, _, r in self.pairs], delay_ms=delay_ms, loss=loss)
        self.processes = [
            NodeProcess(n.home, env=env, use_config_ports=True, prefix=site.exec_prefix())
            for n, site in zip(nodes, self.lab.sites, strict=True)
        ]
        self.urls: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> NamespacedCluster:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.lab)
            for node, site in zip(self.nodes, self.lab.sites, strict=True):
                peers = [f"http://{r.listen}:{r.listen_port}" for i, _, r in self.pairs if i == site.index]
                place(node.home / "config.toml", site.inside, peers)
            stack.enter_context(self.proxy)
            stack.callback(self._stop_processes)
            for process in self.processes:
                process.start()
            self.urls = [process.wait_ready(60, require_ready=False) for process in self.processes]
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _stop_processes(self) -> None:
        for process in self.processes:
            process.stop()

    def partition(self, groups: list[set[int]]) -> None:
        """Cut every link between sites of different groups (both directions)."""
        group_of = {index: g for g, members in enumerate(groups) for index in members}
        self.proxy.cut(
            k for k, (i, j, _) in enumerate(self.pairs) if group_of.get(i, -1) != group_of.get(j, -2)
        )

    def isolate(self, index: int) -> None:
        """Take the site's link down: it reaches no one, and no one reaches it."""
        self.lab.set_link(index, up=False)

    def heal(self) -> None:
        self.proxy.heal()
        for site in self.lab.sites:
            self.lab.set_link(site.index, up=True)
