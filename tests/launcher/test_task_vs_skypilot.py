"""Our validator and SkyPilot's own agree on a corpus of good and bad values, field by field.

SkyPilot's verdict is what `sky launch` would reach before it provisions anything: its loader
(``sky.Task.from_yaml_config``: schema, then the Resources, Storage and Task constructors), then
the offline part of its launch-time checks (task name, file mounts, storage specs, recovery
strategy, image_id), as the API server runs them. Ours is ``parse_task`` + ``check_placement`` +
``check_local_paths``, which never import SkyPilot. Every case must get the same verdict from
both, except the listed cases where ours is stricter (each with its reason, also written next to
the rule in launcher/task_rules.py) and the one where it is looser on purpose.
"""

from __future__ import annotations

import copy
import datetime
import math
import re

import pytest
import yaml

import sky
from sky import clouds as sky_clouds
from sky.data import storage as sky_storage
from sky.skylet import constants as sky_constants
from sky.utils import annotations as sky_annotations
from sky.utils import registry as sky_registry

from launcher import task_rules
from launcher.errors import TaskError
from launcher.task import parse_task
from launcher.task_checks import check_local_paths, check_placement

R = "resources"
# Per field: (where the value goes, good values, bad values). A value may be a (value, extra)
# pair: extra keys merged into the same block (an infra beside an image_id, say).
CORPUS = {
    "cpus": (R, [1, 2, 0.5, "4", "4+", "0.5+", "16"],
             [0, -1, "0", "0+", "abc", "", "+", "4++", True, [4], {"a": 1}, "4 +x"]),
    "memory": (R, [16, 0.5, "16", "16+", "16GB", "16gb", "16Gb", "16GI", "512MB", "1.5TB+"],
               [0, -4, "0GB", "abc", "16XB", "GB", True, "16+GB", [16]]),
    "disk_size": (R, [100, 512, "256GB", "256gb", "256Gb", "1TB", "1024MB", "100", 256],
                  [0, -5, "0GB", "big", "256gB", "512MB", "1.5GB", 256.5, 100.0, True, "256 GB",
                   "256GB+", "10KB", [100]]),
    "ports": (R, [8080, "8080", "8000-8010", "80,443", [80, "443", "8000-8001"], "", [], "1-1"],
              [0, 70000, "0", "abc", "8010-8000", "1-2-3", "-1", -1, True, [True], {"a": 1},
               "65536", [[80]], "80,x", "1.5"]),
    "accelerators": (R, ["V100", "V100:1", "V100:2", "A100-80GB:8", "V100:0.5", {"V100": 1},
                         {"V100": None}, {"V100": 1, "A6000": 1}, ["V100:1", "A6000:1"], "RTX 4090:1",
                         "tpu-v3-8", ("tpu-v3-8", {"infra": "gcp"})],
                     ["V100:0", "V100:-1", "V100:x", "V100:", "V100:1:2", {"V100": 0}, {"V100": "x"},
                      {"V100": True}, [], {}, 5, True, [1], "V100:1,A6000:1", ["V100:0"],
                      ("tpu-v3-8", {"infra": "aws"})]),
    "infra": (R, ["aws", "AWS", "aws/us-east-1", "aws/us-east-1/us-east-1a", "gcp", "k8s",
                  "kubernetes", "k8s/my-ctx", "k8s/arn:aws:eks:us-east-1:1:cluster/c1", "k8s/ctx/",
                  "ssh", "ssh/lab", "vast", "slurm/mycluster", "*", "*/us-east-1", "runpod"],
              ["aws//us", "aws/", "/aws", "k8s//ctx", "k8s/", "awz", "", " ", "aws/us-east-1/a/b",
               5, True, "aws /x", " k8s/x", "local/x", "aws/ /b", ["aws"]]),
    "job_recovery": (R, ["FAILOVER", "failover", "EAGER_NEXT_REGION", "none",
                         {"strategy": "FAILOVER"}, {"max_restarts_on_errors": 3}, {"strategy": None},
                         {"recover_on_exit_codes": 3}, {"recover_on_exit_codes": [1, 2]},
                         {"recover_on_exit_codes": []}],
                     ["FOO", "", "NONE", 5, {"strategy": "foo"}, {"max_restarts_on_errors": -1},
                      {"max_restarts_on_errors": "3"}, {"max_restarts_on_errors": True},
                      {"recover_on_exit_codes": 256}, {"recover_on_exit_codes": -1},
                      {"recover_on_exit_codes": [1, 1]}, {"recover_on_exit_codes": "1"},
                      {"max_restarts_on_errors": None}, {"strategy": 5}]),
    "use_spot": (R, [True, False], ["yes", 1, "true"]),
    "labels": (R, [{"team": "ml"}], [{"a": 1}, "x", {"a": None}]),
    "instance_type": (R, ["p3.2xlarge"], [5]),
    "image_id": (R, ["docker:ubuntu", {"docker": "ubuntu"}, {}, ("ami-123", {"infra": "aws/us-east-1"}),
                     ({"us-east-1": "ami-1"}, {"infra": "aws/us-east-1"}),
                     ({"us-east-1": "ami-1", "us-west-2": "ami-2"}, {"infra": "aws"}),
                     ("projects/p/global/images/i", {"infra": "gcp"})],
                 ["ami-1", "", ("ami-1", {"infra": "aws"}), ({"us-west-2": "ami-1"}, {"infra": "aws/us-east-1"}),
                  5, ["a"], {"docker": 5}, {"docker": "x", "us-east-1": "docker:y"}, {"us-east-1": 5}]),
    "num_nodes": (None, [1, 4], [0, -1, 2.5, "2", True, 2.0]),
    "name": (None, ["demo", "a.b", "a--b", "A1"], ["a b", "-a", "a---b", "é", 5, "a_"]),
    "workdir": (None, [".", "tasks"], [5, ["."], "no-such-folder"]),
    "run": (None, ["echo hi"], [5, ["a", "b"]]),
    "setup": (None, ["pip list"], [5]),
    "envs": (None, [{"A": "1"}, {"A": 1}, {"A": ""}, {"_X": "y"}, {"A": 1.5}, {"A": True},
                    {k: "x" for k in task_rules.DOCKER_LOGIN_ENVS}],
             [{"1A": "x"}, {"A-B": "x"}, {"A": None}, ["A=1"], "A=1", {1: "x"},
              {"SKYPILOT_DOCKER_USERNAME": "u"}]),
    "secrets": (None, [{"T": None}, {"T": "x"}, {"T": 5}], ["x", 5]),
    "file_mounts": (None, [
        {"/data": "s3://bucket/data"}, {"/x": "tasks"}, {"~/x": "README.md"},
        {"/c": {"source": "s3://b", "mode": "MOUNT"}}, {"/c": {"source": "s3://b", "mode": "mount_cached"}},
        {"/c": {"source": "s3://b/p", "mode": "COPY"}}, {"/c": {"name": "mybucket", "source": "tasks"}},
        {"/c": {"name": "mybucket"}}, {"/c": {"source": ["tasks", "README.md"], "name": "b"}},
        {"/c": {"source": "s3://b", "store": "s3"}}, {"/c": {"source": "s3://b", "persistent": False}},
        ({"/c": {"source": "s3://$B", "mode": "MOUNT"}}, {"envs": {"B": "bkt"}}),
        {"/c": {"source": "gs://b", "name": None}}],
        [{"/x/": "s3://b"}, {"/x": "s3://b/"}, {"s3://b/x": "tasks"}, {"/c": {"source": "ftp://b"}},
         {"/c": {"mode": "SOMETIMES", "source": "s3://b"}}, {"/c": {"store": "dropbox", "source": "s3://b"}},
         {"/c": {}}, {"/c": {"mode": "COPY", "name": "b"}}, {"/c": {"source": "tasks"}},
         {"/c": {"name": "b", "source": "s3://b"}}, {"/c": {"name": "s3://b"}}, {"/c": {"source": []}},
         {"/c": {"source": ["tasks/"], "name": "b"}}, {"/c": {"source": ["tasks", "tasks"], "name": "b"}},
         {"/c": {"persistent": "yes", "source": "s3://b"}}, {"/c": None}, {"/c": 5}, {"/x": "no-such-file"},
         {"/c": {"name": "b", "source": "no-such-folder"}}, {"/c": {"name": "b", "source": "README.md"}},
         ({"~/sky_workdir": "tasks"}, {"workdir": "."}), {"/c": {"source": "s3://b", "sorce": 1}},
         {"/c": {"source": ["s3://b"], "name": "b"}}, {"/c": {"name": "v", "store": "volume"}}]),
    "any_of": (R, [[{"accelerators": "V100:1"}, {"accelerators": "A6000:1"}], [{"infra": "aws"}], [],
                   ([{"use_spot": True}], {"accelerators": {"V100": 1, "A6000": 1}}),
                   [{"accelerators": {"V100": 1}, "ports": None}]],
               [5, "x", [5], [{"any_of": []}], [{"ordered": []}], [{"accelerators": ["V100"]}],
                [{"accelerators": {"V100": None}}], [{"accelerators": {"V100": 1, "A6000": 1}}],
                [{"cpus": None}], [{"acelerators": "V100"}], ([{"infra": "aws"}], {"ordered": [{"infra": "gcp"}]}),
                ([{"use_spot": True}], {"accelerators": ["V100:1", "A6000:1"]})]),
    "ordered": (R, [[{"infra": "aws"}, {"infra": "gcp"}], ([{"infra": "aws"}], {"accelerators": "V100"})],
                [([{"infra": "aws"}], {"accelerators": ["V100", "A6000"]}),
                 ([{"infra": "aws"}], {"accelerators": {"V100": 1, "A6000": 1}})]),
    "resources": (None, [None, {}], [[], "x", {"acelerators": "V100"}]),
}

