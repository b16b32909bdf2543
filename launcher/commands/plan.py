"""``launch plan TASK``: where the task's resources can run through SkyPilot, and at what price.

Thin: parses, asks :mod:`launcher.backends.skypilot.catalog`, prints. ``--json`` prints a list of
``{cloud, region, instance_type, accelerators, spot, price_per_hour, est_cost}`` to stdout, cheapest
first, and nothing else goes to stdout then.
"""

from __future__ import annotations

import contextlib
import json
import sys

import click

from launcher.errors import LaunchError

EPILOG = """\b
Examples:
  launch plan tasks/imagenet.yaml                  # cheapest first, for one hour
  launch plan tasks/imagenet.yaml --hours 12       # estimated cost of a 12-hour run
  launch plan tasks/imagenet.yaml --json | jq '.[0]'
\b
Prices come from SkyPilot's catalog for the clouds it has enabled (`sky check`); est_cost is
price_per_hour x hours x num_nodes, without storage or egress.
"""


@click.command("plan", epilog=EPILOG)
@click.argument("task", type=click.Path(dir_okay=False))
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Expected duration, for the estimated cost.")
@click.option("--infra", help="Only this SkyPilot infra (aws, gcp/us-central1, ...).")
@click.option("--all-regions", is_flag=True, help="One row per region instead of the cheapest region.")
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON.")
def plan(task: str, hours: float, infra: str | None, all_regions: bool, as_json: bool) -> None:
    """Candidates for TASK's resources (each any_of option) with $/h on demand and spot, and the
    estimated cost for --hours, cheapest first."""
    from launcher.backends import get_backend
    from launcher.task import load_task

    try:
        t = load_task(task)
        get_backend("skypilot")  # SkyPilot missing: the registry's one-line install hint
        from launcher.backends.skypilot import catalog

        # SkyPilot prints its spinner payloads on stdout; stdout is for our table or JSON only.
        with contextlib.redirect_stdout(sys.stderr):
            found = catalog.candidates(t, hours, infra=infra, all_regions=all_regions)
    except LaunchError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in found], indent=1))
        return
    _table(found, hours)
    wants_spot = any(o.get("use_spot") for o in t.resources.options())
    best = next((c for c in found if c.spot == wants_spot), found[0])
    kind = "spot" if wants_spot else "on-demand"
    click.echo(f"\nThe task asks for {kind}; its cheapest: {best.instance_type} on {best.cloud} "
               f"({best.region}) at ${best.price_per_hour:.2f}/h.", err=True)
    click.echo(f"To launch it there: launch up {task} --infra {best.cloud.lower()}", err=True)


def _table(found, hours: float) -> None:
    rows = [("CLOUD", "REGION", "INSTANCE", "ACCELERATORS", "SPOT", "$/H", f"EST. {hours:g} H")]
    for c in found:
        rows.append((c.cloud, c.region, c.instance_type, c.accelerators or "-", "yes" if c.spot else "no",
                     f"{c.price_per_hour:.3f}", f"{c.est_cost:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
