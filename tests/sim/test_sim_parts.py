"""The simulator's parts: the virtual-time loop and the disk that crashes, tears and rots."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from medledger.chain import layout
from medledger.network.simloop import SimDeadlockError, VirtualTimeLoop
from medledger.network.simstorage import SimCrashError, SimDisk, carry_signing_state

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> tuple[T, float]:
    loop = VirtualTimeLoop()
    try:
        result = loop.run_until_complete(main)
        return result, loop.time()
    finally:
        loop.close()


def test_sleep_and_timeouts_run_on_virtual_time() -> None:
    async def main() -> str:
        await asyncio.sleep(3_600)
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(never, timeout=5)
        except TimeoutError:
            return "timed out"
        return "answered"

    result, now = run(main())
    assert result == "timed out"
    assert now == pytest.approx(3_605)


def test_offloaded_work_runs_inline_on_the_loop() -> None:
    async def main() -> int | None:
        return await asyncio.to_thread(threading.get_ident)

    result, now = run(main())
    assert result == threading.get_ident()
    assert now == 0


def test_timers_due_at_one_instant_run_in_the_order_they_were_set() -> None:
    order: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(200):
            loop.call_at(1.0 if i % 2 else 2.0, order.append, i)
        await asyncio.sleep(3)

    run(main())
    assert order == [i for i in range(200) if i % 2] + [i for i in range(200) if not i % 2]


def test_invalid_a_loop_with_nothing_left_to_do_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimDeadlockError):
        run(main())


def test_a_crash_armed_for_the_second_write_keeps_the_first_and_loses_the_second() -> None:
    disk = SimDisk()
    disk.put(b"a", b"1", sync=True)
    disk.arm_crash(2)
    disk.put(b"b", b"2", sync=True)
    with pytest.raises(SimCrashError):
        disk.put(b"c", b"3", sync=True)
    assert disk.closed
    assert not disk.is_torn
    disk.reopen()
    assert (disk.get(b"a"), disk.get(b"b"), disk.get(b"c")) == (b"1", b"2", None)


def test_a_torn_write_marks_the_disk_for_the_start_check() -> None:
    disk = SimDisk()
    disk.arm_crash(1, torn=True)
    with pytest.raises(SimCrashError), disk.write_batch(sync=True) as batch:
        batch.put(b"k", b"v")
    assert disk.is_torn
    assert disk.reopen().get(b"k") is None


def test_invalid_arming_a_crash_for_no_write_is_refused() -> None:
    with pytest.raises(ValueError, match="write still to come"):
        SimDisk().arm_crash(0)


def test_a_rotten_block_record_no_longer_reads_as_stored() -> None:
    disk = SimDisk()
    disk.put(layout.block_key(3), b"\x93block", sync=True)
    assert disk.corrupt_tip(3)
    assert disk.get(layout.block_key(3)) != b"\x93block"
    assert not disk.corrupt_tip(4)


def test_the_signing_state_is_carried_to_a_rebuilt_disk() -> None:
    old, new = SimDisk(), SimDisk()
    old.put(layout.META_LAST_SIGNED, b"last", sync=True)
    old.put(layout.META_CONSENSUS_LOCK, b"lock", sync=True)
    old.put(layout.block_key(1), b"block", sync=True)
    old.crash()
    assert carry_signing_state(old, new) == ["last signed vote", "consensus lock"]
    assert (new.get(layout.META_LAST_SIGNED), new.get(layout.META_CONSENSUS_LOCK)) == (b"last", b"lock")
    assert new.get(layout.block_key(1)) is None
    new.crash()
    assert new.reopen().get(layout.META_LAST_SIGNED) == b"last"  # synced
