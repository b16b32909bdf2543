"""``launch store``: create, check and secure the checkpoint bucket declared in ``infra/``.

Thin: each command parses, calls :mod:`launcher.store.infra`, and prints. JSON (``--json``) goes to
stdout and nothing else does then; a user error is one line on stderr and exit 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from launcher.store.base import StoreError

EPILOG = """\b
Examples:
  launch store init s3://my-bucket/runs --dry-run   # what would change
  launch store init s3://my-bucket/runs             # create / repair the bucket (idempotent)
  launch store status s3://my-bucket/runs           # live settings next to the declared ones
  launch store policy s3://my-bucket/runs/job-1     # least-privilege IAM policy for a prefix
"""

SYMBOL = {"create": "+", "change": "~", "ok": "=", "unsupported": "!"}
SHORT = {"abort_incomplete_multipart_days": "abort_mpu_days",
         "noncurrent_version_expiration_days": "noncurrent_days"}
STATE = {"create": "missing", "change": "DRIFT", "ok": "ok", "unsupported": "not supported by this endpoint"}


def _show(value: Any) -> str:
    if value is None or value == {}:
        return "-"
    if isinstance(value, dict):
        if value and all(isinstance(v, bool) for v in value.values()):
            on = [k for k, v in value.items() if v]
            return "all on" if len(on) == len(value) else ", ".join(on) or "all off"
        return ", ".join(f"{SHORT.get(k, k)}={v}" for k, v in value.items() if v is not None)
    return str(value)


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    from launcher.store.s3 import parse_s3_uri

    if uri.startswith("file://"):
        raise StoreError(f"{uri}: a file:// store is a local folder and needs no set-up; "
                         "`launch store` manages s3:// buckets")
    return parse_s3_uri(uri)


def _load(config: str | None):
    from launcher.store.declaration import default_declaration_path, load_declaration

    path = config or default_declaration_path()
    return load_declaration(path), str(path) if path else "built-in defaults"


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e).replace("\n", " "))


config_option = click.option(
    "--config", type=click.Path(dir_okay=False), envvar="LAUNCH_STORE_CONFIG",
    help="Bucket declaration (YAML). Default: infra/bucket.yaml if present, else built-in defaults.")


@click.group("store", epilog=EPILOG)
def store() -> None:
    """Create and check the checkpoint bucket declared in infra/bucket.yaml."""


@store.command("init", epilog=EPILOG, short_help="Create or repair the bucket (prints a plan first).")
@click.argument("uri")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and results as JSON.")
@config_option
def init(uri: str, dry_run: bool, as_json: bool, config: str | None) -> None:
    """Create the bucket of URI if missing and apply every declared setting that differs.

    Prints the plan first (+ create, ~ change, = already matches, ! not supported by this
    endpoint). Running it again changes nothing."""
    from launcher.store import infra

    try:
        bucket, _ = _bucket_and_prefix(uri)
        decl, source = _load(config)
        client = infra.make_client(decl)
        the_plan = infra.plan(client, bucket, decl)
        results = [] if dry_run else infra.apply(client, bucket, decl, the_plan)
    except StoreError as e:
        raise _fail(e) from None
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        click.echo(json.dumps({"uri": uri, "declaration": source, "dry_run": dry_run,
                               "plan": the_plan.to_dict(),
                               "results": [r.__dict__ for r in results]}, indent=2, default=str))
    else:
        _print_plan(the_plan, source)
        _print_results(uri, the_plan, results, dry_run)
    if failed:
        raise click.ClickException(f"{len(failed)} setting(s) failed: "
                                   + "; ".join(f"{r.setting}: {r.message}" for r in failed))


def _print_plan(the_plan, source: str) -> None:
    click.echo(f"Plan for bucket {the_plan.bucket!r} (declaration: {source}):")
    for c in the_plan.changes:
        if c.action == "ok":
            detail = _show(c.live)
        elif c.action == "unsupported":
            detail = c.note
        else:
            detail = f"{_show(c.live)} -> {_show(c.declared)}"
        click.echo(f"  {SYMBOL[c.action]} {c.setting:<20} {c.action:<12} {detail}")


def _print_results(uri: str, the_plan, results, dry_run: bool) -> None:
    pending = len(the_plan.pending)
    if not pending:
        lacking = sum(c.action == "unsupported" for c in the_plan.changes)
        note = f" ({lacking} setting(s) not supported by this endpoint)" if lacking else ""
        click.echo(f"Nothing to change: bucket {the_plan.bucket!r} matches the declaration{note}.")
        return
    if dry_run:
        click.echo(f"Dry run: {pending} to change, nothing applied. Apply with: launch store init {uri}")
        return
    click.echo("Applying:")
    for r in results:
        click.echo(f"  {r.setting:<22} {r.status}" + (f" ({r.message})" if r.message else ""))
    done = sum(r.status in ("created", "changed") for r in results)
    click.echo(f"Applied {done} of {pending}. Check it any time with: launch store status {uri}")


@store.command("status", epilog=EPILOG, short_help="Live settings next to the declared ones.")
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@config_option
def status(uri: str, as_json: bool, config: str | None) -> None:
    """Show the live settings of URI's bucket next to the declared ones; drift is marked."""
    from launcher.store import infra

    try:
        bucket, _ = _bucket_and_prefix(uri)
        decl, source = _load(config)
        the_plan = infra.plan(infra.make_client(decl), bucket, decl)
    except StoreError as e:
        raise _fail(e) from None
    rows = [{"setting": c.setting, "live": c.live, "declared": c.declared, "state": STATE[c.action]}
            for c in the_plan.changes]
    if as_json:
        click.echo(json.dumps({"uri": uri, "bucket": bucket, "declaration": source,
                               "exists": the_plan.exists, "settings": rows}, indent=2, default=str))
        return
    click.echo(f"Bucket {bucket!r} (declaration: {source}):")
    click.echo(f"  {'setting':<20} {'live':<36} {'declared':<36} state")
    for r in rows:
        click.echo(f"  {r['setting']:<20} {_show(r['live']):<36} {_show(r['declared']):<36} {r['state']}")
    if the_plan.pending:
        click.echo(f"{len(the_plan.pending)} setting(s) differ from the declaration. "
                   f"Repair with: launch store init {uri}")
    else:
        click.echo("Every supported setting matches the declaration.")


@store.command("policy", epilog=EPILOG, short_help="Least-privilege IAM policy for a prefix.")
@click.argument("uri")
@config_option
def policy(uri: str, config: str | None) -> None:
    """Print the least-privilege IAM policy (JSON) for URI's prefix: list, get, put and delete
    under it, nothing else. Attach it to the credentials a job runs with."""
    from launcher.store.declaration import render_policy

    try:
        bucket, prefix = _bucket_and_prefix(uri)
        decl, _ = _load(config)
    except StoreError as e:
        raise _fail(e) from None
    click.echo(json.dumps(render_policy(decl, bucket, prefix), indent=2))
