"""The ``launch`` command line. Thin: each command parses, calls the library, and prints.

JSON goes to stdout only; messages go to stderr. Exit codes: 0 ok, 1 a user error (one line, no
traceback unless ``--debug``), 2 bad usage. Nothing heavy (torch, boto3, SDKs) is imported here.
"""

from __future__ import annotations

import json
import sys
import time

import click

from launcher import state as st
from launcher.errors import LaunchError

EPILOG_UP = """\b
Examples:
  launch up tasks/quickstart.yaml                      # run here, follow the logs
  launch up tasks/quickstart.yaml --chaos term@20s,kill@45s
                                                       # fire drill: preempt it twice
  launch up tasks/quickstart.yaml --chaos term@30%,kill@60%
                                                       # the same, at 30% and 60% of the steps
  launch up tasks/quickstart.yaml --chaos kill@40%:save,kill@70%:upload
                                                       # in the middle of a save, of an upload
  launch up tasks/imagenet.yaml --infra ssh/lab -d     # on an SSH pool, detached
  launch up tasks/quickstart.yaml --env EPOCHS=2 --name qs-short
  launch up tasks/imagenet.yaml --infra vast --deadline 36h --estimate 20h
                                                       # spot while it can, on demand when it must
  launch up tasks/imagenet.yaml --notify ntfy://my-topic --notify-on alert,failed,succeeded
  launch up tasks/imagenet.yaml --stall-after 20m    # a run with no new step for 20 min is hung
\b
--chaos SPEC is a comma list of KIND@TIME. KIND is 'term' (a preemption notice: SIGTERM, the
trainer saves and exits) or 'kill' (the machine vanishes: SIGKILL, no notice). TIME counts the
job's running time across attempts (20s, 1.5m, 500ms), or is a share of its steps (30%), read
from the metrics the trainer writes: such a drill fires inside the training, after its attempt
has resumed and logged a step, never once the final checkpoint is written. 40%:save and
40%:upload aim at the middle of the next checkpoint save or upload (on the local default).
Each drill fires once; a relaunch after a drill does not back off.
\b
--deadline WHEN (36h, 2d, or a time: 2026-12-04T17:00) runs each attempt on spot or on demand by
Uniform Progress: spot whenever it is there; on demand when there is none and the job is behind
the line from submission to the deadline, until it is two changeovers ahead; on demand to the end
once the time left barely covers the work left. The work comes from the trainer's metrics (step
of total_steps) and the measured seconds per step; --estimate (hours of running in all) stands in
until the first steps are measured. `launch status JOB` shows the projected finish and why.
"""


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def _state() -> st.State:
    from launcher import daemon

    state = st.State()
    for job_id in daemon.ensure_supervisors(state):
        _err(f"(restarted the supervisor of job {job_id})")
    return state


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LaunchError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _err(f"Error: {e}")
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Start with: launch up tasks/quickstart.yaml")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="launch")
@click.pass_context
def cli(ctx, debug):
    """Run training jobs from SkyPilot task YAMLs on cheap, interruptible machines.

    A preemption, outbid or session timeout relaunches the job, which resumes from its last
    checkpoint in the object store. State lives in ~/.launch (LAUNCH_HOME overrides).
    """
    ctx.obj = {"debug": debug}


@cli.command(epilog=EPILOG_UP)
@click.argument("task", type=click.Path(dir_okay=False))
@click.option("--infra", help="Where to run: local, ssh/<pool>, vast, kaggle, or a SkyPilot infra "
              "(aws, gcp, k8s, slurm/<cluster>...). Overrides LAUNCH_INFRA and resources.infra.")
@click.option("-d", "--detach", is_flag=True, help="Return once the job is submitted.")
@click.option("--chaos", "chaos_spec", metavar="SPEC", help="Fire drills, e.g. term@20s,kill@45s or term@30%,kill@60%.")
@click.option("--name", help="Job name (default: the task's name).")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Override one of the task's envs (repeatable). KEY alone takes your environment's value.")
@click.option("--secret", "secrets", multiple=True, metavar="KEY[=VALUE]",
              help="Value of one of the task's secrets (repeatable); KEY alone takes your environment's "
                   "value. Secrets are never stored or logged.")
@click.option("--store", help="Checkpoint store root (s3://bucket/prefix or file:///path). "
              "Overrides LAUNCH_STORE and the task's /checkpoints mount.")
@click.option("--keep-last", default=3, show_default=True, help="Checkpoints kept in the store (plus the best).")
@click.option("--deadline", metavar="WHEN", help="Finish by then: 36h, 2d, or a time (2026-12-04T17:00). "
              "Spot while it can, on demand when it must.")
