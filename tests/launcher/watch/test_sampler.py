"""Machine samples: the sampler against a fake NVML module, and the agent writing gpu.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from launcher import agent, contract
from launcher.store import open_store
from launcher.watch.sampler import Sampler, load_nvml


def test_sample_reads_every_gpu_and_the_run(fake_nvml, monkeypatch):
    two = json.loads(os.environ["FAKE_NVML"]) * 2
    monkeypatch.setenv("FAKE_NVML", json.dumps(two))
    s = Sampler(attempt=3, nvml=fake_nvml)
    rec = s.sample(pgid=os.getpgid(0), now=123.0)
    assert rec["ts"] == 123.0 and rec["attempt"] == 3
    assert [g["index"] for g in rec["gpus"]] == [0, 1]
    g = rec["gpus"][0]
    assert g == {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "util": 97, "temp_c": 71, "power_w": 301.2,
                 "mem_used_mb": 30720.0, "mem_total_mb": 81920.0}
    assert rec["rss_mb"] > 0  # this process is in our own group
    assert "cpu_percent" not in rec  # a first reading has no interval to measure over
    assert s.sample(pgid=os.getpgid(0))["cpu_percent"] >= 0


def test_a_reading_the_gpu_lacks_is_left_out(fake_nvml, monkeypatch):
    gpu = json.loads(os.environ["FAKE_NVML"])[0]
    del gpu["power_mw"]
    monkeypatch.setenv("FAKE_NVML", json.dumps([gpu]))
    assert "power_w" not in Sampler(1, nvml=fake_nvml).sample()["gpus"][0]


def test_without_nvml_the_reason_is_given_and_cpu_still_sampled(fake_nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML", "fail")
    nvml, why = load_nvml()
    assert nvml is None and "NVML cannot start" in why and "Not Found" in why
    s = Sampler(1)
    assert s.no_gpu_reason == why
    rec = s.sample()
    assert rec["gpus"] == [] and "ram_percent" in rec


def run_agent(tmp_path, attempt=1, steps=12):
    store_uri = (tmp_path / "store").as_uri()
    d = tmp_path / f"attempt-{attempt}"
    spec = {"job_id": "job-1", "attempt": attempt, "store_uri": store_uri, "sync_interval": 0.2,
            "sample_interval": 0.1,
            "run": f"{sys.executable} -m launcher.testing toy --steps {steps} --step-time 0.05"}
    agent.write_attempt_files(d, spec, {})
    rc = subprocess.run([sys.executable, "-m", "launcher.agent", str(d / agent.SPEC_NAME)], timeout=120).returncode
    return rc, d, open_store(store_uri)


def samples(store):
    return [json.loads(line) for line in store.get_bytes(contract.SAMPLES_NAME).decode().splitlines()]


def test_agent_uploads_samples_of_every_attempt(tmp_path, fake_nvml):
    rc, d, store = run_agent(tmp_path, steps=6)
    assert rc == 0
    first = samples(store)
    assert first and {s["attempt"] for s in first} == {1}
    assert first[-1]["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"
    rc, d, store = run_agent(tmp_path, attempt=2, steps=12)
    both = samples(store)
    assert both[:len(first)] == first and {s["attempt"] for s in both} == {1, 2}
    start = json.loads(store.get_bytes("logs/attempt-2.json"))
    assert start["resumed_step"] == 6 and start["metrics_lines"] == 6 and start["metrics_top_step"] == 6


def test_agent_without_nvml_says_so_once(tmp_path, fake_nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML", "fail")
    rc, d, store = run_agent(tmp_path)
    log = store.get_bytes("logs/attempt-1.log").decode()
    assert rc == 0 and log.count("no GPU samples: NVML cannot start") == 1, log
    recs = samples(store)
    assert len(recs) >= 2 and all(r["gpus"] == [] and "ram_percent" in r for r in recs)
