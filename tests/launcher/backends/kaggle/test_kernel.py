"""The kernel we push: metadata, a script whose config holds secret names but never values, and
deterministic code bundles."""

from __future__ import annotations

import ast
import tarfile

import pytest

from launcher.backends.base import RunSpec
from launcher.backends.kaggle import kernel

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def spec(**secrets) -> RunSpec:
    return RunSpec(job_id="toy-1a2b3c4d", attempt=2, run="python -m launcher.testing toy",
                   envs={"EPOCHS": "3"}, store_uri="s3://bucket/runs/toy-1a2b3c4d",
                   secrets={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE12345", "AWS_SECRET_ACCESS_KEY": SECRET,
                            "AWS_ENDPOINT_URL": "https://s3.example.com", "AWS_DEFAULT_REGION": "auto",
                            **secrets})


def config(s: RunSpec | None = None) -> dict:
    return kernel.kernel_config(s or spec(), bundles=[{"key": "code/workdir-1.tar.gz", "into": "workdir"}],
                                pythonpath=["workdir"], workdir="workdir", session_limit=43200,
                                margin=900, control_interval=10)


def literal_config(source: str) -> dict:
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "CONFIG":
            return ast.literal_eval(node.value)
    raise AssertionError("no CONFIG in the source")


@pytest.mark.parametrize("job_id, slug", [
    ("toy-1a2b3c4d", "launch-toy"),  # one kernel per task name: its attached secrets serve every job
    ("My_Big.Run-deadbeef", "launch-my-big-run"),
    ("toy-2", "launch-toy-2"),  # not a run id's tail
    ("a" * 80 + "-0123abcd", "launch-" + "a" * 34 + "-0f45e858"),
])
def test_kernel_slug_is_one_per_task_name_short_and_lower_case(job_id, slug):
    assert kernel.kernel_slug(job_id) == slug and len(slug) <= 50


def test_metadata_is_a_private_python_script_with_gpu_and_internet():
    meta = kernel.kernel_metadata("ada/launch-toy-1a2b3c4d", enable_gpu=True, enable_internet=True,
                                  machine_shape="NvidiaTeslaT4")
    assert meta["id"] == "ada/launch-toy-1a2b3c4d" and meta["title"] == "launch-toy-1a2b3c4d"
    assert (meta["language"], meta["kernel_type"], meta["code_file"]) == ("python", "script", kernel.CODE_FILE)
    assert meta["is_private"] is True and meta["enable_gpu"] is True and meta["enable_internet"] is True
    assert meta["machine_shape"] == "NvidiaTeslaT4"
    assert "machine_shape" not in kernel.kernel_metadata("a/launch-x", enable_gpu=False, enable_internet=True)


def test_config_names_the_secrets_and_carries_only_the_plain_store_settings():
    c = config(spec(WANDB_API_KEY="wandb-0123456789"))
    assert c["secret_names"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY"]
    assert c["store_env"] == {"AWS_DEFAULT_REGION": "auto", "AWS_ENDPOINT_URL": "https://s3.example.com"}
    assert c["optional_secrets"] == ["AWS_SESSION_TOKEN"]
    assert c["spec"]["deadline"] is None and c["spec"]["workdir"] is None and "secrets" not in c["spec"]
    assert c["spec"]["envs"] == {"EPOCHS": "3"} and c["attempt"] == 2


def test_the_store_keys_are_asked_for_even_when_they_come_from_a_profile():
    s = RunSpec(job_id="j-1", attempt=1, run="true", store_uri="s3://b/runs/j-1")
    assert config(s)["secret_names"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def test_a_secret_value_in_the_config_is_refused():
    s = spec()
    s.envs["LEAK"] = SECRET  # an env that repeats a secret's value would put it in the source
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        config(s)


def test_source_is_the_script_with_its_config_and_no_secret_value():
    c = config(spec(WANDB_API_KEY="wandb-0123456789"))
    source = kernel.kernel_source(c)
    compile(source, kernel.CODE_FILE, "exec")
    assert literal_config(source) == c
    assert "def main(config" in source and kernel.CONFIG_LINE not in source
    for value in (SECRET, "AKIAEXAMPLE12345", "wandb-0123456789"):
        assert value not in source


def test_write_kernel_makes_the_push_folder(tmp_path):
    folder = kernel.write_kernel(tmp_path / "k", {"id": "a/launch-x"}, "print(1)\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted([kernel.CODE_FILE, kernel.METADATA_FILE])


def _tree(root):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return [("pkg/a.py", root / "pkg" / "a.py"), ("run.sh", root / "run.sh")]


def test_bundles_are_deterministic_and_keep_file_modes(tmp_path):
    files = _tree(tmp_path / "src")
    a = kernel.make_bundle("workdir", files, tmp_path / "out1")
    b = kernel.make_bundle("workdir", list(reversed(files)), tmp_path / "out2")
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()
    assert (a.files, a.bytes) == (2, len("A = 1\n") + len("#!/bin/sh\necho hi\n"))
    assert a.key == f"code/workdir-{a.sha256[:16]}.tar.gz"
    with tarfile.open(a.path) as tar:
        assert tar.getmember("run.sh").mode == 0o755 and tar.getmember("pkg/a.py").mtime == 0
    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 2\n")
    assert kernel.make_bundle("workdir", files, tmp_path / "out3").sha256 != a.sha256


def test_the_launcher_travels_unless_the_workdir_has_it(tmp_path):
    work = tmp_path / "work"
    _tree(work)
    with_launcher = kernel.make_bundles(str(work), tmp_path / "b")
    assert [b.kind for b in with_launcher] == ["workdir", "launcher"]
    with tarfile.open(with_launcher[1].path) as tar:
        names = tar.getnames()
    assert "launcher/agent.py" in names and not any("__pycache__" in n for n in names)
    (work / "launcher").mkdir()
    (work / "launcher" / "agent.py").write_text("")
    assert [b.kind for b in kernel.make_bundles(str(work), tmp_path / "b")] == ["workdir"]
    assert [b.kind for b in kernel.make_bundles(None, tmp_path / "b")] == ["launcher"]


def test_layout_puts_the_launcher_first_on_the_path():
    both = [{"kind": "workdir", "key": "code/workdir-1.tar.gz"}, {"kind": "launcher", "key": "code/launcher-2.tar.gz"}]
    unpack, path, workdir = kernel.layout(both)
    assert unpack == [{"key": "code/workdir-1.tar.gz", "into": "workdir"},
                      {"key": "code/launcher-2.tar.gz", "into": "code"}]
    assert (path, workdir) == (["code"], "workdir")
    assert kernel.layout(both[:1])[1:] == (["workdir"], "workdir")
    assert kernel.layout(both[1:])[1:] == (["code"], None)
