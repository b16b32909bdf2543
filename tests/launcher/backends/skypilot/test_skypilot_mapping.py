"""The contract between our task and SkyPilot's: every bundled task becomes a sky.Task that
SkyPilot validates; spot, on-demand and any_of land where they should; the store is mounted when
the task has no checkpoint mount and left alone when it has one; the run sees the contract."""

from __future__ import annotations

import glob
import os

import pytest

from launcher import contract
from launcher.backends.base import BackendError, RunSpec
from launcher.backends.skypilot import mapping
from launcher.task import load_task, parse_task

STORE = "s3://bucket/runs/qs-1a2b3c4d"
TASKS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "tasks")


def spec_for(task, store_uri=STORE, attempt=2, secrets=None) -> RunSpec:
    return RunSpec(job_id="qs-1a2b3c4d", attempt=attempt, run=task.run or "true", setup=task.setup,
                   envs=task.env_strings(), secrets=secrets or {}, store_uri=store_uri)


def build(text: str, infra: str = "aws", store_uri: str = STORE, **kw):
    task = parse_task(text, "case.yaml")
    p = mapping.for_attempt(task, spec_for(task, store_uri, **kw), option=task.resources.options()[0],
                     infra=infra, num_nodes=task.num_nodes, workdir=None, name="qs")
    return p, mapping.to_sky_task(p.config)


def test_every_bundled_task_becomes_a_valid_sky_task():
    paths = sorted(glob.glob(os.path.join(TASKS_DIR, "*.yaml")))
    assert paths, f"no task YAML under {TASKS_DIR}"
    for path in paths:
        task = load_task(path)
        declared = task.checkpoint_mount()
        store = f"{declared.source}/qs-1a2b3c4d" if declared else STORE  # as `launch up` makes it
        p = mapping.for_attempt(task, spec_for(task, store), option=task.resources.options()[0], infra="aws",
                         num_nodes=task.num_nodes, workdir=task.resolved_workdir(), name="t")
        sky_task = mapping.to_sky_task(p.config)
        # SkyPilot's own checks (its schema ran in from_yaml_config): name, run, workdir, file
        # mounts. Resources were built and checked field by field; their catalog lookup
        # (Resources.validate) would fetch catalogs from the network and is left to `launch plan`.
        sky_task.validate_name()
        sky_task.validate_run()
        sky_task.expand_and_validate_workdir()
        sky_task.expand_and_validate_file_mounts()
        assert sky_task.run and sky_task.num_nodes == task.num_nodes, path
        assert p.checkpoint_dir.startswith(mapping.BUCKET_ROOTS + "/"), path
        # SkyPilot's launch-time check of each mount's source (it refuses a folder in a bucket).
        from sky.data.storage import Storage

        for storage in sky_task.storage_mounts.values():
            Storage._validate_source(storage.source, storage.mode, False)


def test_spot_becomes_a_managed_job_with_recovery_passed_through():
    p, t = build("resources:\n  accelerators: V100:1\n  use_spot: true\n"
                 "  job_recovery:\n    strategy: FAILOVER\n    max_restarts_on_errors: 2\nrun: x")
    assert p.managed
    (r,) = t.resources
    assert r.use_spot and str(r.cloud) == "AWS" and r.accelerators == {"V100": 1}
    assert r.job_recovery["strategy"] == "FAILOVER"
    assert r.job_recovery["max_restarts_on_errors"] == 2
    assert r.job_recovery["recover_on_exit_codes"] == [contract.EXIT_PREEMPTED]


def test_string_job_recovery_keeps_its_strategy():
    p, t = build("resources:\n  use_spot: true\n  job_recovery: EAGER_NEXT_REGION\nrun: x")
    (r,) = t.resources
    assert r.job_recovery["strategy"] == "EAGER_NEXT_REGION"
    assert contract.EXIT_PREEMPTED in r.job_recovery["recover_on_exit_codes"]


def test_on_demand_is_a_plain_cluster_launch():
    p, t = build("resources:\n  accelerators: A6000:1\nrun: x")
    assert not p.managed
    (r,) = t.resources
    assert not r.use_spot and r.accelerators == {"A6000": 1} and r.job_recovery is None


def test_any_of_keeps_every_option_for_skypilot_to_choose():
    p, t = build("resources:\n  use_spot: true\n  any_of:\n    - accelerators: V100:1\n"
                 "    - accelerators: A6000:1\nrun: x")
    assert p.managed
    accs = sorted(next(iter(r.accelerators)) for r in t.resources)
    assert accs == ["A6000", "V100"]
    assert all(r.use_spot and str(r.cloud) == "AWS" for r in t.resources)


