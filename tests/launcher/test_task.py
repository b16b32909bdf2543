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


def test_non_utf8_file_is_one_line_naming_file_and_line(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_bytes(b"name: x\n# caf\xe9\nrun: echo\n")
    with pytest.raises(TaskError) as e:
        load_task(p)
    assert str(e.value) == (f"Invalid task YAML {p} line 2: not UTF-8 text (byte 0xe9 cannot be "
                            "decoded); save the file as UTF-8")


def test_utf8_with_a_byte_order_mark_loads(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_bytes("\ufeffrun: echo café\n".encode())
    assert load_task(p).run == "echo café"


@pytest.mark.parametrize("text,expected", [
    ("- run: echo\n", "t.yaml: expected a mapping"),
    ("run: echo\x07\n", "t.yaml line 1: special characters are not allowed (character #x0007)"),
    ("run: echo\nenvs:\n  A: 1\n  A: 2\n", "t.yaml line 4: envs.A is written twice"),
    ("---\nrun: a\n---\nrun: b\n", "t.yaml line 3: but found another document"),
])
def test_file_level_problems_are_one_line(text, expected):
    with pytest.raises(TaskError) as e:
        parse_task(text, "t.yaml")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_null_env_needs_a_value_from_the_command_line():
    with pytest.raises(TaskError, match=r"line 2: envs.DATA: has no value.*--env DATA=VALUE"):
        parse_task("envs:\n  DATA:\nrun: echo\n", "t.yaml")
    t = parse_task("envs:\n  DATA:\nrun: echo\n", "t.yaml", env_overrides={"DATA": "/d"})
    assert t.env_strings() == {"DATA": "/d"}


def test_memory_sized_gpus_are_refused_with_the_reason():
    with pytest.raises(TaskError, match="name the GPU.*SkyPilot's catalog"):
        parse_task("resources:\n  accelerators: 24GB+\nrun: x\n", "t.yaml")


@pytest.mark.parametrize("infra", ["local", "kaggle", "vast", "ssh/lab", "skypilot", "aws/us-east-1", "k8s/ctx"])
def test_our_infras_and_skypilots_are_accepted(infra):
    assert parse_task(f"resources:\n  infra: {infra}\nrun: x\n").resources.infra == infra


@pytest.mark.parametrize("infra", ["local/x", "kaggle/eu", "ssh/a/b", "aws//x", "lokal"])
def test_bad_infras_are_refused(infra):
    with pytest.raises(TaskError, match="resources.infra"):
        parse_task(f"resources:\n  infra: {infra}\nrun: x\n", "t.yaml")


def test_placement_follows_the_command_lines_infra():
    from launcher.task_checks import check_placement

    t = parse_task("resources:\n  image_id: ami-0123\nrun: x\n", "t.yaml")
    check_placement(t, "aws/us-east-1")  # --infra names the cloud and region
    with pytest.raises(TaskError, match=r"line 2: resources.image_id: image_id names a VM image"):
        check_placement(t)
    with pytest.raises(TaskError, match="on vast, image_id must be a Docker image"):
        check_placement(t, "vast")
    tpu = parse_task("resources:\n  any_of:\n    - accelerators: tpu-v3-8\n      infra: gcp\nrun: x\n", "t.yaml")
    check_placement(tpu)
    with pytest.raises(TaskError, match=r"line 3: resources.any_of.0.accelerators: tpu-v3-8 is a TPU"):
        check_placement(tpu, "aws")


def test_prepare_fills_null_envs_and_the_stored_task_reparses(tmp_path):
    from launcher import jobs

    p = tmp_path / "t.yaml"
    p.write_text("envs:\n  DATA:\n  EPOCHS: 2\nrun: echo\n")
    sub = jobs.prepare(str(p), envs=("DATA=/d",))
    again = parse_task(jobs.redacted_yaml(sub.task), "stored")  # what the supervisor reads
    assert again.env_strings() == {"DATA": "/d", "EPOCHS": "2"}
    with pytest.raises(TaskError, match="envs.DATA: has no value"):
        jobs.prepare(str(p))


def test_infra_flag_is_held_to_the_same_rule(tmp_path):
    from launcher import jobs

    p = tmp_path / "t.yaml"
    p.write_text("run: echo\n")
    with pytest.raises(TaskError, match="infra: 'aws//us' has an empty part"):
        jobs.prepare(str(p), infra="aws//us")


def test_validation_imports_no_skypilot():
    """The validator is ours alone: loading and checking a task never imports sky (or boto3)."""
    import subprocess
    import sys

    code = ("import sys; from launcher.task import parse_task; from launcher.task_checks import "
            "check_placement; t = parse_task(sys.argv[1], 'x.yaml'); check_placement(t); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sky', 'boto3', 'torch')))")
    r = subprocess.run([sys.executable, "-c", code, GOOD.replace("workdir: .\n", "")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
