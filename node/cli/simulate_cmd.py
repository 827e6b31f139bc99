"""`medledger simulate`: run seeded simulated networks and print what each run checked.

The simulation lives in `medledger.node.simulate` (`build_config`, `simulate`); this module only
parses the options, prints one line a seed and a total, and exits 1 when an invariant broke.
"""

from __future__ import annotations

import sys

import click

from medledger.network.sim import FaultKind, TimeSkew
from medledger.node.cli._common import fail
from medledger.node.simulate import build_config
from medledger.node.simulate import simulate as run_simulation_summary


@click.command("simulate")
@click.option("--nodes", type=click.IntRange(1, 31), default=4, show_default=True, help="Validators.")
@click.option("--seed", type=click.IntRange(0, 2**63), default=1, show_default=True, help="First seed.")
@click.option(
    "--runs", type=click.IntRange(1, 100_000), default=1, show_default=True, help="Seeds seed..seed+runs-1."
)
@click.option(
    "--twins", type=click.IntRange(0, 31), default=0, show_default=True, help="Byzantine twin validators."
)
@click.option(
    "--fault",
    "faults",
    type=click.Choice([k.value for k in FaultKind]),
    multiple=True,
    help="Fault kinds to draw from (repeatable; default: all).",
)
@click.option("--no-faults", is_flag=True, help="A fault-free run.")
@click.option(
    "--skew-proposer",
    type=click.Choice([s.value for s in TimeSkew]),
    default=None,
    help="The twins (or validator 0) also stamp their blocks with this Byzantine time skew.",
)
def simulate(
    nodes: int,
    seed: int,
    runs: int,
    twins: int,
    faults: tuple[str, ...],
    no_faults: bool,
    skew_proposer: str | None,
) -> None:
    """Run deterministic simulated networks and check every safety and liveness invariant."""
    if twins > nodes:
        fail("--twins cannot exceed --nodes")
    kinds = tuple(FaultKind(k) for k in faults) if faults else tuple(FaultKind)
    skew = TimeSkew(skew_proposer) if skew_proposer is not None else None
    failures = 0
    commits = events = evidence = recorded = 0
    for run_seed in range(seed, seed + runs):
        summary = run_simulation_summary(
            build_config(
                nodes=nodes, seed=run_seed, twins=twins, kinds=kinds, faults=not no_faults, skew=skew
            )
        )
        config, result = summary.config, summary.result
        injected = ", ".join(f.kind.value for f in config.faults) or "none"
        if result is not None:
            commits += result.commits
            events += result.events
            evidence += result.evidence
            recorded += result.evidence_recorded
            heights = sorted(set(result.heights.values()))
            line = (
                f"seed {run_seed}: heights {heights}, {result.commits} commits, {result.events} events "
                f"(invariants checked after each), evidence {result.evidence}, faults [{injected}]"
            )
            if not result.live and config.expect_liveness:
                line += ", NOT LIVE"
            click.echo(line)
        if summary.failure is not None:
            failures += 1
            click.echo(f"seed {run_seed}: INVARIANT BROKEN\n{summary.failure}", err=True)
    click.echo(
        f"{runs} run(s), {nodes} validators, {twins} twin(s): {commits} commits, {events} events, "
        f"{evidence} equivocations seen, {recorded} recorded on the ledger, "
        f"{failures} run(s) broke an invariant"
    )
    if failures:
        sys.exit(1)