def test_declared_job_recovery_makes_an_on_demand_task_managed():
    p, t = build("resources:\n  job_recovery:\n    max_restarts_on_errors: 1\nrun: x", infra="slurm/lab")
    assert p.managed
    (r,) = t.resources
    assert not r.use_spot and r.job_recovery["max_restarts_on_errors"] == 1


def test_ordered_stays_ordered_and_mixed_spot_is_managed():
    p, t = build("resources:\n  ordered:\n    - accelerators: V100:1\n      use_spot: true\n"
                 "    - accelerators: A6000:1\nrun: x")
    assert p.managed and isinstance(t.resources, list)
    assert [next(iter(r.accelerators)) for r in t.resources] == ["V100", "A6000"]
    assert [r.use_spot for r in t.resources] == [True, False]


def test_the_job_infra_pins_every_option_and_skypilot_leaves_them_open():
    text = "resources:\n  ordered:\n    - infra: aws\n      accelerators: V100:1\n    - infra: gcp\n      accelerators: V100:1\nrun: x"
    _, pinned = build(text, infra="gcp")
    assert {str(r.cloud) for r in pinned.resources} == {"GCP"}
    _, open_ = build(text, infra="skypilot")
    assert [str(r.cloud) for r in open_.resources] == ["AWS", "GCP"]


ROOT_CACHED = mapping.BUCKET_ROOTS + "/s3-bucket-cached"


def test_store_is_mounted_cached_when_absent_as_the_bucket_root_and_a_link():
    p, t = build("run: x")
    # SkyPilot mounts whole buckets only: the bucket's root, and /checkpoints linked to the job.
    (root,) = t.storage_mounts
    storage = t.storage_mounts[root]
    assert root == ROOT_CACHED and storage.source == "s3://bucket" and storage.mode.value == mapping.MOUNT_MODE
    assert t.envs[contract.ENV_OUTPUT_DIR] == ROOT_CACHED + "/runs/qs-1a2b3c4d"
    assert t.envs[contract.ENV_CHECKPOINT_DIR] == ROOT_CACHED + "/runs/qs-1a2b3c4d/ckpt"
    link = f"_launch_link {ROOT_CACHED}/runs/qs-1a2b3c4d /checkpoints"
    assert link in t.run and link in t.setup


def test_a_store_at_a_bucket_root_is_mounted_as_it_is():
    p, t = build("run: x", store_uri="s3://bucket")
    assert t.storage_mounts[contract.CHECKPOINT_MOUNT].source == "s3://bucket"
    assert t.envs[contract.ENV_CHECKPOINT_DIR] == "/checkpoints/ckpt" and "_launch_link" not in t.run


def test_a_declared_checkpoint_mount_keeps_its_mode_and_holds_the_job():
    text = "file_mounts:\n  /checkpoints:\n    source: s3://bucket/runs\n    mode: MOUNT\nrun: x"
    p, t = build(text)
    storage = t.storage_mounts[mapping.BUCKET_ROOTS + "/s3-bucket"]
    assert storage.source == "s3://bucket" and storage.mode.value == "MOUNT"
    # The job's prefix is a folder inside the declared mount.
    assert t.envs[contract.ENV_CHECKPOINT_DIR] == mapping.BUCKET_ROOTS + "/s3-bucket/runs/qs-1a2b3c4d/ckpt"
    assert f"_launch_link {mapping.BUCKET_ROOTS}/s3-bucket/runs /checkpoints" in t.run


def test_data_and_checkpoints_in_one_bucket_share_a_root_per_mode():
    text = ("file_mounts:\n  /data:\n    source: s3://bucket/imagenet\n    mode: MOUNT\n"
            "  ~/cache:\n    source: s3://bucket/cache\n    mode: MOUNT_CACHED\n"
            "  /raw:\n    source: s3://bucket/raw\n    mode: COPY\nrun: x")
    p, t = build(text)
    assert set(t.storage_mounts) == {mapping.BUCKET_ROOTS + "/s3-bucket", ROOT_CACHED, "/raw"}
    assert t.storage_mounts["/raw"].source == "s3://bucket/raw"  # COPY takes a folder as it is
    assert f'_launch_link {ROOT_CACHED}/cache "$HOME"/cache' in t.run


