"""The task model: SkyPilot's YAML, errors that name file, line, key and a did-you-mean."""

from __future__ import annotations

import glob

import pytest

from launcher.errors import TaskError
from launcher.task import load_task, parse_env_overrides, parse_task

GOOD = """\
name: demo
workdir: .
num_nodes: 1
resources:
  accelerators: V100:1
  use_spot: true
  job_recovery:
    strategy: FAILOVER
    max_restarts_on_errors: 2
  any_of:
    - accelerators: V100:1
    - accelerators: A6000:1
envs:
  EPOCHS: 3
secrets:
  HF_TOKEN: null
file_mounts:
  /checkpoints:
    source: s3://bucket/prefix
    mode: MOUNT_CACHED
  /data/x.txt: ~/x.txt
setup: pip list
run: python -m trainers.quickstart
"""


def test_good_task_parses_every_field():
    t = parse_task(GOOD, "good.yaml")
    assert t.name == "demo" and t.num_nodes == 1
    assert t.resources.use_spot is True
    assert t.resources.recovery().max_restarts_on_errors == 2
    assert [o["accelerators"] for o in t.resources.options()] == ["V100:1", "A6000:1"]
    assert all(o["use_spot"] for o in t.resources.options())  # base fields are inherited
    assert t.checkpoint_mount().source == "s3://bucket/prefix"
    assert t.env_strings() == {"EPOCHS": "3"}
    assert t.secret_strings() == {"HF_TOKEN": ""}


def test_unknown_key_names_file_line_and_suggestion():
    bad = GOOD.replace("  accelerators: V100:1\n  use_spot", "  acelerators: V100:1\n  use_spot")
    with pytest.raises(TaskError) as e:
        parse_task(bad, "tasks/x.yaml")
    msg = str(e.value)
    assert "tasks/x.yaml line 5" in msg
    assert "unknown key 'acelerators'" in msg
    assert "did you mean 'accelerators'?" in msg


def test_unknown_top_level_key():
    with pytest.raises(TaskError, match=r"line 1: unknown key 'nmae' \(did you mean 'name'\?\)"):
        parse_task("nmae: x\nrun: echo\n", "t.yaml")


def test_bad_value_names_key_and_line():
    with pytest.raises(TaskError, match=r"t.yaml line 2: num_nodes"):
        parse_task("run: echo\nnum_nodes: zero\n", "t.yaml")


def test_bad_accelerator_format():
    with pytest.raises(TaskError, match="NAME:COUNT"):
        parse_task("resources:\n  accelerators: 'V100:x'\n", "t.yaml")


def test_yaml_syntax_error_has_line():
    with pytest.raises(TaskError, match=r"t.yaml line 2"):
        parse_task("run: echo\n  bad: [\n", "t.yaml")


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(TaskError, match="Task file not found"):
        load_task(tmp_path / "nope.yaml")


def test_env_overrides():
    assert parse_env_overrides(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(TaskError):
        parse_env_overrides(["1A=2"])


def test_bundled_tasks_load():
    paths = sorted(glob.glob("tasks/*.yaml"))
    assert "tasks/quickstart.yaml" in paths
    for p in paths:
        load_task(p)
