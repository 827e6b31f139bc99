"""`medledger join` and `medledger governance …`: institutions join, and are suspended, reinstated or
removed, by a vote of the validators (issue 16, ADR 0020).

`join` runs on the joining institution's machine and needs no network: it makes the home and the
join request file. The `governance` commands run on a validator's machine against its running
node (its home's `api.json`, API token and node key): each approval is a tx signed with the node
key, and a change passes in the block where more than two thirds of the validators approved it.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from medledger.chain.codec import WireType
from medledger.health import client
from medledger.health.membership_types import (
    KIND_INSTITUTION_ADD,
    KIND_INSTITUTION_REINSTATE,
    KIND_INSTITUTION_REMOVE,
    KIND_INSTITUTION_SUSPEND,
    STATUS_KINDS,
    MembershipKeyBody,
)
from medledger.health.types import ROLES, Institution
from medledger.node.cli._common import (
    fail,
    home_option,
    json_option,
    parse_hex32,
    passphrase_file_option,
    reports_errors,
)
from medledger.node.config import API_TOKEN_FILE, load_config
from medledger.node.genesis_file import load_genesis
from medledger.node.joining import join_home, load_join_request
from medledger.node.run import api_address_path, load_node_identity
from medledger.node.tls import CERT_FILE

#: How long a governance command waits for its approval to be committed, in milliseconds.
COMMIT_WAIT_MS = 20_000
_TIMEOUT_S = 30.0


@click.command("join")
@click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="The network's published genesis.json.",
)
@click.option("--name", required=True, help="The joining institution's display name.")
@click.option("--role", type=click.Choice(sorted(ROLES)), required=True, help="The institution's role.")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The new node home to create (must not exist, or be empty).",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    help="A peer URL of the network to dial, e.g. http://10.0.0.2:26656 (repeatable).",
)
@click.option("--api-port", type=click.IntRange(0, 65535), default=26657, show_default=True)
@click.option("--p2p-port", type=click.IntRange(0, 65535), default=26656, show_default=True)
@click.option("--ops-port", type=click.IntRange(0, 65535), default=26660, show_default=True)
@click.option("--block-interval-ms", type=click.IntRange(1, 60_000), default=200, show_default=True)
@passphrase_file_option(help_text="The new node key's passphrase (default: generate one in the home).")
@json_option("Print the join request as JSON.")
@reports_errors
def join(
    genesis_file: Path,
    name: str,
    role: str,
    home: Path,
    peers: tuple[str, ...],
    api_port: int,
    p2p_port: int,
    ops_port: int,
    block_interval_ms: int,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Make the home of an institution joining a running network, and its join request.

    The request (`HOME/join-request.json`: name, role, public keys, chain) goes to a validator's
    operator, who proposes it with `medledger governance propose-institution FILE`; once more than
    two thirds of the validators approved it, the node (started with `medledger start --home
    HOME`, which syncs from genesis meanwhile) acts for the institution.
    """
    if not peers:
        fail("give at least one --peer URL of the network (e.g. --peer http://10.0.0.2:26656)")
    passphrase = passphrase_file.read_bytes().rstrip(b"\r\n") if passphrase_file else None
    result = join_home(
        home,
        genesis_file=genesis_file,
        name=name,
        role=role,
        peers=peers,
        api_port=api_port,
        p2p_port=p2p_port,
        ops_port=ops_port,
        passphrase=passphrase,
        block_interval_ms=block_interval_ms,
    )
    if as_json:
        click.echo(json.dumps(result.request.to_json(), indent=2))
        return
    institution = result.request.institution
    click.echo(f"created {result.home}")
    click.echo(f"  institution: {institution.name} ({institution.role})")
    click.echo(f"  sign key:    {institution.sign_key.hex()}")
    click.echo(f"  enc key:     {institution.enc_key.hex()}")
    click.echo(f"  chain id:    {result.request.chain_id}")
    click.echo(f"join request: {result.request_path}")
    click.echo("send it to a validator's operator: medledger governance propose-institution FILE --home …")
    click.echo(f"start the node (it syncs once proposed): medledger start --home {result.home}")