@click.option("--estimate", metavar="DURATION", help="With --deadline: the job's running time in all "
              "(e.g. 20h), until its seconds per step are measured.")
@click.option("--stall-after", metavar="DURATION",
              help="A run with no new metrics line for this long is hung: it is killed and relaunched "
                   "like a preemption (e.g. 15m; 0 turns it off). Default: 20x the observed time "
                   "between metrics lines and 2x the longest gap seen, at least 10 min.")
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="Send the job's events to this apprise URL (repeatable): slack://..., "
                   "discord://..., ntfy://topic, mailto://..., json://host/path. Default: "
                   "LAUNCH_NOTIFY, else $LAUNCH_HOME/notify.yaml. Kept secret, never stored.")
@click.option("--notify-on", metavar="EVENTS",
              help="Which events to send, comma-separated, from: submitted, running, preempted, "
                   "recovered, alert, succeeded, failed, cancelled (default: all).")
def up(task, infra, detach, chaos_spec, name, envs, secrets, store, keep_last, deadline, estimate,
       stall_after, notify_urls, notify_on):
    """Launch TASK (a SkyPilot task YAML) and follow its logs until it ends.

    Ctrl-C stops following; the job goes on. Exits 0 when the job succeeded.
    """
    from launcher import jobs

    # Everything that can refuse the task runs before the state is opened: a refused file
    # leaves no job and no store folder behind.
    sub = jobs.prepare(task, infra=infra, store=store, envs=envs, chaos_spec=chaos_spec, name=name,
                       secrets=secrets)
    timing = jobs.deadline_options(deadline, estimate)
    options = {"keep_last": keep_last, **timing}
    if stall_after is not None:
        from launcher.watch.monitor import parse_duration

        options["stall_after"] = parse_duration(stall_after)
    from launcher.watch import notify

    urls = notify.resolve_urls(notify_urls)
    if notify_on:
        options["notify_on"] = notify.resolve_events(notify_on)
    if urls:
        notify.check_urls(urls)
        notify.resolve_events()  # a bad filter in the environment or notify.yaml: say so now
        sub.secrets = {**sub.secrets, notify.SECRET_KEY: "\n".join(urls)}
    state = _state()
    job = jobs.submit(sub, state, options=options)
    drills = f", fire drills {sub.chaos}" if sub.chaos else ""
    _err(f"Job {job.id} ({job.run_id}) submitted on {job.infra}{drills}.")
    _err(f"Checkpoints: {job.store_uri}")
    if timing:
        _err(f"Deadline: {_when(timing['deadline'])}; spot while it can, on demand when it must.")
    if urls:
        _err(f"Notifications: {len(urls)} URL(s), events: {', '.join(options.get('notify_on') or notify.resolve_events())}")
    if detach:
        _err(f"To stream logs: launch logs {job.id} -f\nTo see its state: launch status {job.id}")
        return
    sys.exit(_follow(state, job.id))


def _follow(state: st.State, job_id: int) -> int:
    from launcher.logs import job_lines

    try:
        for line in job_lines(state, job_id, follow=True):
            click.echo(line)
        while not state.job(job_id).terminal:  # the last attempt's log ended before the job did
            time.sleep(0.2)
    except KeyboardInterrupt:
        _err(f"\nDetached; job {job_id} goes on. To stream logs again: launch logs {job_id} -f")
        return 130
    job = state.job(job_id)
    attempts = state.attempts(job_id)
    preempted = sum(a.state == "PREEMPTED" for a in attempts)
    extra = f" ({preempted} preempted)" if preempted else ""
    _err(f"Job {job_id} {job.state} after {len(attempts)} attempt(s){extra}. "
         f"Details: launch status {job_id}")
    return 0 if job.state == st.SUCCEEDED else 1


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = int(time.time() - ts)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit} ago"
    return f"{s}s ago"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def _deadline(d: dict, ended: float | None) -> str:
    s = d.get("status") or {}
    text = f"{_when(d['deadline'])}"
    if ended:
        return text + f"; ended {_when(ended)}, {'in time' if ended <= d['deadline'] else 'late'}"
    if s.get("projected_finish"):
        late = s["projected_finish"] > d["deadline"]
        text += f"; projected finish {_when(s['projected_finish'])}{' (late)' if late else ''}"
    if s.get("mode"):
        on = {"spot": "on spot", "on_demand": "on demand", "none": "waiting for spot"}[s["mode"]]
        text += f"\n  {on}: {s['reason']}"
    return text