# Ours refuses, SkyPilot takes: each with the reason (the same as next to the rule).
STRICTER = {
    "cpus": [("1e1", "plain decimals only"), (" 4", "plain decimals only"),
             (float("inf"), "no machine has infinite CPUs"), ("nan", "NaN is no count")],
    "memory": [("16x", "the 'x' suffix is internal to SkyPilot's jobs controller"),
               ("1e3", "plain decimals only"), (float("inf"), "no machine has infinite memory")],
    "accelerators": [(":1", "an empty name fails SkyPilot's catalog lookup at launch"),
                     ("*V100", "a regex character fails SkyPilot's catalog lookup at launch"),
                     ("V100:1e0", "plain decimal counts only"),
                     ("V100:inf", "no machine has infinite GPUs"), ({"V100": float("inf")}, "likewise")],
    "infra": [("ssh/a/b", "a pool name holds no '/'")],
    "job_recovery": [({"foo": 1}, "an unknown key is an error that names it")],
    "envs": [({"A": [1, 2]}, "a list value is an indentation slip; SkyPilot exports its repr"),
             ({"A": {"b": 1}}, "likewise for a mapping"), ({True: "x"}, "YAML read the name as a boolean"),
             ({"A": datetime.date(2024, 1, 1)}, "YAML re-writes a date; quote it")],
    "secrets": [(["secrets:T"], "managed secret references need SkyPilot's secret store"),
                ({"my-secret": "x"}, "a secret is exported as an environment variable"),
                ({"T": [1]}, "a list value is an indentation slip")],
    "workdir": [({"url": "https://github.com/x/y"}, "we sync a local folder; git workdirs are SkyPilot's")],
    "file_mounts": [(({"/c": {"name": "v", "store": "volume"}}, {R: {"infra": "gcp/us-central1"}}),
                     "our backends make no cluster volumes")],
}
# Ours takes, SkyPilot refuses: on purpose (see task_rules.storage_spec).
LOOSER = [({"file_mounts": {"/checkpoints": {"source": "s3://b/prefix", "mode": "MOUNT_CACHED"}}},
           "the design declares the checkpoint store as a bucket prefix; our backends sync it, and "
           "the SkyPilot backend mounts the bucket's root and links the path to the folder")]


