"""`medledger demo --once` runs the whole scenario on four real node processes and a real mosquitto,
shows the patient's notifications as they arrive through the broker, and exits cleanly."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mosquitto_harness import ensure_mosquitto

from medledger.health.research_types import AGE_BANDS
from medledger.node.demo_research import COHORT

#: Each synthetic patient's age, in the order the demo makes them.
COHORT_PATIENTS = [age for age, count in COHORT.items() for _ in range(count)]

REPO = Path(__file__).resolve().parents[2]


def run_demo(home: Path, *extra: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "medledger.node.cli", "demo", "--once", "--base-port", "0"]
    argv += ["--home", str(home), *extra]  # the packaged demo.toml, run outside the checkout
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=home.parent)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # the demo stops its nodes and its broker on SIGTERM
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    return proc.returncode, output.decode()


def check_research_story(text: str) -> None:
    """The study over 300 synthetic patients: the combined histogram as the institute sees it,
    the empty and small bands suppressed (and 80-89 with them, complementarily), the others
    noised near the truth, the budget charged on the ledger, and no identifier printed."""
    research = text.split("The research story:", 1)[1].split("The patient's notifications:", 1)[0]
    assert f"{len(COHORT_PATIENTS)} synthetic patients registered and opted in" in research, research
    assert "answered: " in research
    assert set(re.search(r"answered: (.*)", research)[1].split(", ")) == {"clinic", "hospital"}  # type: ignore[index]
    cells = dict(re.findall(r"^\s+(\d+-\d+|90\+)\s+(suppressed|\d+\.\d)$", research, re.MULTILINE))
    assert set(cells) == set(AGE_BANDS), research
    suppressed = {band for band, value in cells.items() if value == "suppressed"}
    # 0-9 and 10-19 are empty, 90+ holds 6 (< k = 11): their total 6 would be below k, so the
    # smallest shown band, 80-89 (19 at the clinic), is suppressed with them.
    assert suppressed == {"0-9", "10-19", "80-89", "90+"}, research
    truth = {band: 0 for band in AGE_BANDS}
    for index, age in enumerate(COHORT_PATIENTS):
        band = "90+" if age >= 90 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"
        truth[band] += 1 if index % 2 else 2  # the clinic's record (and every other at the hospital)
    for band, value in cells.items():
        if band not in suppressed:
            # Discrete Laplace, b = 1 per answer, two answers: off by more than 30 has probability ~1e-12.
            assert abs(float(value) - truth[band]) <= 30, (band, value, truth[band])
    assert "noise: discrete Laplace, ε 1 per answer, sd 2.00 per cell" in research
    assert "remaining budget, on the ledger for every node: ε = 1 of 3" in research
    assert "1 query their data could have entered" in research
    assert not re.search(r"[0-9a-f]{17,}", research), research  # ids only as 16-hex prefixes


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_demo_once_runs_the_scenario_with_notifications_and_stops_everything(tmp_path: Path) -> None:
    ensure_mosquitto()  # as scripts/demo.sh does (bootstrap.sh installs it when missing)
    returncode, text = run_demo(tmp_path / "demo")
    assert returncode == 0, text
    assert "4 institutions up" in text
    assert "the patient granted inquiry" in text
    assert "the patient reads the sealed reason: 'referral for a diabetes follow-up'" in text
    trail = text.split("audit trail", 1)[1].split("The research story:", 1)[0]
    events = [line.split()[4] for line in trail.splitlines()[2:] if line.strip()[:1].isdigit()]
    consent_story = ["inquiry", "grant", "read", "read"]
    claim_story = ["consent", "claim_filed", "read", "claim_read", "read", "claim_read", "claim_decided"]
    assert events == consent_story + claim_story, text
    for name in ("clinic", "hospital", "insurer", "research"):
        assert f"  {name} " in text
    # Run from outside the checkout with the packaged description; it says how to open the app.
    home = tmp_path / "demo"
    app_line = r"open http://127\.0\.0\.1:\d+/app/#genesis=[0-9a-f]{64} and import the key file "
    assert re.search(app_line + re.escape(str(home)), text), text
    assert f"with the passphrase in {home / 'patient.passphrase'}" in text

    # Each step of the story is followed by the patient's notification of it, naming its ids.
    story, insurer_story = (
        text.split("the scenario:", 1)[1].split("audit trail", 1)[0].split("insurer's story", 1)
    )
    lines = [line.strip() for line in story.splitlines() if line.strip()]
    notified = [line for line in lines if line.startswith("notification:")]
    kinds = [line.split()[1] for line in notified]
    assert kinds == ["record.added"] * 3 + [
        "inquiry.filed",
        "inquiry.granted",
        "record.read",
        "record.read",
    ], text
    assert not any("[filled from the ledger]" in line for line in notified), text  # all live
    records = re.findall(r"clinic added record ([0-9a-f]{16})…", story)
    inquiry = re.findall(r"inquiry ([0-9a-f]{16})…", story)[0]
    for record in records:
        following = lines[lines.index(next(line for line in lines if record in line)) + 1]
        assert following == f"notification: record.added (record {record[:8]}…)", text
    assert f"notification: inquiry.filed (inquiry {inquiry[:8]}…)" in notified
    assert all(f"inquiry {inquiry[:8]}…" in line for line in notified[3:]), text
    # The insurer's story: a standing consent, a claim with a labelled record the insurer may not
    # read, the approval, and every step of it notified to the patient, live.
    assert "insurer: may not read the Condition (labelled; the consent names no label)" in insurer_story
    assert re.search(r"insurer: approved claim [0-9a-f]{16}", insurer_story), text
    assert re.search(r"patient: claim [0-9a-f]{16} version 1: approved", insurer_story), text
    insurer_notified = [
        line.strip().split()[1]
        for line in insurer_story.splitlines()
        if line.strip().startswith("notification:")
    ]
    assert insurer_notified == ["consent.granted"] + ["record.added"] * 3 + ["claim.filed"] + [
        "record.read",
        "claim.read",
    ] * 2 + ["claim.decided"], text
    assert "[filled from the ledger]" not in insurer_story, text
    assert "The patient's notifications: 17 shown, 17 of them delivered live by the broker" in text
    check_research_story(text)

    # Through the real broker: the patient's derived user connected and subscribed to a patient
    # topic (a token, not their id), and the patient's node published as its own user.
    network = tmp_path / "demo" / "network"
    log = (network / "mosquitto" / "mosquitto.log").read_text()
    patient_id = re.findall(r"1\. patient ([0-9a-f]{16})…", story)[0]
    patient_user = sorted(set(re.findall(r"u'(p-[0-9a-f]{32})'", log)))
    assert len(patient_user) == 1, log
    assert re.search(r" 1 medledger/pat/[0-9a-f]{64}$", log, re.MULTILINE), log
    assert patient_id not in log
    assert f"user {patient_user[0]}" in (network / "clinic" / "broker" / "acl").read_text()
    assert "terminating" in log  # stopped with the demo

    # Every process it started has stopped: the nodes' address files are gone, the broker's ports closed.
    assert not list(network.glob("*/api.json"))
    ports = [
        int(p)
        for p in re.findall(r"\d+", text.split("a listener per node on 127.0.0.1:", 1)[1].split("\n")[0])
    ]
    assert len(ports) == 4
    assert not any(is_listening(port) for port in ports)
    assert not (network / "mosquitto" / "mosquitto.pid").exists()


def test_demo_stopped_with_ctrl_c_while_running_stops_its_nodes_and_broker(tmp_path: Path) -> None:
    ensure_mosquitto()
    home = tmp_path / "demo"
    argv = [sys.executable, "-m", "medledger.node.cli", "demo", "--base-port", "0", "--home", str(home)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    seen: list[str] = []
    pid_file = home / "network" / "mosquitto" / "mosquitto.pid"
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the demo exits (then the assertion below fails)
            seen.append(line)
            if "The network keeps running" in line:
                break
        assert "The network keeps running" in "".join(seen), "".join(seen)
        broker_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = proc.communicate(timeout=120)
        seen.append(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    text = "".join(seen)
    assert proc.returncode == 0, text
    assert "stopping the network" in text
    assert not pid_file.exists()  # mosquitto removes it when it exits
    assert not Path(f"/proc/{broker_pid}").exists()  # stopped and reaped by the demo
    assert not list((home / "network").glob("*/api.json"))
    assert "terminating" in (home / "network" / "mosquitto" / "mosquitto.log").read_text()


def test_demo_without_mosquitto_says_how_to_install_it(tmp_path: Path) -> None:
    returncode, text = run_demo(tmp_path / "demo", "--mosquitto", str(tmp_path / "no-mosquitto"))
    assert returncode == 1, text
    assert "is not an executable" in text
    assert "apt-get install mosquitto" in text
    assert "scripts/demo.sh" in text
    assert not (tmp_path / "demo" / "network").exists()  # nothing was created or started
