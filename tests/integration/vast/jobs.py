"""Helpers shared by the Vast.ai end-to-end tests: the toy task they run and its store logs."""

from __future__ import annotations

from launcher import state as st
from launcher.store import NotFound, open_store

STEPS = 40
TOY = f"python -m launcher.testing toy --steps {STEPS} --step-time 0.2"


def toy_task(tmp_path, spot=True):
    p = tmp_path / "toy.yaml"
    p.write_text(f"name: toy\nresources:\n  accelerators: RTX4090:1\n  use_spot: {str(spot).lower()}\n"
                 f"  disk_size: 40\nrun: {TOY}\n")
    return p


def store_log(job: st.Job, attempt: int) -> str:
    """The attempt's log as uploaded to the job's store, or "" before it is there."""
    try:
        return open_store(job.store_uri).get_bytes(f"logs/attempt-{attempt}.log").decode(errors="replace")
    except NotFound:
        return ""
