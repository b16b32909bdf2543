"""Wheels for hosts without a package index: what the probe says, what pip is asked for, what is
cached, and when the bootstrap uses them (the real thing: tests/integration/ssh/test_ssh_recovery.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from launcher.backends.base import BackendError
from launcher.backends.ssh import backend as ssh_backend
from launcher.backends.ssh import wheels

PROBE = {"python": "3.12", "implementation": "cp", "abis": ["cp312", "abi3", "none"],
         "platforms": ["manylinux_2_35_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
         "missing": ["rich", "boto3"], "index": False}


def probe_output(**changes) -> str:
    return "[bootstrap] image python: /usr/bin/python3 (3.12.3)\nLAUNCH_PROBE " + json.dumps({**PROBE, **changes}) + "\n"


def test_the_probe_line_is_read_after_the_bootstrap_log():
    assert wheels.parse_probe(probe_output()) == PROBE


def test_no_probe_line_is_an_error_that_shows_the_output():
    with pytest.raises(BackendError, match="(?s)no LAUNCH_PROBE line.*exit 3"):
        wheels.parse_probe("[bootstrap] exit 3\n")


@pytest.mark.parametrize("missing, index, expected", [
    (["boto3"], False, True),
    (["boto3"], True, False),   # a host that reaches an index installs from it
    ([], None, False),          # nothing to install
])
def test_wheels_only_for_a_host_that_lacks_packages_and_reaches_no_index(missing, index, expected):
    assert wheels.needs_wheels({**PROBE, "missing": missing, "index": index}) is expected


def test_pip_is_asked_for_wheels_for_the_hosts_python_and_platforms(tmp_path):
    args = wheels.download_args(PROBE, tmp_path / "d", tmp_path / "c.txt")
    joined = " ".join(args)
    assert "download --only-binary=:all:" in joined
    assert "--python-version 3.12 --implementation cp" in joined
    assert "--abi cp312 --abi abi3 --abi none" in joined
    assert "--platform manylinux_2_35_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64" in joined
    assert args[-2:] == ["boto3", "rich"] and f"-c {tmp_path / 'c.txt'}" in joined
    assert wheels.host_tag(PROBE) == "cp312-manylinux_2_35_x86_64"


def test_a_complete_cache_is_used_without_running_pip(tmp_path, launch_home, monkeypatch):
    constraints = tmp_path / "c.txt"
    constraints.write_text("torch==2.14.1\n")
    folder = launch_home / "wheels" / wheels.host_tag(PROBE) / wheels.set_key(PROBE, constraints)
    folder.mkdir(parents=True)
    (folder / "boto3-1.0-py3-none-any.whl").write_bytes(b"PK")
    (folder / wheels.COMPLETE).write_text("")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran again"))
    assert wheels.wheel_cache(PROBE, constraints) == folder
    assert [name for name, _ in wheels.wheel_files(folder)] == ["boto3-1.0-py3-none-any.whl"]


def test_another_set_of_packages_is_another_folder(tmp_path):
    constraints = tmp_path / "c.txt"
    constraints.write_text("")
    assert wheels.set_key(PROBE, constraints) == wheels.set_key({**PROBE, "missing": ["boto3", "rich"]}, constraints)
    assert wheels.set_key(PROBE, constraints) != wheels.set_key({**PROBE, "missing": ["boto3"]}, constraints)


def test_a_failed_download_names_the_packages_and_leaves_nothing_behind(tmp_path, launch_home, monkeypatch):
    constraints = tmp_path / "c.txt"
    constraints.write_text("")
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for rich\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(BackendError, match=r"(?s)host-a reaches no package index and lacks rich, boto3.*"
                                           r"No matching distribution found for rich"):
        wheels.wheel_cache(PROBE, constraints, host="host-a")
    assert list((launch_home / "wheels").rglob("*.whl")) == [] and \
        list((launch_home / "wheels" / wheels.host_tag(PROBE)).iterdir()) == []


class Remote:
    def __init__(self, probe: str):
        self.probe, self.commands = probe, []

    def run(self, command, *, timeout=30.0, stdin=None, check=True):
        self.commands.append(command)
        return subprocess.CompletedProcess([], 0, self.probe if command.endswith("--probe") else "ok", "")


def test_a_host_that_lacks_nothing_is_ready_after_the_probe(monkeypatch):
    be = ssh_backend.SSHBackend("x", hosts=[])
    remote = Remote('LAUNCH_PROBE {"python": "3.11", "missing": [], "index": null, "ready": true}\n')
    be._run_bootstrap(remote, "/r", {"name": "host-a"})
    assert remote.commands == ["bash /r/code/infra/bootstrap.sh /r --probe"]


def test_a_host_that_reaches_an_index_installs_from_it(monkeypatch):
    be = ssh_backend.SSHBackend("x", hosts=[])
    remote, node = Remote(probe_output(index=True)), {"name": "host-a"}
    monkeypatch.setattr(wheels, "wheel_cache", lambda *a, **k: pytest.fail("no wheels for a host with an index"))
    be._run_bootstrap(remote, "/r", node)
    assert remote.commands == ["bash /r/code/infra/bootstrap.sh /r --probe", "bash /r/code/infra/bootstrap.sh /r"]
    assert "wheels" not in node


def test_a_host_without_an_index_gets_the_wheels_it_lacks(monkeypatch, tmp_path):
    be = ssh_backend.SSHBackend("x", hosts=[])
    remote, node, sent = Remote(probe_output()), {"name": "host-a"}, []
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / "rich-1-py3-none-any.whl").write_bytes(b"PK")
    monkeypatch.setattr(wheels, "wheel_cache", lambda probe, constraints, host: tmp_path / "abc123")
    monkeypatch.setattr(ssh_backend.transfer, "sync_files", lambda r, files, dest: sent.append((files, dest)))
    be._run_bootstrap(remote, "/r", node)
    assert sent == [([("rich-1-py3-none-any.whl", tmp_path / "abc123" / "rich-1-py3-none-any.whl")], "/r/wheels/abc123")]
    assert remote.commands[-1] == "bash /r/code/infra/bootstrap.sh /r --wheels /r/wheels/abc123"
    assert node["wheels"] == ["boto3", "rich"]
