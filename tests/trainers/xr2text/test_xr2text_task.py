"""tasks/xr2text.yaml is a valid task for our loader and for SkyPilot's own schema: one GPU,
spot with recovery, the data and checkpoint-store mounts, and the synthetic switch."""

from __future__ import annotations

from pathlib import Path

import yaml

from launcher.task import load_task

TASK = Path(__file__).resolve().parents[3] / "tasks" / "xr2text.yaml"


def test_task_loads_with_one_spot_gpu_data_mount_and_checkpoint_store():
    task = load_task(str(TASK))
    options = task.resources.options()
    assert all(o["accelerators"].endswith(":1") and o["use_spot"] for o in options)
    recovery = task.resources.recovery()
    assert (recovery.strategy, recovery.max_restarts_on_errors) == ("FAILOVER", 3)
    assert task.file_mounts["/data"].mode == "MOUNT"
    assert task.checkpoint_mount().mode == "MOUNT_CACHED"
    assert task.checkpoint_mount().source.startswith("s3://")
    envs = task.env_strings()
    assert envs["SYNTHETIC"] == "0" and "python -m trainers.xr2text" in task.run
    assert '"$SYNTHETIC" = "1"' in task.run and "--synthetic" in task.run
    raw = yaml.safe_load(TASK.read_text())
    assert all(isinstance(v, str) for v in raw["envs"].values())  # quoted, as SkyPilot wants


def test_task_passes_skypilots_schema():
    import sky
    from sky.utils import common_utils, schemas

    config = yaml.safe_load(TASK.read_text())
    common_utils.validate_schema(config, schemas.get_task_schema(), "tasks/xr2text.yaml: ")
    task = sky.Task.from_yaml_config(config)
    assert len(task.resources) == 3
    assert set(task.storage_mounts) == {"/data", "/checkpoints"}