@click.group("governance")
def governance() -> None:
    """Institution membership by the validators' vote: propose, approve, list.

    Run on a validator's machine, against its running node (--home: the validator's home). Each
    approval is a tx signed with the validator's node key; a change passes in the block where more
    than two thirds of the current validators have approved it.
    """


def _node(home: Path) -> tuple[str, str, ssl.SSLContext | None]:
    address = api_address_path(home)
    try:
        url = str(json.loads(address.read_text(encoding="utf-8"))["url"])
    except (OSError, ValueError, KeyError):
        fail(f"{home}: no running node found ({address.name} is missing: start it with medledger start)")
    try:
        token = (home / API_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError as exc:
        fail(f"{home / API_TOKEN_FILE}: cannot be read: {exc.strerror}")
    context = None
    if url.startswith("https://"):
        cert = home / CERT_FILE
        context = ssl.create_default_context(cafile=str(cert) if cert.exists() else None)
    return url.rstrip("/"), token, context


def _call(home: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url, token, context = _node(home)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S, context=context) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
        except ValueError:
            problem = {}
        detail = problem.get("detail") or exc.reason
        rule = problem.get("rule") or problem.get("code")
        fail(f"the node refused it ({exc.code}{f', {rule}' if rule else ''}): {detail}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"cannot reach the node at {url}: {getattr(exc, 'reason', exc)}")


def _submit(home: Path, kind: str, body: WireType) -> dict[str, Any]:
    """Sign `kind`/`body` with the validator's node key, submit it and wait for its block."""
    config = load_config(home)
    identity = load_node_identity(config)
    genesis = load_genesis(config.genesis_file)
    if isinstance(body, Institution):
        _, raw, _ = client.build_institution_add(identity, body, chain_id=genesis.chain_id)
    elif isinstance(body, MembershipKeyBody):
        _, raw, _ = client.build_institution_status(identity, kind, body.sign_key, chain_id=genesis.chain_id)
    else:  # pragma: no cover - the commands pass one of the two
        raise TypeError(type(body).__name__)
    result: dict[str, Any] = _call(
        home, "POST", f"/v1/txs?wait_ms={COMMIT_WAIT_MS}", {"tx": base64.b64encode(raw).decode()}
    )
    if result.get("status") != "committed":
        fail(f"the approval {result.get('tx_id')} is not committed yet; see medledger governance list")
    outcome = result.get("result", {})
    if not outcome.get("ok"):
        fail(f"the approval was refused in block {result.get('height')}: {outcome.get('code')}")
    return result


def _find_change(home: Path, kind: str, sign_key: bytes) -> dict[str, Any] | None:
    changes = _call(home, "GET", "/v1/health/membership")["changes"]
    found = [c for c in changes if c["kind"] == kind and c["institution"]["sign_key"] == sign_key.hex()]
    return found[-1] if found else None


def _report(home: Path, kind: str, sign_key: bytes, result: dict[str, Any]) -> None:
    change = _find_change(home, kind, sign_key)
    click.echo(f"approval committed in block {result.get('height')} (tx {result.get('tx_id')})")
    if change is None:  # pragma: no cover - the approval just recorded it
        return
    click.echo(f"  change:    {change['change_id']} ({kind}, {change['institution']['name']})")
    click.echo(f"  approvals: {change['approvals_counted']} of {change['approvals_needed']} needed")
    if change["status"] == "passed":
        click.echo(f"  passed in block {change['decided_height']}")
    else:
        click.echo("  pending: other validators approve with medledger governance approve CHANGE_ID")


@governance.command("propose-institution")
@click.argument("request_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@home_option
@reports_errors
def propose_institution(request_file: Path, home: Path) -> None:
    """Propose (and approve, as this validator) adding the institution of a join request FILE.

    FILE is the `join-request.json` that `medledger join` wrote on the joining institution's
    machine; it must be for this network's genesis. Other validators then approve the change by
    its id (`medledger governance list`, `medledger governance approve CHANGE_ID`).
    """
    request = load_join_request(request_file)
    genesis = load_genesis(load_config(home).genesis_file)
    if request.chain_id != genesis.chain_id or request.genesis_hash != genesis.hash():
        fail(f"{request_file}: the join request is for another network (chain {request.chain_id!r})")
    result = _submit(home, KIND_INSTITUTION_ADD, request.institution)
    _report(home, KIND_INSTITUTION_ADD, request.institution.sign_key, result)


def _status_command(name: str, kind: str, what: str) -> None:
    @governance.command(
        name, help=f"Propose (and approve, as this validator) {what} the institution SIGN_KEY."
    )
    @click.argument("sign_key")
    @home_option
    @reports_errors
    def command(sign_key: str, home: Path) -> None:
        key = _parse_key(sign_key)
        _report(home, kind, key, _submit(home, kind, MembershipKeyBody(key)))


def _parse_key(value: str) -> bytes:
    return parse_hex32(value, "SIGN_KEY must be an institution's signing key: 64 hex characters")


_status_command("suspend", KIND_INSTITUTION_SUSPEND, "suspending")
_status_command("reinstate", KIND_INSTITUTION_REINSTATE, "reinstating")
_status_command("remove", KIND_INSTITUTION_REMOVE, "removing")


@governance.command("approve")
@click.argument("change_id")
@home_option
@reports_errors
def approve(change_id: str, home: Path) -> None:
    """Approve, as this validator, the pending change CHANGE_ID (or a unique prefix of it, at least
    8 hex characters; `medledger governance list` shows them)."""
    prefix = change_id.lower()
    if len(prefix) < 8:
        fail("give at least 8 hex characters of the change id")
    changes = _call(home, "GET", "/v1/health/membership")["changes"]
    matches = [c for c in changes if c["change_id"].startswith(prefix)]
    if not matches:
        fail(f"no change {change_id} on the ledger (medledger governance list shows them)")
    if len(matches) > 1:
        fail(f"{change_id} names {len(matches)} changes: give more of its id")
    change = matches[0]
    if change["status"] != "pending":
        fail(f"change {change['change_id']} already passed in block {change['decided_height']}")
    body = change["institution"]
    key = bytes.fromhex(body["sign_key"])
    kind = str(change["kind"])
    payload: WireType
    if kind == KIND_INSTITUTION_ADD:
        payload = Institution(body["name"], body["role"], key, bytes.fromhex(body["enc_key"]))
    elif kind in STATUS_KINDS:
        payload = MembershipKeyBody(key)
    else:
        fail(f"change {change['change_id']} has an unknown kind {kind!r}")
    _report(home, kind, key, _submit(home, kind, payload))


@governance.command("list")
@home_option
@json_option("Print the node's answer as JSON.")
@reports_errors
def list_changes(home: Path, as_json: bool) -> None:
    """List the institutions with their status and every membership change, pending and decided."""
    data = _call(home, "GET", "/v1/health/membership")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"validators: {len(data['validators'])}")
    click.echo("institutions:")
    for i in data["institutions"]:
        click.echo(f"  {i['sign_key'][:16]}  {i['status']:<9}  {i['role']:<8}  {i['name']}")
    click.echo("changes:")
    if not data["changes"]:
        click.echo("  (none)")
    for c in data["changes"]:
        decided = f"passed in block {c['decided_height']}" if c["status"] == "passed" else "pending"
        click.echo(
            f"  {c['change_id'][:16]}  {c['kind'].removeprefix('health.'):<22}  {c['institution']['name']}"
            f"  approvals {c['approvals_counted']}/{c['approvals_needed']}  {decided}"
        )
