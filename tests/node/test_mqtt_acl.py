"""The broker's access files (node/mqtt_acl.py): kept passwords, live additions, failed writes.

Real files and the real mosquitto password hash; the broker itself is exercised in
tests/health_api/test_events_acl_live.py and test_demo.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from medledger.crypto import Identity
from medledger.health.event_topics import compute_patient_subscription, get_institution_username
from medledger.node.config import load_config
from medledger.node.errors import ConfigError
from medledger.node.mqtt_acl import (
    BrokerAccessError,
    LiveBrokerAccess,
    build_broker_access,
    get_node_username,
    signal_broker,
)

CHAIN_ID = "medledger-acl-unit"
PREFIX = "medledger"


def check_password(passwd: str, user: str, password: str) -> bool:
    """Whether `passwd` holds `user` with `password`, by mosquitto's `$7$` PBKDF2-SHA512 rule."""
    for line in passwd.splitlines():
        name, _, hashed = line.partition(":")
        if name == user:
            _, seven, iterations, salt, digest = hashed.split("$")
            assert seven == "7"
            derived = hashlib.pbkdf2_hmac(
                "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
            )
            return derived == base64.b64decode(digest)
    return False


def test_build_broker_access_keeps_the_passwords_handed_out() -> None:
    node, other = Identity.generate(), Identity.generate()
    institutions = [node.public.sign_key, other.public.sign_key]
    first = build_broker_access(node, CHAIN_ID, PREFIX, institutions, ())
    again = build_broker_access(node, CHAIN_ID, PREFIX, institutions, (), passwords=first.handed_out)
    assert again.handed_out == first.handed_out
    assert again.passwd != first.passwd  # new salts, the same passwords
    for user, password in first.handed_out.items():
        assert check_password(again.passwd, user, password), user
    fresh = build_broker_access(node, CHAIN_ID, PREFIX, institutions, ())
    assert (
        fresh.handed_out[get_institution_username(other.public.sign_key)]
        != (first.handed_out[get_institution_username(other.public.sign_key)])
    )


def test_live_access_adds_each_patient_once_with_the_password_they_derive(tmp_path: Path) -> None:
    node = Identity.generate()
    alice, bob = Identity.generate(), Identity.generate()
    access = LiveBrokerAccess(
        node, CHAIN_ID, PREFIX, [node.public.sign_key], tmp_path / "acl", node_password="node-secret"
    )
    access.load([alice.public.enc_key])
    access.add_patients([alice.public.enc_key])  # already there: nothing written
    assert access.writes == 1
    access.add_patients([bob.public.enc_key, alice.public.enc_key])
    assert (access.writes, access.patients) == (2, 2)
    acl = (tmp_path / "acl" / "acl").read_text()
    passwd = (tmp_path / "acl" / "passwd").read_text()
    for patient in (alice, bob):
        user, password, topic = compute_patient_subscription(
            patient, CHAIN_ID, node.public.sign_key, node.public.enc_key
        )
        assert f"user {user}\ntopic read {topic}\n" in acl
        assert acl.count(f"user {user}\n") == 1
        assert check_password(passwd, user, password)
    assert check_password(passwd, get_node_username(node.public.sign_key), "node-secret")
    credentials = json.loads((tmp_path / "acl" / "credentials.json").read_text())
    assert credentials[get_node_username(node.public.sign_key)] == "node-secret"
    for name in ("acl", "passwd", "credentials.json"):
        assert stat.S_IMODE((tmp_path / "acl" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "acl").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "acl").iterdir()) == ["acl", "credentials.json", "passwd"]


def test_invalid_write_is_reported_and_retried_with_the_next_addition(tmp_path: Path) -> None:
    node, alice = Identity.generate(), Identity.generate()
    directory = tmp_path / "acl"
    access = LiveBrokerAccess(node, CHAIN_ID, PREFIX, [node.public.sign_key], directory)
    access.load([])
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
    directory.write_text("a file where the broker's directory should be")
    with pytest.raises(BrokerAccessError, match="cannot write the broker's files"):
        access.add_patients([alice.public.enc_key])
    assert (access.is_dirty, access.writes) == (True, 1)
    directory.unlink()
    access.add_patients([])  # nothing new, but what failed is written now
    assert (access.is_dirty, access.writes) == (False, 2)
    user, _, _ = compute_patient_subscription(alice, CHAIN_ID, node.public.sign_key, node.public.enc_key)
    assert f"user {user}\n" in (directory / "acl").read_text()


def test_invalid_credentials_file_is_refused_by_name(tmp_path: Path) -> None:
    node = Identity.generate()
    (tmp_path / "acl").mkdir()
    (tmp_path / "acl" / "credentials.json").write_text("[1, 2]")
    access = LiveBrokerAccess(node, CHAIN_ID, PREFIX, [node.public.sign_key], tmp_path / "acl")
    with pytest.raises(BrokerAccessError, match=r"credentials\.json is not a JSON object"):
        access.load([])
    assert (tmp_path / "acl" / "credentials.json").read_text() == "[1, 2]"
    assert not (tmp_path / "acl" / "acl").exists()


