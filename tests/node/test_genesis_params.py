"""The genesis file and `medledger testnet` with consensus params (a version-2 genesis, ADR 0023)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medledger.chain.types import ConsensusParams, decode_genesis, encode_genesis
from medledger.node.cli import main
from medledger.node.errors import ConfigError
from medledger.node.genesis_file import genesis_from_json, genesis_to_json, load_genesis
from medledger.node.home import GENESIS_FILE
from medledger.node.testnet import NEW_NETWORK_CONSENSUS_PARAMS


def _testnet(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(
        main, ["testnet", "--validators", "4", "--out", str(out), *extra], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output


def test_a_new_testnet_gets_a_v2_genesis_with_the_default_params(tmp_path: Path) -> None:
    _testnet(tmp_path / "net")
    genesis = load_genesis(tmp_path / "net" / "validator0" / GENESIS_FILE)
    assert genesis.params == NEW_NETWORK_CONSENSUS_PARAMS
    data = json.loads((tmp_path / "net" / "validator1" / GENESIS_FILE).read_text())
    assert data["consensus"] == {
        "block_txs_max": 5000,
        "block_bytes_max": 16 * 1024 * 1024,
        "leader_window": 12,
    }
    raw = encode_genesis(genesis)
    assert decode_genesis(raw, max_bytes=len(raw)) == genesis


def test_testnet_options_set_the_params_and_v1_writes_none(tmp_path: Path) -> None:
    _testnet(
        tmp_path / "set", "--block-txs-max", "100", "--block-bytes-max", "300000", "--leader-window", "0"
    )
    params = load_genesis(tmp_path / "set" / "validator2" / GENESIS_FILE).params
    assert params == ConsensusParams(block_txs_max=100, block_bytes_max=300_000, leader_window=0)
    _testnet(tmp_path / "old", "--v1-genesis")
    old = load_genesis(tmp_path / "old" / "validator0" / GENESIS_FILE)
    assert old.params is None
    assert "consensus" not in json.loads((tmp_path / "old" / "validator0" / GENESIS_FILE).read_text())


def test_a_genesis_file_refuses_params_out_of_range_or_malformed(tmp_path: Path) -> None:
    _testnet(tmp_path / "net")
    data = genesis_to_json(load_genesis(tmp_path / "net" / "validator0" / GENESIS_FILE))
    for consensus in (
        {**data["consensus"], "block_txs_max": 0},
        {**data["consensus"], "block_bytes_max": 10},
        {**data["consensus"], "leader_window": -1},
        {"block_txs_max": 5},
        "twelve",
    ):
        with pytest.raises(ConfigError, match="genesis"):
            genesis_from_json({**data, "consensus": consensus}, "genesis.json")