def _case(field: str, value) -> dict:
    """A task with ``value`` at ``field`` (and a tuple's extra keys beside it)."""
    value, extra = value if isinstance(value, tuple) else (value, {})
    if CORPUS[field][0] == R:
        return {"run": "echo", "resources": {field: value, **extra}}
    return {"run": "echo", **extra, field: value}


def _cases(kind: int):
    for field, spec in CORPUS.items():
        for value in spec[kind]:
            yield pytest.param(_case(field, value), id=f"{field}={value!r}"[:80])


@pytest.fixture
def sky_offline(monkeypatch, tmp_path):
    """SkyPilot as its API server validates, with no network: an image 'exists' (size 0) and no
    storage of any name is in its state."""
    monkeypatch.setattr(sky_annotations, "is_on_api_server", True)
    for cls in (sky_clouds.AWS, sky_clouds.GCP):
        monkeypatch.setattr(cls, "get_image_size", lambda self, image_id, region: 0)
    monkeypatch.setattr(sky_storage.global_user_state, "get_handle_from_storage_name", lambda name: None)


def sky_verdict(cfg: dict) -> str | None:
    """None when SkyPilot accepts the task, else its error."""
    try:
        task = sky.Task.from_yaml_config(copy.deepcopy(cfg))
        task.validate_name()
        task.validate_run()
        task.expand_and_validate_workdir()
        task.expand_and_validate_file_mounts()
        for storage in task.storage_mounts.values():
            storage._validate_storage_spec(storage.name)
        for r in task.resources:
            r._try_validate_managed_job_attributes()
            r._try_validate_image_id()
            r._try_validate_volumes()
    except Exception as e:  # noqa: BLE001 - any refusal counts, as for `sky launch`
        return f"{type(e).__name__}: {e}"
    return None


