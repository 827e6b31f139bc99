"""The `medledger` command line and the node configuration it reads.

Commands run in-process through click's `CliRunner`, except `status`, which runs as a real
subprocess against a real node. Every operator mistake must end with a non-zero exit code and a
message that says what is wrong and where, never with a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from node_harness import NodeClient, sign_kv

from medledger.chain.store import BlockStore
from medledger.crypto import Identity, load_identity, read_public_identity
from medledger.node.cli import main
from medledger.node.config import ENV_PASSPHRASE, load_config
from medledger.node.errors import ConfigError
from medledger.node.genesis_file import load_genesis
from medledger.node.home import DATA_DIR, GENESIS_FILE, KEY_FILE, PASSPHRASE_FILE

#: The environment every command sees: no passphrase unless a test gives one, no config overrides.
CLEAN_ENV: dict[str, str | None] = dict.fromkeys(
    [name for name in os.environ if name.startswith("MEDLEDGER_")] + [ENV_PASSPHRASE]
)


def run_cli(args: Sequence[str | Path], env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def assert_failed_clearly(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "\nError: " in f"\n{result.stderr}", result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_bytes(b"correct horse battery staple\n")
    return path


# -- keys ---------------------------------------------------------------------------------------


def test_keys_new_writes_a_private_key_file_and_show_prints_its_keys(
    tmp_path: Path, passphrase_file: Path
) -> None:
    key_file = tmp_path / "alice.key"
    result = run_cli(["keys", "new", "--out", key_file, "--passphrase-file", passphrase_file])
    assert result.exit_code == 0, result.output
    assert mode_of(key_file) == 0o600
    public = read_public_identity(key_file)
    for value in (public.fingerprint(), public.sign_key.hex(), public.enc_key.hex(), str(key_file)):
        assert value in result.output
    # The file's trailing newline is not part of the passphrase.
    assert load_identity(key_file, b"correct horse battery staple").public == public

    shown = run_cli(["keys", "show", key_file])
    assert shown.exit_code == 0, shown.output
    assert shown.output == result.output

    checked = run_cli(["keys", "show", key_file, "--check", "--passphrase-file", passphrase_file])
    assert checked.exit_code == 0, checked.output
    assert "passphrase:  ok" in checked.output


def test_keys_new_takes_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "env.key"
    result = run_cli(["keys", "new", "--out", key_file], env={ENV_PASSPHRASE: "from-env"})
    assert result.exit_code == 0, result.output
    assert load_identity(key_file, b"from-env").public == read_public_identity(key_file)


def test_keys_new_refuses_to_overwrite_without_force(tmp_path: Path, passphrase_file: Path) -> None:
    key_file = tmp_path / "alice.key"
    assert run_cli(["keys", "new", "--out", key_file, "--passphrase-file", passphrase_file]).exit_code == 0
    original = key_file.read_bytes()

    again = run_cli(["keys", "new", "--out", key_file, "--passphrase-file", passphrase_file])
    assert_failed_clearly(again, str(key_file), "refusing to overwrite")
    assert key_file.read_bytes() == original

    forced = run_cli(["keys", "new", "--out", key_file, "--passphrase-file", passphrase_file, "--force"])
    assert forced.exit_code == 0, forced.output
    assert key_file.read_bytes() != original
    assert mode_of(key_file) == 0o600
    assert read_public_identity(key_file).sign_key.hex() in forced.output


def test_keys_new_without_a_passphrase_fails_clearly(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    result = run_cli(["keys", "new", "--out", key_file])
    assert_failed_clearly(result, "no passphrase", "--passphrase-file", ENV_PASSPHRASE)
    assert not key_file.exists()


def test_keys_show_check_with_a_wrong_passphrase_fails_clearly(tmp_path: Path, passphrase_file: Path) -> None:
    key_file = tmp_path / "alice.key"
    assert run_cli(["keys", "new", "--out", key_file, "--passphrase-file", passphrase_file]).exit_code == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    result = run_cli(["keys", "show", key_file, "--check", "--passphrase-file", wrong])
    assert_failed_clearly(result, str(key_file), "wrong passphrase")


def test_keys_show_of_a_file_that_is_not_a_key_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.key"
    bogus.write_text('{"format": "something else"}')
    assert_failed_clearly(run_cli(["keys", "show", bogus]), str(bogus))


# -- init ---------------------------------------------------------------------------------------


def test_init_creates_config_genesis_and_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_cli(["init", "--home", home, "--name", "alpha", "--chain-id", "clinic-1", "--api-port", "0"])
    assert result.exit_code == 0, result.output
    assert f"initialised {home}" in result.output
    assert "generated a passphrase" in result.output

    config = load_config(home, environ={})
    assert config.node.name == "alpha"
    assert config.api.port == 0
    genesis = load_genesis(home / GENESIS_FILE)
    assert genesis.chain_id == "clinic-1"
    assert mode_of(home / KEY_FILE) == 0o600
    assert mode_of(home / PASSPHRASE_FILE) == 0o600
    # The generated passphrase opens the key, and the key is the chain's only validator.
    identity = load_identity(home / KEY_FILE, (home / PASSPHRASE_FILE).read_bytes().rstrip(b"\n"))
    assert [v.sign_key for v in genesis.validators.validators] == [identity.public.sign_key]
    assert [v.name for v in genesis.validators.validators] == ["alpha"]


def test_init_with_a_passphrase_file_keeps_a_private_copy(tmp_path: Path, passphrase_file: Path) -> None:
    home = tmp_path / "home"
    result = run_cli(["init", "--home", home, "--passphrase-file", passphrase_file])
    assert result.exit_code == 0, result.output
    assert "generated a passphrase" not in result.output
    assert (home / PASSPHRASE_FILE).read_bytes() == passphrase_file.read_bytes()
    assert mode_of(home / PASSPHRASE_FILE) == 0o600
    load_identity(home / KEY_FILE, b"correct horse battery staple")


def test_init_refuses_an_initialised_home_without_force(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(["init", "--home", home]).exit_code == 0
    files = {name: (home / name).read_bytes() for name in ("config.toml", GENESIS_FILE, KEY_FILE)}

    again = run_cli(["init", "--home", home])
    assert_failed_clearly(again, "already initialised", "--force")
    assert {name: (home / name).read_bytes() for name in files} == files


def test_init_refuses_a_data_directory_that_holds_a_chain(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / DATA_DIR).mkdir(parents=True)
    BlockStore.open(home / DATA_DIR).close()  # a chain's files
    result = run_cli(["init", "--home", home])
    assert_failed_clearly(result, str(home / DATA_DIR), "holds a chain", "--force")
    assert not (home / KEY_FILE).exists()


def test_init_force_replaces_the_home_and_moves_the_data_aside(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(["init", "--home", home]).exit_code == 0
    old_key = read_public_identity(home / KEY_FILE)
    BlockStore.open(home / DATA_DIR).close()  # a chain's files
    old_data = sorted(p.name for p in (home / DATA_DIR).iterdir())

    result = run_cli(["init", "--home", home, "--force"])
    assert result.exit_code == 0, result.output
    (moved,) = [p for p in home.iterdir() if p.name.startswith("data.replaced-")]
    assert f"moved the old data directory to {moved}" in result.output
    assert sorted(p.name for p in moved.iterdir()) == old_data  # moved, never deleted
    assert not (home / DATA_DIR).exists()
    assert read_public_identity(home / KEY_FILE) != old_key


# -- configuration --------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert run_cli(["init", "--home", home, "--api-port", "0", "--ops-port", "0"]).exit_code == 0
    return home


def config_error(home: Path, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(home, environ=environ or {})
    return caught.value.message


def test_config_error_bad_toml_names_the_file(home: Path) -> None:
    (home / "config.toml").write_text("[api\nport = 1\n")
    message = config_error(home)
    assert message.startswith(f"{home / 'config.toml'}: not valid TOML")


def test_config_error_bad_port_in_the_environment_names_the_variable(home: Path) -> None:
    message = config_error(home, {"MEDLEDGER_API_PORT": "abc"})
    assert message == "MEDLEDGER_API_PORT: [api] port: expected an integer, got 'abc'"
    message = config_error(home, {"MEDLEDGER_API_PORT": "70000"})
    assert message == "MEDLEDGER_API_PORT: [api] port: expected an integer in [0, 65535], got 70000"
    assert load_config(home, environ={"MEDLEDGER_API_PORT": " 8080 "}).api.port == 8080


def test_config_error_bad_values_in_the_file_name_the_file_and_key(home: Path) -> None:
    path = home / "config.toml"
    text = path.read_text()
    cases = {
        "port = 0": ('port = "zero"', f"{path}: [api] port: expected an integer, got 'zero'"),
        'log_level = "info"': ('log_level = "loud"', f"{path}: [node] log_level: expected one of"),
        "[mempool]": ("[mempool]\nsize = 3", f"{path}: [mempool] has unknown key(s) size"),
        "[api]": ("[apis]\n[api]", f"{path}: unknown section(s) apis"),
    }
    for original, (replacement, expected) in cases.items():
        assert original in text
        path.write_text(text.replace(original, replacement, 1))
        assert config_error(home).startswith(expected), (replacement, config_error(home))
    path.write_text(text)
    load_config(home, environ={})


def test_config_error_missing_file_says_to_run_init(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert "does not exist" in message
    assert "medledger init --home" in message


def test_start_with_a_bad_environment_port_fails_clearly(home: Path) -> None:
    result = run_cli(["start", "--home", home], env={"MEDLEDGER_API_PORT": "abc", ENV_PASSPHRASE: "x"})
    assert_failed_clearly(result, "MEDLEDGER_API_PORT", "expected an integer", "'abc'")


def test_start_without_a_config_fails_clearly(tmp_path: Path) -> None:
    assert_failed_clearly(run_cli(["start", "--home", tmp_path]), "does not exist", "medledger init")


def test_start_with_a_wrong_passphrase_fails_clearly(home: Path) -> None:
    result = run_cli(["start", "--home", home], env={ENV_PASSPHRASE: "not the passphrase"})
    assert_failed_clearly(result, str(home / KEY_FILE), "wrong passphrase")
    assert not (home / DATA_DIR).exists() or not any((home / DATA_DIR).iterdir())


# -- status ---------------------------------------------------------------------------------------


def run_status(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "medledger.node.cli", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_status_of_a_running_node_prints_its_height(node_process: NodeClient, signer: Identity) -> None:
    node = node_process
    tx = sign_kv(signer, node.chain_id, b"status")
    assert node.post_json("/v1/txs?wait_ms=5000", {"tx": tx.b64}).status == 200
    status = node.status()

    result = run_status("--home", str(node.home))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"height:      {status['height']}" in lines
    assert f"chain:       {node.chain_id}" in lines
    assert f"node:        node0 ({node.ops_url})" in lines
    assert "validator:   yes (1 in set)" in lines

    as_json = run_status("--url", node.ops_url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["height"] == status["height"]
    assert data["latest_block_hash"] == status["latest_block_hash"]


def test_status_without_a_node_fails_clearly(home: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = run_status("--url", url)
    assert result.returncode != 0
    assert result.stderr.startswith(f"Error: cannot reach the node at {url}"), result.stderr
    assert "Traceback" not in result.stderr

    # A home whose node is not running (no api.json; its config says port 0).
    result = run_status("--home", str(home))
    assert result.returncode != 0
    assert "Error: cannot reach the node at http://127.0.0.1:0" in result.stderr
    assert "Traceback" not in result.stderr
