"""The genesis file: the chain's start, shared by every node of a network, as readable JSON.

{"chain_id": "...", "genesis_time_ms": 1700000000000,
 "validators": [{"name": "...", "sign_key": "<hex>", "enc_key": "<hex>"}],
 "app_state": "<base64>",
 "consensus": {"block_txs_max": 5000, "block_bytes_max": 16777216, "leader_window": 12}}

`consensus` (a version-2 genesis, docs/adr/0023) is absent from a version-1 genesis file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from medledger.chain.errors import CodecError
from medledger.chain.types import (
    ConsensusParams,
    Genesis,
    Validator,
    ValidatorSet,
    decode_genesis,
    encode_genesis,
)
from medledger.node.errors import ConfigError


def genesis_to_json(genesis: Genesis) -> dict[str, Any]:
    data: dict[str, Any] = {
        "chain_id": genesis.chain_id,
        "genesis_time_ms": genesis.genesis_time_ms,
        "validators": [
            {"name": v.name, "sign_key": v.sign_key.hex(), "enc_key": v.enc_key.hex()}
            for v in genesis.validators.validators
        ],
        "app_state": base64.b64encode(genesis.app_state).decode(),
    }
    if genesis.params is not None:
        data["consensus"] = dataclasses.asdict(genesis.params)
    return data


def genesis_from_json(data: Any, where: str) -> Genesis:
    try:
        validators = [
            Validator(str(v["name"]), bytes.fromhex(v["sign_key"]), bytes.fromhex(v["enc_key"]))
            for v in data["validators"]
        ]
        consensus = data.get("consensus")
        params = (
            None
            if consensus is None
            else ConsensusParams(
                block_txs_max=int(consensus["block_txs_max"]),
                block_bytes_max=int(consensus["block_bytes_max"]),
                leader_window=int(consensus["leader_window"]),
            )
        )
        genesis = Genesis(
            chain_id=str(data["chain_id"]),
            genesis_time_ms=int(data["genesis_time_ms"]),
            validators=ValidatorSet.of(validators),
            app_state=base64.b64decode(data.get("app_state", ""), validate=True),
            params=params,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ConfigError(f"{where}: not a valid genesis file ({type(exc).__name__}: {exc})") from None
    # Round-trip through the canonical codec so every limit of the wire type applies.
    try:
        return decode_genesis(encode_genesis(genesis), max_bytes=64 * 1024 * 1024)
    except CodecError as exc:
        raise ConfigError(f"{where}: not a valid genesis: {exc.message}") from None


def load_genesis(path: Path) -> Genesis:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"genesis file {path} does not exist") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge numbers
        raise ConfigError(f"{path}: cannot be read as JSON: {exc}") from None
    return genesis_from_json(data, str(path))


def save_genesis(path: Path, genesis: Genesis) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(genesis_to_json(genesis), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