def test_signal_broker_without_a_pid_file_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not signal_broker(tmp_path / "missing.pid")
    (tmp_path / "bad.pid").write_text("not a pid\n")
    assert not signal_broker(tmp_path / "bad.pid")
    assert "was not told to reload" in caplog.text


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('acl_dir = "broker"\n', "acl_dir is kept by the event publisher: set \\[mqtt\\] url"),
        ('url = "mqtt://127.0.0.1:1883"\nbroker_pid_file = "m.pid"\n', "broker_pid_file .* set acl_dir"),
        # ACL injection through the prefix: a wildcard, a line break, a space, an empty level.
        ('topic_prefix = "medledger/#"\n', "topic_prefix must be topic levels"),
        ('topic_prefix = "+"\n', "topic_prefix must be topic levels"),
        ('topic_prefix = "m\\nuser evil\\ntopic readwrite #"\n', "topic_prefix must be topic levels"),
        ('topic_prefix = "a b"\n', "topic_prefix must be topic levels"),
        ('topic_prefix = "a//b"\n', "topic_prefix must be topic levels"),
        ('topic_prefix = "/a"\n', "topic_prefix must be topic levels"),
    ],
)
def test_invalid_mqtt_config_names_what_is_missing(tmp_path: Path, section: str, message: str) -> None:
    (tmp_path / "config.toml").write_text("[mqtt]\n" + section)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_invalid_links_planted_at_the_files_or_their_old_temporary_names_are_not_followed(
    tmp_path: Path,
) -> None:
    node, alice = Identity.generate(), Identity.generate()
    directory = tmp_path / "acl"
    directory.mkdir(mode=0o700)
    victims = {name: tmp_path / f"victim-{name}" for name in ("acl", "passwd", "tmp")}
    for victim in victims.values():
        victim.write_text("the victim's own content\n")
    # A link at each target, and at the temporary names the files were once written through
    # (`.<name>.<pid>.<thread>.tmp`, predictable): the writes replace the links, never follow them.
    (directory / "acl").symlink_to(victims["acl"])
    (directory / "passwd").symlink_to(victims["passwd"])
    for name in ("acl", "passwd", "credentials.json"):
        (directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp").symlink_to(victims["tmp"])
    access = LiveBrokerAccess(node, CHAIN_ID, PREFIX, [node.public.sign_key], directory)
    access.load([alice.public.enc_key])
    for victim in victims.values():
        assert victim.read_text() == "the victim's own content\n"
    for name in ("acl", "passwd", "credentials.json"):
        path = directory / name
        assert not path.is_symlink(), name
        assert stat.S_ISREG(path.lstat().st_mode), name
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, name
    user, _, _ = compute_patient_subscription(alice, CHAIN_ID, node.public.sign_key, node.public.enc_key)
    assert f"user {user}\n" in (directory / "acl").read_text()


def test_invalid_credentials_file_that_is_a_link_is_refused_and_not_read(tmp_path: Path) -> None:
    node = Identity.generate()
    directory = tmp_path / "acl"
    directory.mkdir()
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"n-someone": "a password from another broker"}))
    (directory / "credentials.json").symlink_to(secret)
    access = LiveBrokerAccess(node, CHAIN_ID, PREFIX, [node.public.sign_key], directory)
    with pytest.raises(BrokerAccessError, match="symbolic link"):
        access.load([])
    assert not (directory / "acl").exists()
    (directory / "credentials.json").unlink()
    (directory / "credentials.json").mkdir()
    with pytest.raises(BrokerAccessError, match="not a regular file"):
        access.load([])


def test_a_patient_whose_key_gives_no_secret_gets_no_broker_user(tmp_path: Path) -> None:
    node, alice = Identity.generate(), Identity.generate()
    low_order = bytes(32)  # an older chain may hold one (layout 2 accepted it)
    access = LiveBrokerAccess(node, CHAIN_ID, PREFIX, [node.public.sign_key], tmp_path / "acl")
    access.load([low_order, alice.public.enc_key])
    access.add_patients([low_order])
    assert access.patients == 1
    built = build_broker_access(node, CHAIN_ID, PREFIX, [node.public.sign_key], [low_order])
    assert built.patients == 0


def test_invalid_pid_files_never_signal_a_process_that_is_not_the_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A victim of the node's own user, which SIGHUP would end (cat waits on its stdin for ever).
    victim = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{victim.pid}\n")
        assert not signal_broker(pid_file)
        assert "is not a mosquitto" in caplog.text
        # A link to a file that names it: not followed.
        named = tmp_path / "named.pid"
        named.write_text(f"{victim.pid}\n")
        pid_file.unlink()
        pid_file.symlink_to(named)
        assert not signal_broker(pid_file)
        assert "symbolic link" in caplog.text
        assert victim.poll() is None  # alive: never signalled
    finally:
        victim.kill()
        victim.wait()
        assert victim.stdin is not None
        victim.stdin.close()
