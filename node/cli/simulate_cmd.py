"""`medledger simulate`: run seeded simulated networks and print what each run checked.

The simulation lives in `medledger.node.simulate` (`build_config`, `simulate`); this module only
parses the options, prints one line a seed and a total, and exits 1 when an invariant broke.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from medledger.chain.types import LEADER_WINDOW_MAX
from medledger.network.sim import FaultKind, TimeSkew
from medledger.node.cli._common import fail
from medledger.node.simulate import HEIGHTS_DEFAULT, build_config, write_run_report
from medledger.node.simulate import simulate as run_simulation_summary


@click.command("simulate")
@click.option("--nodes", type=click.IntRange(1, 128), default=4, show_default=True, help="Validators.")
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
@click.option(
    "--heights",
    "heights_after",
    type=click.IntRange(1, 100_000),
    default=HEIGHTS_DEFAULT,
    show_default=True,
    help="Heights every correct node must commit after the last fault healed.",
)
@click.option(
    "--hostile", type=click.IntRange(0, 16), default=0, show_default=True, help="Hostile sync peers."
)
@click.option(
    "--leader-window",
    type=click.IntRange(0, LEADER_WINDOW_MAX),
    default=None,
    help="A version-2 genesis skipping, at round 0, validators absent from this many recent blocks.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the timeline of the first run that broke an invariant (else the last run) as HTML.",
)
def simulate(
    nodes: int,
    seed: int,
    runs: int,
    twins: int,
    faults: tuple[str, ...],
    no_faults: bool,
    skew_proposer: str | None,
    heights_after: int,
    hostile: int,
    leader_window: int | None,
    report: Path | None,
) -> None:
    """Run deterministic simulated networks and check every safety and liveness invariant."""
    if twins > nodes:
        fail("--twins cannot exceed --nodes")
    kinds = tuple(FaultKind(k) for k in faults) if faults else tuple(FaultKind)
    skew = TimeSkew(skew_proposer) if skew_proposer is not None else None
    failures = 0
    commits = events = evidence = recorded = 0
    reported = None
    for run_seed in range(seed, seed + runs):
        summary = run_simulation_summary(
            build_config(
                nodes=nodes,
                seed=run_seed,
                twins=twins,
                kinds=kinds,
                faults=not no_faults,
                skew=skew,
                heights=heights_after,
                hostile=hostile,
                leader_window=leader_window,
            )
        )
        if reported is None or reported.failure is None:
            reported = summary
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
    if report is not None and reported is not None and write_run_report(reported, report):
        click.echo(f"report of seed {reported.config.seed}: {report}")
    click.echo(
        f"{runs} run(s), {nodes} validators, {twins} twin(s): {commits} commits, {events} events, "
        f"{evidence} equivocations seen, {recorded} recorded on the ledger, "
        f"{failures} run(s) broke an invariant"
    )
    if failures:
        sys.exit(1)
