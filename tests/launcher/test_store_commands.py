"""`launch store init|status|policy` through click's runner, against moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.commands.store import store

REPO = Path(__file__).resolve().parents[2]
URI = "s3://ckpt-bucket/runs"


def run(*args):
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:  # click >= 8.2 keeps stderr apart already
        runner = CliRunner()
    result = runner.invoke(store, list(args), catch_exceptions=False)
    return result


@pytest.fixture
def aws(moto_s3, monkeypatch):
    """moto with no bucket, run from the repository (infra/bucket.yaml is the declaration)."""
    monkeypatch.chdir(REPO)
    return moto_s3


def test_dry_run_json_on_an_empty_account_lists_the_plan_and_changes_nothing(aws):
    result = run("init", URI, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)  # stdout is JSON and nothing else
    assert out["dry_run"] is True and out["declaration"] == "infra/bucket.yaml"
    assert out["plan"]["to_change"] == 6 and out["results"] == []
    planned = {c["setting"]: (c["action"], c["declared"]) for c in out["plan"]["changes"]}
    assert planned["bucket"] == ("create", "exists")
    assert planned["versioning"] == ("create", "Enabled")
    assert planned["lifecycle"] == ("create", {"abort_incomplete_multipart_days": 1,
                                               "noncurrent_version_expiration_days": 30})
    assert aws.list_buckets()["Buckets"] == []


def test_init_applies_then_a_second_run_reports_nothing_to_change(aws):
    first = run("init", URI)
    assert first.exit_code == 0
    assert "+ versioning           create" in first.stdout
    assert "Applied 6 of 6. Check it any time with: launch store status s3://ckpt-bucket/runs" in first.stdout
    assert aws.get_bucket_versioning(Bucket="ckpt-bucket")["Status"] == "Enabled"
    second = run("init", URI)
    assert second.exit_code == 0
    assert "Nothing to change: bucket 'ckpt-bucket' matches the declaration." in second.stdout
    assert "+" not in second.stdout and "~" not in second.stdout
    third = json.loads(run("init", URI, "--json").stdout)
    assert third["plan"]["to_change"] == 0 and third["results"] == []


def test_versioning_suspended_by_hand_is_reported_then_repaired(aws):
    run("init", URI)
    aws.put_bucket_versioning(Bucket="ckpt-bucket", VersioningConfiguration={"Status": "Suspended"})
    status = run("status", URI)
    assert status.exit_code == 0
    line = next(l for l in status.stdout.splitlines() if l.strip().startswith("versioning"))
    assert line.split() == ["versioning", "Suspended", "Enabled", "DRIFT"]
    assert "Repair with: launch store init s3://ckpt-bucket/runs" in status.stdout
    rows = {r["setting"]: r for r in json.loads(run("status", URI, "--json").stdout)["settings"]}
    assert rows["versioning"]["state"] == "DRIFT" and rows["encryption"]["state"] == "ok"

    repair = run("init", URI)
    assert "~ versioning           change       Suspended -> Enabled" in repair.stdout
    assert "versioning             changed" in repair.stdout
    rows = json.loads(run("status", URI, "--json").stdout)["settings"]
    assert {r["state"] for r in rows} == {"ok"}


def test_status_of_a_missing_bucket(aws):
    out = json.loads(run("status", URI, "--json").stdout)
    assert out["exists"] is False and {r["state"] for r in out["settings"]} == {"missing"}


def test_policy_prints_the_rendered_json(aws):
    result = run("policy", "s3://ckpt-bucket/runs/job-1")
    doc = json.loads(result.stdout)
    assert doc["Statement"][1]["Resource"] == "arn:aws:s3:::ckpt-bucket/runs/job-1/*"


def test_config_flag_wins_over_environment_and_repo_file(aws, tmp_path, monkeypatch):
    flag, env = tmp_path / "flag.yaml", tmp_path / "env.yaml"
    flag.write_text("tags: {from: flag}\n")
    env.write_text("tags: {from: env}\n")
    monkeypatch.setenv("LAUNCH_STORE_CONFIG", str(env))
    out = json.loads(run("init", URI, "--dry-run", "--json", "--config", str(flag)).stdout)
    assert out["declaration"] == str(flag)
    tags = next(c for c in out["plan"]["changes"] if c["setting"] == "tags")
    assert tags["declared"] == {"from": "flag"}
    out = json.loads(run("init", URI, "--dry-run", "--json").stdout)
    assert out["declaration"] == str(env)


def test_builtin_defaults_without_a_declaration_file(aws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = json.loads(run("init", URI, "--dry-run", "--json").stdout)
    assert out["declaration"] == "built-in defaults"
    assert "tags" not in {c["setting"] for c in out["plan"]["changes"]}


def one_line_error(result):
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_invalid_declaration_names_file_and_key(aws, tmp_path):
    bad = tmp_path / "bucket.yaml"
    bad.write_text("versioning: true\nlifecycle: {abort_incomplete_multipart_day: 1}\n")
    err = one_line_error(run("init", URI, "--config", str(bad)))
    assert str(bad) in err and "lifecycle.abort_incomplete_multipart_day" in err


def test_file_uris_need_no_init(aws, tmp_path):
    err = one_line_error(run("init", f"file://{tmp_path}"))
    assert "needs no set-up" in err


def test_a_failed_setting_exits_1_after_applying_the_rest(aws, monkeypatch):
    from launcher.store import infra

    real = infra.make_client

    def denying_client(decl=None):
        client = real(decl)

        def deny(**_):
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutBucketEncryption")
        client.meta.events.register("before-parameter-build.s3.PutBucketEncryption", deny)
        return client

    monkeypatch.setattr(infra, "make_client", denying_client)
    result = run("init", URI)
    assert result.exit_code == 1
    assert "1 setting(s) failed: encryption:" in result.stderr
    assert "versioning             created" in result.stdout


def test_no_credentials_is_one_line_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    err = one_line_error(run("status", URI))
    assert "no usable S3 credentials" in err and "AWS_ACCESS_KEY_ID" in err
