"""Recovery on a four-validator network of real node processes.

A validator whose data directory is wiped gets the whole chain back from its peers (same blocks,
same state root, its API answers for the same txs). A validator whose store is corrupted refuses
to start, saying which commands get it back; `medledger verify` confirms the damage,
`medledger rebuild` moves the store aside (never deletes it), and the next start recovers the chain
from the peers. Every process started here is stopped at the end, pass or fail.
"""

from __future__ import annotations

import functools
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest
from click.testing import CliRunner
from recovery_harness import DEADLINE_S, NODE_ENV, Corruption, Net, corrupt, sign_kv_txs, wait_until

from medledger.chain import layout
from medledger.chain.store import BlockStore
from medledger.crypto import Identity
from medledger.node.cli import main

pytestmark = pytest.mark.slow

VALIDATORS = 4
VICTIM = 3
TXS = 30
#: Heights the frozen validator misses (block sync takes over from 2 behind).
FALL_BEHIND_BATCHES = 5


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    network = Net(tmp_path_factory.mktemp("recovery") / "net", VALIDATORS)
    try:
        for index in range(VALIDATORS):
            network.start(index)
        for index in range(VALIDATORS):
            network.wait_serving(index)
        for index in range(VALIDATORS):
            wait_until(functools.partial(is_meshed, network, index), f"node {index} meshed")
        yield network
    finally:
        network.stop_all()
        for proc in network.procs:
            print(f"===== {proc.home.name}\n{proc.read_log()[-3000:]}")  # shown when a test failed


def is_meshed(net: Net, index: int) -> bool:
    return bool(net.status(index)["peers"] == VALIDATORS - 1)


def write_and_agree(net: Net, label: str) -> tuple[list[str], tuple[int, str, str]]:
    """Commit a batch through validator0 and wait until all nodes agree; the tx ids and the tip."""
    tx_ids = net.submit(0, sign_kv_txs(Identity.generate(), label, TXS))
    return tx_ids, net.wait_agreed()


def assert_recovered(net: Net, tx_ids: list[str], tip: tuple[int, str, str]) -> None:
    """The victim serves again, reaches the peers' tip and the same chain, and answers for `tx_ids`."""
    net.wait_serving(VICTIM)
    wait_until(lambda: net.status(VICTIM)["height"] >= tip[0], "the victim to catch up by block sync")
    height, _, state_root = net.wait_agreed()
    assert height >= tip[0]
    assert net.status(VICTIM)["state_root"] == net.status(0)["state_root"] == state_root
    assert net.block_hashes(VICTIM, height) == net.block_hashes(0, height)
    for tx_id in tx_ids:
        mine, theirs = net.get(VICTIM, f"/v1/txs/{tx_id}"), net.get(0, f"/v1/txs/{tx_id}")
        assert mine["status"] == "committed"
        assert (mine["height"], mine["index"]) == (theirs["height"], theirs["index"])


def test_a_wiped_validator_recovers_everything_from_its_peers(net: Net) -> None:
    tx_ids: list[str] = []
    for batch in range(3):  # a few blocks: far enough behind for block sync's progress reports
        batch_ids, tip = write_and_agree(net, f"wiped-{batch}")
        tx_ids += batch_ids
    before = {tx_id: net.get(VICTIM, f"/v1/txs/{tx_id}") for tx_id in tx_ids}
    net.procs[VICTIM].stop()
    shutil.rmtree(net.data_dir(VICTIM))

    log_before = net.procs[VICTIM].read_log()
    net.start(VICTIM)
    assert_recovered(net, tx_ids, tip)
    assert {tx_id: net.get(VICTIM, f"/v1/txs/{tx_id}") for tx_id in tx_ids} == before
    # Not on a terminal: plain log lines tell the operator how block sync went.
    log = net.procs[VICTIM].read_log()[len(log_before) :]
    assert "blocks behind (height 0, peers at" in log
    assert "block sync: height" in log
    assert "caught up at height" in log


