"""Preflight of the accelerators on a pretend host: a fake nvidia-smi or fake NVML for the driver's
view, a stand-in Python for the run's view; the agent refuses to train, the supervisor counts a
setup failure of that machine and tries another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from launcher import agent, contract, state as st
from launcher.store import open_store
from launcher.supervisor import Supervisor
from launcher.testing import FakeBackend, FakeClock
from launcher.watch.preflight import check, matches, wanted_kinds


def pretend_host(tmp_path: Path, gpus: list[str] | None, torch_sees: tuple[bool, int] | None) -> dict[str, str]:
    """An environment whose PATH has a fake ``nvidia-smi`` listing ``gpus`` (none: no driver
    tool at all) and a ``python`` that answers the torch probe with ``torch_sees``."""
    bin_dir = tmp_path / "pretend-bin"
    bin_dir.mkdir()
    if gpus is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + "".join(f"echo '{g}'\n" for g in gpus))
        smi.chmod(0o755)
    py = bin_dir / "python"
    answer = json.dumps(list(torch_sees)) if torch_sees else ""
    py.write_text("#!/bin/sh\n" + (f"echo '{answer}'\n" if answer else "echo 'No module named torch' >&2; exit 1\n"))
    py.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_accelerator_forms():
    assert wanted_kinds("V100") == {"V100": 1}
    assert wanted_kinds("V100:2") == {"V100": 2}
    assert wanted_kinds({"A100-80GB": 8}) == {"A100-80GB": 8}
    assert wanted_kinds({"V100": None}) == {"V100": 1}
    assert wanted_kinds(["V100:1", "A6000:1"]) == {"V100": 1, "A6000": 1}
    assert wanted_kinds(None) == {}


def test_kind_matches_the_driver_name():
    assert matches("A100-80GB", "NVIDIA A100-SXM4-80GB")
    assert matches("V100", "Tesla V100-SXM2-16GB")
    assert matches("A6000", "NVIDIA RTX A6000")
    assert not matches("A100-80GB", "NVIDIA A100-SXM4-40GB")
    assert not matches("H100", "NVIDIA A100-SXM4-80GB")


def test_a_machine_with_what_the_task_asks_passes(tmp_path):
    env = pretend_host(tmp_path, ["Tesla V100-SXM2-16GB"] * 2, (True, 2))
    assert check({"V100": 2}, env) == ""
    assert check(["A6000:1", "V100:1"], env) == ""  # any one kind of the list will do


def test_no_gpu_at_all(tmp_path, fake_nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML", "fail")
    env = pretend_host(tmp_path, None, (False, 0))
    why = check("V100:1", env)
    assert why.startswith("the task asks for 1x V100, but the driver sees no GPU: no nvidia-smi on PATH")


def test_too_few_or_the_wrong_kind(tmp_path):
    env = pretend_host(tmp_path, ["NVIDIA A100-SXM4-40GB"], (True, 1))
    assert check({"V100": 1}, env) == "the task asks for 1x V100; the driver sees 1 GPU(s): NVIDIA A100-SXM4-40GB"
    assert "asks for 2x A100" in check("A100:2", env)


def test_a_gpu_the_run_cannot_use(tmp_path):
    env = pretend_host(tmp_path, ["Tesla V100-SXM2-16GB"], (False, 0))
    assert "torch in the run's Python does not (cuda available: False, devices: 0); it would train on the CPU" \
        in check("V100", env)


def test_nvml_is_asked_when_there_is_no_nvidia_smi(tmp_path, fake_nvml):
    env = pretend_host(tmp_path, None, None)  # no torch there: only the driver's view counts
    assert check("A100-80GB:1", env) == ""
    assert "driver sees 1 GPU(s): NVIDIA A100-SXM4-80GB" in check("A100-80GB:2", env)


def test_the_agent_on_a_host_without_the_gpu_trains_nothing(tmp_path, fake_nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML", "[]")
    store_uri = (tmp_path / "store").as_uri()
    d = tmp_path / "attempt-1"
    spec = {"job_id": "job-1", "attempt": 1, "store_uri": store_uri, "accelerators": {"V100": 1},
            "run": f"{sys.executable} -m launcher.testing toy --steps 5 --step-time 0.01"}
    agent.write_attempt_files(d, spec, {})
    env = pretend_host(tmp_path, None, None)
    env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    rc = subprocess.run([sys.executable, "-m", "launcher.agent", str(d / agent.SPEC_NAME)], env=env,
                        timeout=120).returncode
    store = open_store(store_uri)
    assert rc == contract.EXIT_PREFLIGHT
    start = json.loads(store.get_bytes("logs/attempt-1.json"))
    assert start["preflight"] == "the task asks for 1x V100; the driver sees 0 GPU(s): none"
    assert "preflight failed" in store.get_bytes("logs/attempt-1.log").decode()
    assert not store.exists("metrics.jsonl") and not store.list("ckpt/") and not store.exists("DONE")


def test_the_supervisor_counts_a_setup_failure_of_that_machine_and_tries_again():
    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml="resources: {accelerators: V100}\nrun: x",
                           infra="fake", store_uri="", options={})
    clock = FakeClock()
    backend = FakeBackend(["preflight", "succeeded"])
    sup = Supervisor(state, job.id, backend_for=lambda i: backend, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.SUCCEEDED
    first, second = state.attempts(job.id)
    assert first.state == "SETUP_FAILED" and first.reason.startswith("preflight:")
    assert second.state == "SUCCEEDED"
    spec = next(c[1] for c in backend.calls if c[0] == "start_run")
    assert spec.accelerators == "V100"


def test_the_local_machine_is_not_checked():
    """This machine is the user's own: a GPU task run here on the CPU is on purpose."""
    from launcher.backends.local.backend import LocalBackend

    assert LocalBackend.preflight_accelerators is False