def test_link_script_points_each_path_at_its_folder_and_refuses_a_full_folder(tmp_path):
    import subprocess

    root = tmp_path / "root"
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "x").write_text("1")
    (tmp_path / "empty").mkdir()
    script = mapping.link_script([(str(tmp_path / "a/data"), str(root / "imagenet")),
                                  (str(tmp_path / "empty"), str(root / "new/job"))])
    assert subprocess.run(["bash", "-c", script]).returncode == 0
    assert (tmp_path / "a/data/x").read_text() == "1" and (tmp_path / "empty").is_symlink()
    assert (root / "new/job").is_dir()  # a job's folder that did not exist yet
    assert subprocess.run(["bash", "-c", script]).returncode == 0  # a second run (setup, then run)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("keep")
    bad = subprocess.run(["bash", "-c", mapping.link_script([(str(tmp_path / "full"), str(root / "imagenet"))])],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "exists and is not empty" in bad.stderr
    assert (tmp_path / "full" / "f").read_text() == "keep"


def test_a_declared_mount_elsewhere_than_the_store_is_refused():
    text = "file_mounts:\n  /checkpoints:\n    source: s3://other/x\n    mode: MOUNT_CACHED\nrun: x"
    with pytest.raises(BackendError, match="drop --store"):
        build(text)


def test_other_file_mounts_pass_through():
    p, t = build("file_mounts:\n  /data: s3://bucket/data\nrun: x")
    assert t.file_mounts == {"/data": "s3://bucket/data"}  # a COPY: SkyPilot takes folders there
    assert set(t.storage_mounts) == {ROOT_CACHED}


def test_relative_local_mounts_are_relative_to_the_yaml(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "t.yaml").write_text("file_mounts:\n  /data: ./data\nrun: x\n")
    task = load_task(tmp_path / "t.yaml")
    p = mapping.for_attempt(task, spec_for(task), option={}, infra="aws", num_nodes=1, workdir=None, name="t")
    assert p.config["file_mounts"]["/data"] == str(tmp_path / "data")


def test_file_store_is_used_in_place_without_a_mount(tmp_path):
    p, t = build("run: x", store_uri=(tmp_path / "qs").as_uri())
    assert not t.storage_mounts
    assert t.envs[contract.ENV_CHECKPOINT_DIR] == f"{tmp_path}/qs/ckpt"


def test_the_run_sees_the_contract_and_secrets_stay_secret():
    p, t = build("envs:\n  EPOCHS: 3\nrun: python -m trainers.quickstart", secrets={"TOKEN": "s3cret"})
    assert t.envs[contract.ENV_JOB_ID] == "qs-1a2b3c4d"  # our run id, stable across recoveries
    assert t.envs[contract.ENV_ATTEMPT] == "2"
    assert t.envs[contract.ENV_CHECKPOINT_URI] == STORE + "/ckpt"
    assert t.envs["EPOCHS"] == "3"
    assert "TOKEN" not in t.envs and t.secrets["TOKEN"].get_secret_value() == "s3cret"
    assert "python -m trainers.quickstart" in t.run and "launcher.agent" not in t.run


def test_wrapped_run_keeps_the_exit_code_log_and_done_marker(tmp_path):
    import subprocess

    out = tmp_path / "job"
    env = {**os.environ, "LAUNCH_OUTPUT_DIR": str(out), "LAUNCH_CHECKPOINT_DIR": str(out / "ckpt"),
           "LAUNCH_ATTEMPT": "3"}
    rc = subprocess.run(["bash", "-c", mapping.wrap_run("echo \"it's here\"; exit 7")], env=env).returncode
    assert rc == 7
    assert (out / "logs/attempt-3.log").read_text() == "it's here\n"
    assert (out / "logs/attempt-3.exit_code").read_text().strip() == "7"
    assert not (out / "DONE").exists()
    results = 'cd "$LAUNCH_OUTPUT_DIR"; echo 1 >> metrics.jsonl; echo r > results.json; mkdir -p figs; touch figs/a.png'
    assert subprocess.run(["bash", "-c", mapping.wrap_run(results)], env=env).returncode == 0
    assert (out / "DONE").exists() and (out / "ckpt").is_dir()
    # Results go to outputs/ as on every backend; metrics.jsonl stays where `launch status` reads it.
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "ckpt", "logs", "metrics.jsonl", "outputs"]
    assert (out / "outputs/results.json").read_text() == "r\n" and (out / "outputs/figs/a.png").exists()


def test_sky_names_are_valid_and_keep_the_unique_tail():
    import re

    name = mapping.sky_name("Very_Long.Task Name-With-Many-Words-0123abcd", "a12")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40
    assert name.endswith("0123abcd-a12")
    assert mapping.sky_name("9lives")[0].isalpha()