def our_verdict(cfg: dict) -> str | None:
    try:
        task = parse_task(yaml.safe_dump(cfg), "case.yaml")
        check_placement(task)
        check_local_paths(task)
    except TaskError as e:
        assert "\n" not in str(e)
        return str(e)
    return None


@pytest.mark.parametrize("cfg", _cases(1))
def test_good_values_pass_both(cfg, sky_offline):
    assert sky_verdict(cfg) is None, "SkyPilot refuses a case meant as good"
    assert our_verdict(cfg) is None


@pytest.mark.parametrize("cfg", _cases(2))
def test_bad_values_fail_both(cfg, sky_offline):
    assert sky_verdict(cfg) is not None, "SkyPilot accepts a case meant as bad"
    assert our_verdict(cfg) is not None


@pytest.mark.parametrize("cfg,reason", [pytest.param(_case(f, v), why, id=f"{f}={v!r}")
                                        for f, cases in STRICTER.items() for v, why in cases])
def test_where_ours_is_stricter(cfg, reason, sky_offline):
    assert sky_verdict(cfg) is None, f"SkyPilot refuses it too; drop it from STRICTER ({reason})"
    assert our_verdict(cfg) is not None


@pytest.mark.parametrize("cfg,reason", LOOSER)
def test_where_ours_is_looser_on_purpose(cfg, reason, sky_offline):
    cfg = {"run": "echo", **cfg}
    assert sky_verdict(cfg) is not None and our_verdict(cfg) is None, reason


def test_our_constants_are_skypilots():
    """The rules copy SkyPilot's names; a SkyPilot upgrade that changes them fails here."""
    assert task_rules.SKY_CLOUDS == sky_constants.ALL_CLOUDS
    assert set(task_rules.RECOVERY_STRATEGIES) == {s.upper() for s in sky_registry.JOBS_RECOVERY_STRATEGY_REGISTRY}
    assert task_rules.STORE_TYPES == tuple(t.value for t in sky_storage.StoreType)
    assert task_rules.STORAGE_MODES == tuple(m.value for m in sky_storage.StorageMode)
    assert task_rules.MEMORY_UNITS == sky_constants.MEMORY_SIZE_UNITS
    assert set(task_rules.DOCKER_LOGIN_ENVS) == sky_constants.DOCKER_LOGIN_ENV_VARS
    assert task_rules.REMOTE_WORKDIR == sky_constants.SKY_REMOTE_WORKDIR


@pytest.mark.parametrize("infra", task_rules.OUR_ONLY_INFRAS)
def test_our_own_infras_are_extensions(infra, sky_offline):
    """local, kaggle and skypilot/sky are ours (ssh and vast are SkyPilot clouds too)."""
    cfg = _case("infra", infra)
    assert sky_verdict(cfg) is not None and our_verdict(cfg) is None


