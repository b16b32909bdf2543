"""The script that runs inside a Kaggle session: secrets by name, the attempt's files, and the
watcher that gives the notice at the deadline and obeys the control file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import types

import pytest

from launcher.backends.kaggle import kernel_script as ks

TRAP = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(75)); "
        "print('ready', flush=True); time.sleep(60)")


class MemoryStore:
    def __init__(self, objects=None):
        self.objects = dict(objects or {})

    def get(self, key):
        return self.objects.get(key)

    def put(self, key, data):
        self.objects[key] = data


def kaggle_secrets(values: dict[str, str]) -> types.ModuleType:
    module = types.ModuleType("kaggle_secrets")

    class UserSecretsClient:
        def get_secret(self, label):
            if label not in values:
                raise RuntimeError("Unexpected response from the service")
            return values[label]

    module.UserSecretsClient = UserSecretsClient
    return module


def trapping_child() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", TRAP], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_secrets_are_read_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({"A": "1", "B": "2"}))
    assert ks.read_secrets(["A", "B", "TOKEN"], optional=["TOKEN"]) == {"A": "1", "B": "2"}


def test_missing_secrets_are_named_with_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({"A": "1"}))
    with pytest.raises(ks.BootstrapError, match=r"B, C\. Add each under Add-ons > Secrets"):
        ks.read_secrets(["A", "B", "C"], optional=[])


def test_outside_kaggle_there_are_no_secrets(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle_secrets", None)
    with pytest.raises(ks.BootstrapError, match="runs in a Kaggle kernel"):
        ks.read_secrets(["A"], optional=[])


def test_main_stops_before_anything_else_without_secrets(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({}))
    config = {"attempt": 1, "job_id": "j", "session_limit": 60, "margin": 10,
              "secret_names": ["AWS_SECRET_ACCESS_KEY"]}
    assert ks.main(config) == 1
    assert "AWS_SECRET_ACCESS_KEY" in capsys.readouterr().out


def test_attempt_files_carry_the_deadline_and_private_secrets(tmp_path):
    config = {"attempt": 3, "workdir": "workdir", "spec": {"job_id": "j", "attempt": 3, "deadline": None}}
    path = ks.write_attempt(config, tmp_path, {"K": "v"}, deadline=1234.5)
    spec = json.loads(path.read_text())
    assert path.parent.name == "attempt-3" and spec["deadline"] == 1234.5
    assert spec["workdir"] == str(tmp_path / "workdir")
    secrets = path.parent / "secrets.json"
    assert json.loads(secrets.read_text()) == {"K": "v"} and stat.S_IMODE(secrets.stat().st_mode) == 0o600


def test_the_notice_comes_at_its_time(tmp_path):
    proc = trapping_child()
    w = ks.Watcher(proc, MemoryStore(), 1, tmp_path, notice_at=time.time() + 0.3, control_interval=0.1)
    assert w.run() == 75 and w.noticed


@pytest.mark.parametrize("word", ["term", "cancel"])
def test_term_and_cancel_in_the_control_file_give_the_notice(tmp_path, word):
    proc = trapping_child()
    store = MemoryStore({"logs/attempt-4.control": word.encode()})
    w = ks.Watcher(proc, store, 4, tmp_path, notice_at=time.time() + 60, control_interval=0.1)
    assert w.run() == 75 and w.noticed


def test_kill_in_the_control_file_kills_the_agent_and_the_run_without_notice(tmp_path):
    agent, run = trapping_child(), trapping_child()
    (tmp_path / "run.pgid").write_text(str(run.pid))
    store = MemoryStore({"logs/attempt-1.control": b"kill"})
    w = ks.Watcher(agent, store, 1, tmp_path, notice_at=time.time() + 60, control_interval=0.1)
    assert w.run() is None and not w.noticed
    assert agent.returncode == -9 and run.wait(timeout=5) == -9


def test_the_runs_log_is_copied_to_the_kernels_output(tmp_path, capsys):
    (tmp_path / "run.log").write_text("step 1\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    w = ks.Watcher(proc, MemoryStore(), 1, tmp_path, notice_at=time.time() + 60, control_interval=1)
    w.copy_log()
    with open(tmp_path / "run.log", "a") as f:
        f.write("step 2\n")
    assert w.run() == 0
    assert capsys.readouterr().out == "step 1\nstep 2\n"


def test_the_kernels_store_reads_and_writes_under_the_prefix(moto_s3):
    moto_s3.create_bucket(Bucket="kernel-bucket")
    store = ks.Store("s3://kernel-bucket/runs/j", {"AWS_DEFAULT_REGION": "us-east-1"},
                     {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                      "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]})
    assert store.get("logs/attempt-1.control") is None
    store.put("logs/attempt-1.control", b"term")
    assert moto_s3.get_object(Bucket="kernel-bucket", Key="runs/j/logs/attempt-1.control")["Body"].read() == b"term"
    assert store.get("logs/attempt-1.control") == b"term"


def test_a_check_version_only_says_whether_the_secrets_are_attached(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({"A": "s3cr3t-value"}))
    assert ks.main({"check_only": True, "secret_names": ["A"], "optional_secrets": []}) == 0
    assert ks.main({"check_only": True, "secret_names": ["A", "B"], "optional_secrets": []}) == 1
    out = capsys.readouterr().out
    assert "all 1 secrets are attached" in out and "not found for this notebook: B" in out
    assert "s3cr3t-value" not in out
