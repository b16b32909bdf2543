"""``launch plan TASK``: where the task's resources can run through SkyPilot, and at what price;
or, for a task whose options name their own infras (or with ``--options``), each option with its
provider, expected $/h and whether it can be had now, in the order the job would try them.

Thin: parses, asks :mod:`launcher.backends.skypilot.catalog` (or :mod:`launcher.placement`),
prints. ``--json`` prints a list of ``{cloud, region, instance_type, accelerators, spot,
price_per_hour, est_cost}`` to stdout, cheapest first (for options: ``{option, infra, provider,
accelerators, spot, price_per_hour, usable, why}`` in the order tried), and nothing else goes to
stdout then.
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
  launch plan tasks/anywhere.yaml --options        # each option: provider, $/h, usable now?
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
@click.option("--options", "by_option", is_flag=True,
              help="One row per resources option on its own infra (the default when options name "
                   "infras other than SkyPilot's).")
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON.")
def plan(task: str, hours: float, infra: str | None, all_regions: bool, by_option: bool, as_json: bool) -> None:
    """Candidates for TASK's resources (each any_of option) with $/h on demand and spot, and the
    estimated cost for --hours, cheapest first."""
    from launcher.backends import get_backend, infra_kind
    from launcher.task import load_task

    try:
        t = load_task(task)
        own = {o.get("infra") for o in t.resources.options() if o.get("infra")}
        if by_option or any(infra_kind(i) != "skypilot" for i in own):
            return _options(t, infra, hours, as_json)
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


def _options(t, infra: str | None, hours: float, as_json: bool) -> None:
    from launcher import placement

    infras = placement.option_infras(t, placement.default_infra(t), infra)
    quotes = placement.quote_options(t, infras)
    tried = [quotes[i] for i in placement.order(t, quotes)]
    if as_json:
        click.echo(json.dumps([q.to_dict() for q in tried], indent=1))
        return
    rows = [("OPTION", "PROVIDER", "INFRA", "ACCELERATORS", "SPOT", "$/H", f"EST. {hours:g} H", "USABLE", "WHY")]
    for q in tried:
        d, price = q.to_dict(), q.quote.price_per_hour
        rows.append((str(d["option"]), d["provider"], d["infra"], str(d["accelerators"] or "-"),
                     "yes" if d["spot"] else "no", "?" if price is None else f"{price:.3f}",
                     "?" if price is None else f"{price * hours * t.num_nodes:.2f}",
                     "yes" if d["usable"] else "no", d["why"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    how = "cheapest first (any_of)" if t.resources.any_of else "in the task's order"
    click.echo(f"\nA job tries these {how}; no capacity, a used-up quota or "
               f"{placement.outbids_before_failover()} outbids in a row move it to the next.", err=True)


def _table(found, hours: float) -> None:
    rows = [("CLOUD", "REGION", "INSTANCE", "ACCELERATORS", "SPOT", "$/H", f"EST. {hours:g} H")]
    for c in found:
        rows.append((c.cloud, c.region, c.instance_type, c.accelerators or "-", "yes" if c.spot else "no",
                     f"{c.price_per_hour:.3f}", f"{c.est_cost:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