def _progress(p: dict) -> str:
    if not p:
        return "-"
    parts = []
    if "epoch" in p:
        parts.append(f"epoch {p['epoch']}")
    if "step" in p:
        parts.append(f"step {p['step']}")
    return " ".join(parts) or "-"


def _estimate(e: dict) -> str:
    text = f"{e['fraction_done']:.0%} done, ~{e['hours_left']:.2f} h of running left"
    if "sessions_left" in e:
        text += (f"; sessions: {e['sessions_used']} used of ~{e['session_hours']:.2f} h each, "
                 f"~{e['sessions_left']} more")
    return text


@cli.command(epilog="\b\nExamples:\n  launch status\n  launch status 3\n  launch status -w          # live, until the jobs end"
                    "\n  launch status --json | jq '.[0].attempts'")
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of jobs with their attempts.")
@click.option("-w", "--watch", is_flag=True, help="A live table (GPU, steps/s, alerts), refreshed until the jobs shown end.")
def status(job, as_json, watch):
    """Jobs, their attempts, progress and cost so far (or one JOB in detail)."""
    from launcher import jobs

    state = _state()
    selected = [state.job(job)] if job else state.jobs()
    if watch and selected:
        from launcher.watch.show import live

        ids = [j.id for j in selected]
        try:
            live(lambda: [jobs.describe(state, state.job(i)) for i in ids], _progress)
        except KeyboardInterrupt:
            pass
        return
    docs = [jobs.describe(state, j) for j in selected]
    if as_json:
        click.echo(json.dumps(docs, indent=1))
        return
    if not docs:
        _err("No jobs yet. Start one with: launch up tasks/quickstart.yaml")
        return
    rows = [("ID", "NAME", "INFRA", "STATE", "ATTEMPTS", "PROGRESS", "COST", "SUBMITTED")]
    for d in docs:
        rows.append((str(d["id"]), d["name"], d["infra"], d["state"], str(len(d["attempts"])),
                     _progress(d["progress"]), f"${d['cost']:.2f}", _ago(d["created"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if job:
        d = docs[0]
        click.echo(f"\nstore: {d['store']}\nreason: {d['reason'] or '-'}")
        if d.get("estimate"):
            click.echo(f"estimate: {_estimate(d['estimate'])}")
        if d.get("deadline"):
            click.echo(f"deadline: {_deadline(d['deadline'], d['ended'])}")
        if d["watch"] and not d["ended"]:
            from launcher.watch.show import gpu_line, rate

            w = d["watch"]
            click.echo(f"throughput: {rate(w)}\nmachine: {gpu_line(w.get('gpu'))}")
            if w.get("alerts"):
                click.echo(f"alerts: {', '.join(w['alerts'])}")
        click.echo("attempts:")
        for a in d["attempts"]:
            extra = f" (+{a['provider_recoveries']} recoveries by the provider)" if a["provider_recoveries"] else ""
            where = a["infra"] + (f" {a['mode'].replace('_', ' ')}" if a.get("mode") else "")
            click.echo(f"  {a['number']}  {a['state']:<12} {where:<14} {a['host'] or '-':<16} "
                       f"{_ago(a['started']):<10} {a['reason']}{extra}")
        click.echo("events:")
        for e in state.events(d["id"])[-15:]:
            click.echo(f"  {time.strftime('%H:%M:%S', time.localtime(e['ts']))}  {e['kind']:<10} {e['message']}")


@cli.command(epilog="\b\nExamples:\n  launch logs 3 -f\n  launch logs 3 --attempt 1")
@click.argument("job")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--attempt", type=int, help="Only this attempt's log.")
def logs(job, follow, attempt):
    """Logs of JOB, attempt after attempt; after a machine is gone, from the store."""
    from launcher.logs import job_lines

    state = _state()
    j = state.job(job)
    try:
        for line in job_lines(state, j.id, attempt=attempt, follow=follow):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@cli.command(epilog="\b\nExamples:\n  launch down 3\n  launch down 3 4 5")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
def down(job_ids):
    """Cancel JOBs and tear down their machines; nothing is left billing."""
    from launcher import jobs

    state = _state()
    for job_id in job_ids:
        job = jobs.cancel(state, job_id)
        _err(f"Job {job.id} {job.state}.")


def _register_optional_groups() -> None:
    """Commands kept in their own modules (each imports its SDK only when it runs)."""
    from launcher.commands.plan import plan
    from launcher.commands.plot import plot
    from launcher.commands.store import store

    cli.add_command(store)
    cli.add_command(plan)
    cli.add_command(plot)


def main() -> None:
    _register_optional_groups()
    cli(prog_name="launch")


if __name__ == "__main__":
    main()
