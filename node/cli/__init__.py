"""The `medledger` command line (click), operator-first: keys, init, start, status.

This package holds the root group `main` (the console script `medledger = medledger.node.cli:main`)
and registers one module per command group; each module only parses options, calls the layer
that owns the logic and prints:

- `keys`: `keys new|show|export|import`
- `setup`: `init`, `testnet` (create node homes)
- `serve`: `start`, `status`
- `cluster`: `cluster up|down|status`
- `verify`: `verify`, `rebuild`
- `simulate_cmd`: `simulate` (the simulation itself is `medledger.node.simulate`)
- `demo_cmd`: `demo` (the scenario itself is `medledger.node.demo`)
- `patient`: the patient's client, `patient ...`
- `patient_claims`: `patient consent grant|revoke|list` and `patient claims` (issue 12)
- `patient_rights`: its rights commands, `patient request-records|requests|amend|amendments|disagree`
- `governance`: `join` and `governance propose-institution|approve|suspend|reinstate|remove|list`
- `_common`: what they share (failing with a message, passphrases, recurring options)
"""

from __future__ import annotations

import click

from medledger import __version__
from medledger.node.cli import (
    cluster,
    demo_cmd,
    events_cmd,
    governance,
    keys,
    mqtt_cmd,
    patient,
    research_cmd,
    serve,
    setup,
    simulate_cmd,
    verify,
)
from medledger.node.cli import patient_claims as _patient_claims  # noqa: F401 - adds `patient` commands
from medledger.node.cli import patient_rights as _patient_rights  # noqa: F401 - adds `patient` commands

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medledger")
def main() -> None:
    """medledger: a permissioned ledger for patient data."""


# The command objects are reached through their modules, so that `medledger.node.cli.verify` (and
# every other name here) stays the module, never the command it defines.
for _command in (
    keys.keys,
    setup.init,
    serve.start,
    serve.status,
    verify.verify,
    verify.rebuild,
    setup.testnet,
    governance.join,
    governance.governance,
    cluster.cluster,
    demo_cmd.demo,
    patient.patient,
    simulate_cmd.simulate,
    mqtt_cmd.mqtt,
    events_cmd.events,
    research_cmd.research,
):
    main.add_command(_command)