@pytest.mark.parametrize("kind", list(Corruption), ids=lambda k: k.value)
def test_a_corrupted_validator_refuses_to_start_and_rebuild_recovers_it(net: Net, kind: Corruption) -> None:
    tx_ids, tip = write_and_agree(net, f"corrupt-{kind.value}")
    home, data = net.home(VICTIM), net.data_dir(VICTIM)
    net.procs[VICTIM].stop()
    corrupt(data, kind)

    # Refused: the process exits with an error naming the way back, and never serves the store.
    victim = net.procs[VICTIM]
    victim.start()
    assert victim.proc is not None
    code = victim.proc.wait(timeout=DEADLINE_S)
    log = victim.read_log()
    victim.stop()
    assert code != 0
    assert "refusing to start: the store is corrupted" in log
    assert f"medledger verify --home {home}" in log
    assert f"medledger rebuild --home {home}" in log

    runner = CliRunner()
    verified = runner.invoke(main, ["verify", "--home", str(home)])
    assert verified.exit_code == 1, verified.output
    assert "CORRUPTED" in verified.output

    rebuilt = runner.invoke(main, ["rebuild", "--home", str(home)])
    assert rebuilt.exit_code == 0, rebuilt.output
    fresh = BlockStore.open(data)  # only the validator's signing state stays in place
    try:
        assert not fresh.is_initialized
        assert fresh.height == 0
    finally:
        fresh.close()
    aside = sorted(home.glob("data.corrupt-*"))
    assert aside, rebuilt.output
    assert f"moved {data} to {aside[-1]}" in rebuilt.output
    assert "recovers the chain from its peers" in rebuilt.output
    for moved in aside:  # moved aside, never deleted (the tests keep them apart for the next kind)
        moved.rename(home.parent / f"{home.name}-{moved.name}-{kind.value}")

    net.start(VICTIM)
    assert_recovered(net, tx_ids, tip)


def test_verify_reports_a_clean_store_and_refuses_a_running_node(net: Net, tmp_path: Path) -> None:
    write_and_agree(net, "verify")
    home = net.home(VICTIM)
    runner = CliRunner()
    busy = runner.invoke(main, ["verify", "--home", str(home)])
    assert busy.exit_code == 1
    assert "stop the node first" in busy.output
    assert runner.invoke(main, ["rebuild", "--home", str(home)]).exit_code == 1
    assert net.data_dir(VICTIM).exists()

    net.procs[VICTIM].stop()
    clean = runner.invoke(main, ["verify", "--home", str(home)])
    assert clean.exit_code == 0, clean.output
    assert "result:      clean" in clean.output
    assert "checked" in clean.output
    net.start(VICTIM)
    net.wait_serving(VICTIM)
    net.wait_agreed()


def test_a_validator_that_falls_far_behind_syncs_then_takes_part_again(net: Net) -> None:
    """A running validator that misses several heights (frozen with SIGSTOP, as a hung host would
    be) leaves consensus for block sync, catches up, and then votes again: with another validator
    stopped, the chain can only commit with its precommit."""
    _, (height, _, _) = write_and_agree(net, "before-freeze")
    victim = net.procs[VICTIM]
    assert victim.proc is not None
    log_before = victim.read_log()
    os.kill(victim.proc.pid, signal.SIGSTOP)
    try:
        for batch in range(FALL_BEHIND_BATCHES):
            net.submit(0, sign_kv_txs(Identity.generate(), f"frozen-{batch}", TXS))
        wait_until(lambda: net.status(0)["height"] >= height + FALL_BEHIND_BATCHES, "the others to go on")
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)

    def log_since_freeze() -> str:
        return victim.read_log()[len(log_before) :]

    wait_until(lambda: "caught up at height" in log_since_freeze(), "the victim to catch up by block sync")
    log = log_since_freeze()
    assert "blocks behind" in log
    assert log.index("blocks behind") < log.index("caught up at height")
    assert "taking part in consensus" in log

    net.procs[1].stop()  # 3 of 4 remain: every commit from now on needs the victim's precommit
    try:
        tx_ids = net.submit(0, sign_kv_txs(Identity.generate(), "needs-the-victim", TXS))
        wait_until(
            lambda: all(net.get(0, f"/v1/txs/{tx_id}")["status"] == "committed" for tx_id in tx_ids),
            "a commit that needs the victim's vote",
        )
        committed_at = int(net.get(0, f"/v1/txs/{tx_ids[0]}")["height"])
        signers = {s["validator"] for s in net.get(0, f"/v1/blocks/{committed_at}")["commit"]["signatures"]}
        assert net.specs[VICTIM].identity.public.sign_key.hex() in signers
    finally:
        net.start(1)
        net.wait_serving(1)
    net.wait_agreed()


