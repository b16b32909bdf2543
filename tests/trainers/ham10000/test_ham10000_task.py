"""tasks/ham10000.yaml is a valid task for our loader and for SkyPilot's own schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from launcher.task import load_task

TASK = Path(__file__).resolve().parents[3] / "tasks" / "ham10000.yaml"


def test_task_loads_with_spot_recovery_data_mount_and_checkpoint_store():
    task = load_task(str(TASK))
    options = task.resources.options()
    assert [o["accelerators"] for o in options] == ["V100:1", "A6000:1"]
    assert all(o["use_spot"] for o in options)
    recovery = task.resources.recovery()
    assert (recovery.strategy, recovery.max_restarts_on_errors) == ("FAILOVER", 3)
    assert task.file_mounts["/data"].mode == "MOUNT"
    assert task.checkpoint_mount().mode == "MOUNT_CACHED"
    assert task.checkpoint_mount().source.startswith("s3://")
    envs = task.env_strings()
    assert envs["SYNTHETIC"] == "0" and "trainers.ham10000" in task.run
    assert envs["ARCHS"] == "resnet50,efficientnet_b3,densenet121,vit_b_16"
    raw = yaml.safe_load(TASK.read_text())
    assert all(isinstance(v, str) for v in raw["envs"].values())  # quoted, as SkyPilot wants


def test_task_passes_skypilots_schema():
    import sky
    from sky.utils import common_utils, schemas

    config = yaml.safe_load(TASK.read_text())
    common_utils.validate_schema(config, schemas.get_task_schema(), "tasks/ham10000.yaml: ")
    task = sky.Task.from_yaml_config(config)
    assert {str(r.accelerators) for r in task.resources} == {"{'V100': 1}", "{'A6000': 1}"}
    assert set(task.storage_mounts) == {"/data", "/checkpoints"}
