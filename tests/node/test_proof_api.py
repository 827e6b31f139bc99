"""The light client's proof routes under load from a reader (issue 9, defects 5 and 9).

`/v1/proofs/blocks` answers any registered patient, and anyone can register: a page is up to
~25 MB of blocks read, decoded and base64-encoded. Built on the event loop, each page would stall
consensus, the peer links and every other request for as long as it takes, so a page is built in
a worker thread (at most `PROOF_PAGES_CONCURRENT_MAX` at once, which bounds the memory too).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Final

import pytest
from aiohttp.test_utils import TestClient, TestServer
from node_harness import PASSPHRASE, read_token, sign_kv

from medledger.crypto import Identity, load_identity
from medledger.node import api
from medledger.node.api import build_app
from medledger.node.config import load_config
from medledger.node.fixture_app import KeyValueFixtureApp
from medledger.node.genesis_file import load_genesis
from medledger.node.home import InitResult
from medledger.node.node import Node

HEIGHT_WAIT_S: Final = 30.0


async def test_trust_5_proof_pages_are_built_off_the_event_loop(node_home: InitResult) -> None:
    config = load_config(node_home.home, environ={})
    node = Node(
        config,
        identity=load_identity(config.key_file, PASSPHRASE.encode()),
        genesis=load_genesis(config.genesis_file),
        app=KeyValueFixtureApp(),
    )
    app = build_app(node)
    await node.start()
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            writer = Identity.generate()
            deadline = time.monotonic() + HEIGHT_WAIT_S
            tx_ids: list[str] = []
            for i in range(3):
                tx = sign_kv(writer, node.genesis.chain_id, f"k{i}".encode())
                posted = await client.post("/v1/txs?wait_ms=10000", json={"tx": tx.b64})
                assert posted.status in (200, 201, 202), await posted.text()
                tx_ids.append(tx.tx_id)
            while node.store.height < 3:
                assert time.monotonic() < deadline, "the node committed no blocks"
                await asyncio.sleep(0.05)
        loop_thread = threading.current_thread()
        readers: list[threading.Thread] = []
        read_block = node.store.get_block_raw

        def recording_read(height: int) -> bytes | None:
            readers.append(threading.current_thread())
            return read_block(height)

        read_location = node.store.get_tx_location
        locators: list[threading.Thread] = []

        def recording_location(tx_id: bytes) -> object:
            locators.append(threading.current_thread())
            return read_location(tx_id)

        node.store.get_block_raw = recording_read  # type: ignore[method-assign]
        node.store.get_tx_location = recording_location  # type: ignore[method-assign,assignment]
        headers = {"Authorization": f"Bearer {read_token(config.home)}"}
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            reply = await client.get("/v1/proofs/blocks?from=1&limit=3", headers=headers)
            assert reply.status == 200
            page = await reply.json()
            proof = await client.get(f"/v1/proofs/txs/{tx_ids[0]}", headers=headers)
            assert proof.status == 200
            assert (await proof.json())["proof"]["leaf_count"] >= 1
            missing = await client.get(f"/v1/proofs/txs/{'00' * 32}", headers=headers)
            assert missing.status == 404
        assert len(page["blocks"]) == 3
        assert len(readers) >= 3
        assert len(locators) == 2
        assert all(thread is not loop_thread for thread in (*readers, *locators))
    finally:
        await node.stop()


async def test_trust_5_a_blocks_range_is_bounded_in_bytes_and_built_off_the_event_loop(
    node_home: InitResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/v1/blocks?from&to` held up to 100 blocks whatever their size (1.6 GB of full blocks for
    one request of any registered patient), read and encoded on the event loop."""
    config = load_config(node_home.home, environ={})
    node = Node(
        config,
        identity=load_identity(config.key_file, PASSPHRASE.encode()),
        genesis=load_genesis(config.genesis_file),
        app=KeyValueFixtureApp(),
    )
    app = build_app(node)
    await node.start()
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            writer = Identity.generate()
            for i in range(3):
                tx = sign_kv(writer, node.genesis.chain_id, f"k{i}".encode())
                posted = await client.post("/v1/txs?wait_ms=10000", json={"tx": tx.b64})
                assert posted.status in (200, 201, 202), await posted.text()
            deadline = time.monotonic() + HEIGHT_WAIT_S
            while node.store.height < 3:
                assert time.monotonic() < deadline, "the node committed no blocks"
                await asyncio.sleep(0.05)
            headers = {"Authorization": f"Bearer {read_token(config.home)}"}
            whole = await (await client.get("/v1/blocks?from=1&to=3", headers=headers)).json()
            assert [b["height"] for b in whole["blocks"]] == [1, 2, 3]
            loop_thread = threading.current_thread()
            readers: list[threading.Thread] = []
            read_block = node.store.get_block_raw

            def recording_read(height: int) -> bytes | None:
                readers.append(threading.current_thread())
                return read_block(height)

            node.store.get_block_raw = recording_read  # type: ignore[method-assign]
            monkeypatch.setattr(api, "API_BLOCKS_PAGE_BYTES_MAX", 1, raising=False)  # all over it
            page = await (await client.get("/v1/blocks?from=1&to=3", headers=headers)).json()
            assert [b["height"] for b in page["blocks"]] == [1]
            assert page["latest_height"] >= 3
            one = await client.get("/v1/blocks/2", headers=headers)
            assert (await one.json())["height"] == 2
            missing = await client.get("/v1/blocks/99999", headers=headers)
            assert missing.status == 404
        assert readers
        assert all(thread is not loop_thread for thread in readers)
    finally:
        await node.stop()
