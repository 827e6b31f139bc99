"""`medledger join` and the governance commands' own checks, without a network (issue 16, ADR 0020).

The join request comes from outside the network: every field is checked before a validator signs
an approval of it. The live path (a real network voting) is tests/health_api/test_join_governance.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nacl.pwhash.argon2id
import pytest
from click.testing import CliRunner, Result

from medledger.crypto import load_identity
from medledger.node.cli import main
from medledger.node.errors import ConfigError
from medledger.node.joining import JOIN_REQUEST_FILE, load_join_request
from medledger.node.testnet import create_testnet

PASSPHRASE = "test-pass"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE})


def make_net(out: Path, app: str = "health") -> Path:
    """A two-validator testnet's first home (its genesis is what a joining institution is given)."""
    nodes = create_testnet(
        out,
        validators=2,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app=app,
        roles=["clinic", "hospital"] if app == "health" else None,
    )
    return nodes[0].home


def join_args(genesis: Path, home: Path, *extra: str) -> list[str]:
    return [
        "join", "--genesis", str(genesis), "--name", "Fifth Street Clinic", "--role", "clinic",
        "--home", str(home), "--peer", "http://127.0.0.1:1", *extra,
    ]  # fmt: skip


def test_join_makes_the_home_and_a_request_that_loads(tmp_path: Path) -> None:
    validator = make_net(tmp_path / "net")
    passphrase = tmp_path / "pass"
    passphrase.write_text(PASSPHRASE + "\n", encoding="utf-8")
    home = tmp_path / "fifth"
    result = run(*join_args(validator / "genesis.json", home, "--passphrase-file", str(passphrase)))
    assert result.exit_code == 0, result.output
    request = load_join_request(home / JOIN_REQUEST_FILE)
    identity = load_identity(home / "node_key.json", PASSPHRASE.encode())
    assert request.institution.sign_key == identity.public.sign_key
    assert request.institution.enc_key == identity.public.enc_key
    assert request.institution.name == "Fifth Street Clinic"
    assert request.institution.role == "clinic"
    assert identity.public.sign_key.hex() in result.output
    assert "http://127.0.0.1:1" in (home / "config.toml").read_text(encoding="utf-8")
    assert (home / "genesis.json").read_bytes() == (validator / "genesis.json").read_bytes()
    # A home is made once.
    again = run(*join_args(validator / "genesis.json", home))
    assert again.exit_code == 1
    assert "is not empty" in again.output


def test_join_refuses_what_cannot_join(tmp_path: Path) -> None:
    validator = make_net(tmp_path / "net")
    kv = make_net(tmp_path / "kv", app="kv-fixture")
    genesis = validator / "genesis.json"
    no_peer = run(
        "join", "--genesis", str(genesis), "--name", "X", "--role", "clinic", "--home", str(tmp_path / "a")
    )
    assert no_peer.exit_code == 1
    assert "--peer" in no_peer.output
    bad_role = run(*join_args(genesis, tmp_path / "b")[:-2], "--role", "bank")
    assert bad_role.exit_code == 2
    assert "bank" in bad_role.output
    not_health = run(*join_args(kv / "genesis.json", tmp_path / "c"))
    assert not_health.exit_code == 1
    assert "not a health network's genesis" in not_health.output
    bad_peer = run(*join_args(genesis, tmp_path / "d"), "--peer", "10.0.0.2:26656")
    assert bad_peer.exit_code == 1
    assert "must be a URL" in bad_peer.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a medledger join request"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d["institution"].update(role="bank"), "role 'bank'"),
        (lambda d: d["institution"].update(sign_key="zz" * 32), "sign_key must be 64 hex"),
        (lambda d: d["institution"].update(enc_key="00"), "enc_key must be 64 hex"),
        (lambda d: d["institution"].update(name="x" * 10_000), "does not encode"),
        (lambda d: d.pop("institution"), "names its chain_id and institution"),
    ],
)
def test_invalid_join_requests_are_refused_with_what_is_wrong(
    tmp_path: Path, change: object, message: str
) -> None:
    validator = make_net(tmp_path / "net")
    home = tmp_path / "fifth"
    assert run(*join_args(validator / "genesis.json", home)).exit_code == 0
    path = home / JOIN_REQUEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_join_request(path)
    # The validator's command says the same, before it signs anything.
    result = run("governance", "propose-institution", str(path), "--home", str(validator))
    assert result.exit_code == 1
    assert message.split("'", maxsplit=1)[0] in result.output


def test_governance_commands_need_a_running_node(tmp_path: Path) -> None:
    validator = make_net(tmp_path / "net")
    home = tmp_path / "fifth"
    assert run(*join_args(validator / "genesis.json", home)).exit_code == 0
    result = run("governance", "propose-institution", str(home / JOIN_REQUEST_FILE), "--home", str(validator))
    assert result.exit_code == 1
    assert "no running node found" in result.output
    assert "start it with medledger start" in result.output
    short = run("governance", "approve", "abc", "--home", str(validator))
    assert short.exit_code == 1
    assert "at least 8 hex characters" in short.output
    key = run("governance", "remove", "nothex", "--home", str(validator))
    assert key.exit_code == 1
    assert "64 hex characters" in key.output


def test_a_request_for_another_network_is_refused(tmp_path: Path) -> None:
    validator = make_net(tmp_path / "net")
    other = make_net(tmp_path / "other")
    home = tmp_path / "fifth"
    assert run(*join_args(other / "genesis.json", home)).exit_code == 0
    result = run("governance", "propose-institution", str(home / JOIN_REQUEST_FILE), "--home", str(validator))
    assert result.exit_code == 1
    assert "for another network" in result.output


def test_help_texts_say_what_each_command_does() -> None:
    for args, words in [
        (["join", "--help"], "join request"),
        (["governance", "--help"], "two thirds"),
        (["governance", "propose-institution", "--help"], "join request"),
        (["governance", "approve", "--help"], "pending change"),
        (["governance", "list", "--help"], "pending and decided"),
        (["governance", "remove", "--help"], "removing"),
    ]:
        result = run(*args)
        assert result.exit_code == 0, args
        assert words in " ".join(result.output.split()), (args, result.output)