@pytest.mark.parametrize("cfg", _cases(1))
def test_every_good_task_survives_the_state(cfg):
    """The supervisor re-reads the task from the state (secrets removed): it must still parse,
    to the same model."""
    from launcher.jobs import redacted_yaml

    task = parse_task(yaml.safe_dump(cfg), "case.yaml")
    again = parse_task(redacted_yaml(task), "stored")
    assert again.model_dump(exclude={"secrets"}) == task.model_dump(exclude={"secrets"})


# --- generated values: every combination of a few parts, per field -----------------------------

def _generated():
    sizes = [f"{n}{u}{p}" for n in ("0", "1", "1.5", "16", "-1", "01", "1e3", " 4", "abc", "")
             for u in ("", "GB", "gb", "Gb", "gB", "MB", "KB", "TB", "PB", "x", "GiB", "Gi", "G")
             for p in ("", "+")]
    numbers = [0, 1, 2, 0.25, -3, 1024, 2.0, float("inf"), float("nan"), True]
    ports = [f"{a}{sep}{b}" for a in ("0", "1", "80", "65535", "65536", "x", "")
             for sep in ("", "-", ",", " , ") for b in ("", "1", "443", "65536", "80")]
    accs = [f"{n}{c}" for n in ("V100", "v100", "A100-80GB", "", "*V", "RTX 4090", "tpu-v3-8", "H100_SXM", "a/b")
            for c in ("", ":1", ":0", ":0.5", ":-1", ":x", ":1:2", ":1e0", ": 1", ":")]
    accs += [{n: c} for n in ("V100", "", "A/B") for c in (1, 0, 0.5, -1, None, True, "1")]
    infras = [f"{h}{r}" for h in ("aws", "AWS", "gcp", "k8s", "kubernetes", "ssh", "vast", "slurm", "*", "awz", "")
              for r in ("", "/", "/r", "/r/z", "/r/z/w", "//r", "/r/", "/ r", "/r//z", " ")]
    for field, values in (("cpus", sizes + numbers), ("memory", sizes + numbers), ("disk_size", sizes + numbers),
                          ("ports", ports), ("accelerators", accs), ("infra", infras)):
        for v in values:
            yield field, v


def _why_stricter(field: str, v) -> str | None:
    """The reason (as written next to our rule) why ours may refuse what SkyPilot takes."""
    text = v if isinstance(v, str) else ""
    if isinstance(v, float) and not math.isfinite(v):
        return "no machine has an infinite or NaN count"
    if field in ("cpus", "memory") and re.search(r"e|^\s|\s$", text):
        return "plain decimals only"
    if field == "memory" and text.rstrip("+").endswith("x"):
        return "the 'x' suffix is internal to SkyPilot's jobs controller"
    if field == "accelerators":
        name = (text.split(":")[0] if text else next(iter(v), "") if isinstance(v, dict) else "")
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._ -]*[A-Za-z0-9])?", name):
            return "not a GPU model's name: fails SkyPilot's catalog lookup at launch"
        if re.search(r":.*(e|\s)", text):
            return "plain decimal counts only"
    if field == "infra" and text.startswith("ssh/") and text.count("/") == 2:
        return "a pool name holds no '/'"
    return None


def test_generated_values_agree(sky_offline):
    """Both validators over every generated value; a disagreement must be ours refusing, for a
    reason written next to the rule. Prints nothing on success; lists every mismatch otherwise."""
    mismatches, counts = [], {"both accept": 0, "both refuse": 0, "ours stricter": 0}
    for field, v in _generated():
        cfg = _case(field, v)
        sky_ok, ours_ok = sky_verdict(cfg) is None, our_verdict(cfg) is None
        if sky_ok == ours_ok:
            counts["both accept" if ours_ok else "both refuse"] += 1
        elif sky_ok and _why_stricter(field, v):
            counts["ours stricter"] += 1
        else:
            mismatches.append((field, v, "SkyPilot accepts" if sky_ok else "SkyPilot refuses"))
    assert not mismatches, mismatches
    assert counts["both accept"] > 100 and counts["both refuse"] > 300, counts
