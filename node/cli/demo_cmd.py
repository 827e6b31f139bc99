"""`medledger demo`: the four-institution demo network and its consent story, end to end.

The logic lives in `medledger.node.demo`; this module only parses the options and reports errors.
"""

from __future__ import annotations

from pathlib import Path

import click

from medledger.node.cli._common import reports_errors
from medledger.node.demo import packaged_demo_config, run_demo


@click.command("demo")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo network and the patient's key go (a previous demo's chain is replaced).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The network description (default: the demo.toml shipped with medledger).",
)
@click.option("--once", is_flag=True, help="Exit when the scenario is done instead of running until Ctrl-C.")
@click.option(
    "--base-port",
    type=click.IntRange(0, 65000),
    default=None,
    help="Override the config's base_port (0: free ports).",
)
@click.option(
    "--mosquitto",
    default=None,
    metavar="PATH",
    help="The mosquitto binary to run (default: mosquitto on PATH, else /usr/sbin/mosquitto).",
)
@reports_errors
def demo(
    home: Path, config_path: Path | None, once: bool, base_port: int | None, mosquitto: str | None
) -> None:
    """Start the four-institution demo network and its MQTT broker, and run the consent story."""
    path = config_path or packaged_demo_config()
    run_demo(home, path, once=once, base_port=base_port, echo=click.echo, mosquitto=mosquitto)
