"""A task that launch accepts is accepted by SkyPilot's own schema, and the reverse for the
fields we support: every YAML in tasks/, and a table of small cases, checked by both."""

from __future__ import annotations

import glob

import pytest
import yaml

from launcher.errors import TaskError
from launcher.task import load_task, parse_task

import sky
from sky import exceptions as sky_exceptions
from sky.utils import common_utils, schemas


def sky_accepts(cfg: dict) -> bool:
    """SkyPilot's real loader, as `sky launch` uses it: it validates the task schema (after
    turning env values into strings), then the resources and storage schemas."""
    try:
        sky.Task.from_yaml_config(cfg)
    except (ValueError, sky_exceptions.InvalidSkyPilotConfigError):
        return False
    return True


def launch_accepts(text: str) -> bool:
    try:
        parse_task(text, "case.yaml")
    except TaskError:
        return False
    return True


@pytest.mark.parametrize("path", sorted(glob.glob("tasks/*.yaml")))
def test_bundled_tasks_pass_both(path):
    load_task(path)
    with open(path) as f:
        cfg = yaml.safe_load(f)
    # The raw schema too, before any conversion: bundled tasks are written in its strict form.
    common_utils.validate_schema(cfg, schemas.get_task_schema(), f"Invalid task YAML {path}: ")
    assert sky_accepts(cfg), f"SkyPilot rejects {path}"


VALID = [
    "run: echo hi",
    "name: a\nnum_nodes: 2\nrun: echo",
    "resources:\n  accelerators: V100:1\n  use_spot: true\nrun: x",
    "resources:\n  accelerators: {A6000: 1}\n  disk_size: 100\nrun: x",
    "resources:\n  disk_size: 256GB\nrun: x",
    "resources:\n  any_of:\n    - accelerators: V100:1\n    - accelerators: A6000:1\nrun: x",
    "resources:\n  ordered:\n    - infra: aws\n    - infra: gcp\nrun: x",
    "resources:\n  job_recovery:\n    strategy: FAILOVER\n    max_restarts_on_errors: 3\nrun: x",
    "resources:\n  job_recovery: EAGER_NEXT_REGION\nrun: x",
    "resources:\n  infra: k8s\n  cpus: 4+\n  memory: 16+\nrun: x",
    "envs:\n  A: 1\n  B: text\nsecrets:\n  TOKEN: null\nrun: x",
    "file_mounts:\n  /checkpoints:\n    source: s3://b/p\n    mode: MOUNT_CACHED\nrun: x",
    "file_mounts:\n  /data: s3://bucket/data\nrun: x",
    "workdir: .\nsetup: pip list\nrun: x",
]

INVALID = [
    "nmae: x\nrun: x",  # unknown top-level key
    "resources:\n  acelerators: V100:1\nrun: x",  # unknown resources key
    "num_nodes: many\nrun: x",  # wrong type
    "resources:\n  use_spot: maybe\nrun: x",
    "resources:\n  disk_size: big\nrun: x",
    "file_mounts:\n  /checkpoints:\n    source: s3://b/p\n    mode: SOMETIMES\nrun: x",
    "file_mounts:\n  /checkpoints:\n    sorce: s3://b/p\nrun: x",
    "resources:\n  job_recovery:\n    max_restarts_on_errors: -1\nrun: x",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_cases_pass_both(text):
    assert sky_accepts(yaml.safe_load(text)), "SkyPilot rejects a case we meant as valid"
    assert launch_accepts(text)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_cases_fail_both(text):
    assert not sky_accepts(yaml.safe_load(text)), "SkyPilot accepts a case we meant as invalid"
    assert not launch_accepts(text)
