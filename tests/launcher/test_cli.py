"""The CLI as a user meets it: help with examples, JSON for scripts, one-line errors, light start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from launcher.cli import _register_optional_groups, cli

_register_optional_groups()
# pydantic and yaml are for reading a task (`launch up`, `launch plan`), not for showing jobs.
HEAVY = ("torch", "boto3", "botocore", "sky", "fabric", "paramiko", "vastai", "kaggle", "pydantic", "yaml")


def run_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["status", "--json"]])
def test_start_up_imports_nothing_heavy(argv):
    """`python -X importtime` of `launch --help` / `launch status` shows no torch, boto3, sky, or
    the task parser's pydantic and yaml."""
    code = "import sys; from launcher.cli import main; sys.argv = ['launch'] + sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv],
                       capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "launcher" in imported  # the measurement itself works
    assert not imported & set(HEAVY), imported & set(HEAVY)


@pytest.mark.parametrize("cmd", ["up", "status", "logs", "down"])
def test_every_command_has_help_with_examples(cmd):
    r = run_cli(cmd, "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.output and f"launch {cmd}" in r.output


def test_status_json_empty_list():
    r = run_cli("status", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []


def test_unknown_job_is_a_one_line_error():
    r = CliRunner().invoke(cli, ["logs", "42"])
    assert r.exit_code == 1
    assert r.output.strip().startswith("Error: No job '42'")
    assert "Traceback" not in r.output


def test_bad_task_is_a_one_line_error(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("name: x\nresources:\n  acelerators: V100:1\nrun: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t)])
    assert r.exit_code == 1
    assert "line 3: unknown key 'acelerators' in resources (did you mean 'accelerators'?)" in r.output


def test_bad_chaos_spec_is_rejected_before_anything_runs(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t), "--chaos", "nuke@3s"])
    assert r.exit_code == 1 and "bad drill 'nuke@3s'" in r.output
    assert json.loads(run_cli("status", "--json").output) == []  # no job was recorded


def test_unconfigured_infra_is_a_one_line_error(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(t), "--infra", "ssh/nopool", "-d"])
    assert r.exit_code == 1 and r.output.startswith("Error:")


def test_usage_error_exits_2():
    r = CliRunner().invoke(cli, ["up"])
    assert r.exit_code == 2


# One bad task file per class of bad value: (file content, the key the error must name).
BAD_TASKS = {
    "cpus": ("resources:\n  cpus: 0\nrun: echo\n", "resources.cpus"),
    "cpus-format": ("resources:\n  cpus: four+\nrun: echo\n", "resources.cpus"),
    "memory": ("resources:\n  memory: 16XB\nrun: echo\n", "resources.memory"),
    "disk-size": ("resources:\n  disk_size: 512MB\nrun: echo\n", "resources.disk_size"),
    "ports": ("resources:\n  ports: 70000\nrun: echo\n", "resources.ports"),
    "accelerator-name": ("resources:\n  accelerators: '*V100:1'\nrun: echo\n", "resources.accelerators"),
    "accelerator-count": ("resources:\n  accelerators: V100:0\nrun: echo\n", "resources.accelerators"),
    "infra-empty-part": ("resources:\n  infra: aws//us-east-1\nrun: echo\n", "resources.infra"),
    "recovery-strategy": ("resources:\n  job_recovery: SOMETIMES\nrun: echo\n", "resources.job_recovery"),
    "recovery-count": ("resources:\n  job_recovery:\n    max_restarts_on_errors: -1\nrun: echo\n",
                       "resources.job_recovery.max_restarts_on_errors"),
    "exit-codes": ("resources:\n  job_recovery:\n    recover_on_exit_codes: [1, 300]\nrun: echo\n",
                   "resources.job_recovery.recover_on_exit_codes"),
    "storage-source": ("file_mounts:\n  /checkpoints:\n    source: ftp://host/x\nrun: echo\n",
                       "file_mounts./checkpoints"),
    "storage-mode": ("file_mounts:\n  /checkpoints:\n    source: s3://b\n    mode: SOMETIMES\nrun: echo\n",
                     "file_mounts./checkpoints.mode"),
    "env-shape": ("envs:\n  EPOCHS: [1, 2]\nrun: echo\n", "envs"),
    "env-null": ("envs:\n  EPOCHS:\nrun: echo\n", "envs.EPOCHS"),
    "secrets-shape": ("secrets: [HF_TOKEN]\nrun: echo\n", "secrets"),
    "image-id": ("resources:\n  image_id: {docker: 5}\nrun: echo\n", "resources.image_id"),
    "image-id-cloud": ("resources:\n  image_id: ami-0123\nrun: echo\n", "resources"),
    "num-nodes": ("num_nodes: 2.0\nrun: echo\n", "num_nodes"),
}


def _assert_refused(r, path, key, home):
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: Invalid task YAML"), r.output
    assert str(path) in lines[0] and (key is None or key in lines[0]), lines[0]
    assert "Traceback" not in r.output
    assert not any(home.iterdir()), list(home.iterdir())  # no state, no store: nothing left behind
    assert json.loads(run_cli("status", "--json").output) == []


@pytest.mark.parametrize("name", BAD_TASKS)
def test_bad_value_is_one_line_naming_file_and_key_and_no_job(name, tmp_path, launch_home):
    text, key = BAD_TASKS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    _assert_refused(CliRunner().invoke(cli, ["up", str(path), "-d"]), path, key, launch_home)


@pytest.mark.parametrize("content", [b"name: caf\xe9\nrun: echo\n", b"run: [echo\n", b"- run: echo\n",
                                     b"just text\n", b"run: echo\nrun: ls\n"],
                         ids=["latin-1", "not-yaml", "a-list", "a-string", "duplicate-key"])
def test_unreadable_file_is_one_line_naming_it(content, tmp_path, launch_home):
    path = tmp_path / "t.yaml"
    path.write_bytes(content)
    _assert_refused(CliRunner().invoke(cli, ["up", str(path), "-d"]), path, None, launch_home)


def test_non_utf8_file_through_the_real_entry_point(tmp_path, launch_home):
    """The launch command as installed: one line on stderr, exit 1, no traceback."""
    path = tmp_path / "t.yaml"
    path.write_bytes(b"# \xff\xfe\nrun: echo\n")
    code = "import sys; from launcher.cli import main; sys.argv = ['launch'] + sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-c", code, "up", str(path)], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"{path} line 1: not UTF-8" in r.stderr, r.stderr


def test_bad_infra_flag_is_refused_before_a_job(tmp_path, launch_home):
    path = tmp_path / "t.yaml"
    path.write_text("run: echo\n")
    r = CliRunner().invoke(cli, ["up", str(path), "--infra", "aws//us-east-1", "-d"])
    assert r.exit_code == 1 and "empty part" in r.output and len(r.output.strip().splitlines()) == 1
    assert not any(launch_home.iterdir())


def test_checkpoint_mount_we_cannot_use_names_file_and_key(tmp_path, launch_home):
    path = tmp_path / "t.yaml"
    path.write_text("file_mounts:\n  /checkpoints:\n    source: gs://bucket/ckpt\nrun: echo\n")
    r = CliRunner().invoke(cli, ["up", str(path), "-d"])
    assert r.exit_code == 1 and f"{path}: file_mounts./checkpoints.source 'gs://bucket/ckpt'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not any(launch_home.iterdir())