def test_a_validator_whose_state_diverged_halts_on_the_next_block_and_rebuild_recovers_it(net: Net) -> None:
    """A state root damaged where the start check cannot see (only a full replay can) is caught by
    the next block a quorum certifies: the node halts with the way back, it does not blame its
    peers for serving "bad" blocks."""
    write_and_agree(net, "before-divergence")
    home, data = net.home(VICTIM), net.data_dir(VICTIM)
    victim = net.procs[VICTIM]
    victim.stop()
    log_before = victim.read_log()
    db = plyvel.DB(str(data))
    try:
        db.put(layout.META_STATE_ROOT, bytes(32), sync=True)
    finally:
        db.close()
    victim.start()
    net.wait_serving(VICTIM)  # the tail check passes: nothing certifies the tip's state root yet

    tx_ids = net.submit(0, sign_kv_txs(Identity.generate(), "diverged", TXS))
    assert victim.proc is not None
    code = victim.proc.wait(timeout=DEADLINE_S)
    log = victim.read_log()[len(log_before) :]
    victim.stop()
    assert code != 0
    assert "stopping: the store is corrupted" in log
    assert "differs from the state the network certified" in log
    assert f"medledger rebuild --home {home}" in log
    assert "dropping peer" not in log  # the honest peers were not blamed

    rebuilt = CliRunner().invoke(main, ["rebuild", "--home", str(home)])
    assert rebuilt.exit_code == 0, rebuilt.output
    for moved in sorted(home.glob("data.corrupt-*")):
        moved.rename(home.parent / f"{home.name}-{moved.name}-diverged")
    net.start(VICTIM)
    assert_recovered(net, tx_ids, (int(net.status(0)["height"]), "", ""))


def read_terminal_until(master: int, marker: bytes, timeout_s: float = DEADLINE_S) -> bytes:
    """What a process wrote to its terminal (the pty's master side) until `marker` appeared."""
    output = b""
    deadline = time.monotonic() + timeout_s
    while marker not in output:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; the terminal showed:\n{output!r}")
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the process closed its terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the process left before {marker!r}; its terminal showed:\n{output!r}")
            output += chunk
    return output


def test_a_node_recovering_on_a_terminal_draws_a_progress_bar(net: Net) -> None:
    for batch in range(3):  # far enough behind for block sync mode
        write_and_agree(net, f"terminal-{batch}")
    net.procs[VICTIM].stop()
    shutil.rmtree(net.data_dir(VICTIM))
    master, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "medledger.node.cli", "start", "--home", str(net.home(VICTIM))],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **NODE_ENV},
    )
    os.close(terminal)
    try:
        shown = read_terminal_until(master, b"caught up at height")
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)
        os.close(master)
    text = shown.decode("utf-8", errors="replace")
    assert re.search(r"\r\x1b\[Ksync \[[#·]+\] +\d+/\d+ blocks · [\d,]+ tx/s · ETA \S+", text), text
    assert re.search(r"\r\x1b\[Kcaught up at height \d+: [\d,]+ blocks, [\d,]+ txs in ", text), text
    net.start(VICTIM)
    net.wait_serving(VICTIM)
    net.wait_agreed()
