"""Backpressure (issue 17 point 4): past the high-water mark the API refuses with 429 and a
`Retry-After`, at once, before checking anything, and admits again once the network has drained.

The gate's arithmetic runs on a fake clock; the refusal runs through a real node and its API (a
long block interval holds what was admitted in the mempool, so the mark is reached for sure).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from node_harness import DEADLINE_S, PROBLEM, make_home, serve_in_process, sign_kv

from medledger.crypto import Identity
from medledger.node.backpressure import RETRY_AFTER_MAX_S, AdmissionGate, OverloadedError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(clock: FakeClock, **kwargs: int) -> AdmissionGate:
    options = {"capacity_txs": 50_000, "queue_target_ms": 500, "high_water_min_txs": 100, **kwargs}
    return AdmissionGate(clock=clock, **options)


def test_the_mark_follows_the_finalized_rate_between_its_floor_and_the_capacity() -> None:
    clock = FakeClock()
    g = gate(clock)
    assert (g.finalized_rate, g.high_water_txs) == (0.0, 100)  # nothing seen: the floor
    for _ in range(11):  # 1,000 txs a block, 10 blocks a second after the first
        g.observe_commit(1_000)
        clock.now += 0.1
    assert g.finalized_rate == pytest.approx(10_000 / 1.1, rel=0.01)  # 10 blocks' txs in 1.1 s
    assert g.high_water_txs == pytest.approx(5_000 / 1.1, rel=0.01)  # half a second of it
    clock.now += 10  # the network went quiet: the window forgets, back to the floor
    assert (g.finalized_rate, g.high_water_txs) == (0.0, 100)
    assert gate(clock, capacity_txs=50).high_water_txs == 50  # never above the mempool's capacity
    assert gate(clock, high_water_txs=7).high_water_txs == 7  # or fixed


def test_a_refusal_says_how_long_the_excess_needs_to_drain() -> None:
    clock = FakeClock()
    g = gate(clock, high_water_min_txs=1_000)
    g.check(999, 500)  # below the mark: a whole batch is taken
    with pytest.raises(OverloadedError) as refused:
        g.check(1_000, 1)
    assert refused.value.retry_after_s == RETRY_AFTER_MAX_S  # no commit seen: the longest wait
    for _ in range(3):
        g.observe_commit(100)
        clock.now += 1.0
    assert g.finalized_rate == pytest.approx(200 / 3, rel=0.01)  # 200 txs over the 3 s since the first
    with pytest.raises(OverloadedError) as refused:
        g.check(1_200, 100)
    assert refused.value.retry_after_s == 5  # 300 over the mark at ~67 tx/s
    assert refused.value.code == "overloaded"
    with pytest.raises(ValueError, match="positive"):
        gate(clock, queue_target_ms=0)


async def test_past_the_mark_the_api_answers_429_with_retry_after_and_admits_nothing(
    tmp_path: Path, signer: Identity
) -> None:
    # Five seconds between blocks hold what is admitted after the first in the mempool.
    home = make_home(tmp_path / "n", block_interval_ms=5_000).home
    config = home / "config.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("high_water_txs = 0", "high_water_txs = 3"), encoding="utf-8")
    async with serve_in_process(home) as api:
        first = sign_kv(signer, api.chain_id, b"first")
        assert (await api.post_json("/v1/txs?wait_ms=5000", {"tx": first.b64})).status == 200
        held = [sign_kv(signer, api.chain_id, b"held%d" % i) for i in range(3)]
        for tx in held:
            assert (await api.post_json("/v1/txs", {"tx": tx.b64})).status == 202
        extra = sign_kv(signer, api.chain_id, b"extra")
        for path, body in (("/v1/txs", {"tx": extra.b64}), ("/v1/txs/batch", {"txs": [extra.b64]})):
            reply = await api.post_json(path, body)
            assert reply.status == 429, reply
            assert reply.content_type == PROBLEM
            problem = reply.json()
            assert problem["type"] == "urn:medledger:problem:overloaded"
            assert "high-water mark 3" in problem["detail"]
            assert int(reply.headers["retry-after"]) == problem["retry_after_s"] >= 1
            assert (await api.get(f"/v1/txs/{extra.tx_id}")).status == 404  # nothing admitted
        assert (await api.status())["mempool"]["txs"] == 3
        metrics = (await api.ops_get("/metrics")).body.decode()
        assert 'medledger_txs_submitted_total{outcome="overloaded"} 2.0' in metrics
        # Once the held ones are committed, the API admits again.
        located = await api.node.wait_committed([bytes.fromhex(t.tx_id) for t in held], DEADLINE_S)
        assert len(located) == 3
        assert (await api.post_json("/v1/txs?wait_ms=10000", {"tx": extra.b64})).status == 200
