"""``launch plot JOB``: one picture of a job, from its store folder alone (see
:mod:`launcher.watch.plot`). JOB is a job id or name from ``launch status``, or the job's store
URI itself (``s3://bucket/prefix/<run id>``, ``file:///...``), which works on any machine."""

from __future__ import annotations

import json

import click

from launcher.errors import LaunchError

EPILOG = """\b
Examples:
  launch plot 3                          # writes <run id>.png here
  launch plot 3 -o runs/qs.png
  launch plot s3://my-bucket/runs/qs-1a2b3c4d -o qs.png     # no state needed
  launch plot 3 --json | jq '.attempts[] | {number, ended_as, recomputed_steps}'
\b
The picture: the trainer's metrics over steps coloured by attempt, each attempt boundary marked
with how it ended (preempted, killed, outbid, session ended, stalled) and the work recomputed
after the resume shaded; GPU utilisation, temperature and memory over time (the run's CPU without
a GPU); the cost so far.
"""


def _store_of(job: str) -> tuple[str, str]:
    if "://" in job:
        return job.rstrip("/"), job.rstrip("/").rsplit("/", 1)[-1]
    from launcher import state as st

    j = st.State().job(job)
    return j.store_uri, j.run_id


@click.command("plot", epilog=EPILOG)
@click.argument("job")
@click.option("-o", "--output", metavar="FILE.png", help="Where to write the picture (default: <run id>.png).")
@click.option("--json", "as_json", is_flag=True, help="Print the data behind the picture instead.")
def plot(job: str, output: str | None, as_json: bool) -> None:
    """Draw JOB from its store folder: metrics across attempts, boundaries, GPUs, cost."""
    from launcher.store import open_store
    from launcher.watch.plot import draw, gather

    uri, run_id = _store_of(job)
    if not uri:
        raise LaunchError(f"job {job}: it has no store, so there is nothing to draw")
    store = open_store(uri)
    data = gather(store)
    if not data["metric_lines"] and not data["attempts"]:
        raise LaunchError(f"{uri}: no metrics.jsonl and no attempt records there yet")
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    path = output or f"{run_id}.png"
    if not path.lower().endswith(".png"):
        raise LaunchError(f"-o {path}: the picture is a PNG; name it FILE.png")
    draw(store, data, path, title=run_id)
    click.echo(f"Wrote {path}: {len(data['attempts'])} attempt(s), {data['steps']} steps, "
               f"{data['samples']} machine samples.", err=True)
