"""The supervisor under a deadline, on a fake clock: spot while it can, on demand when it must.

A 100-step job (one step a minute) due 200 minutes after submission: the line of uniform
progress climbs half a step a minute. Spot machines are lost after a few steps; the waits after
each loss put the job behind, the next attempt goes on demand, and it stays there (no matter
that spot is back) until it is two changeovers ahead of the line; then back to spot to finish.
"""

from __future__ import annotations

from launcher import state as st
from launcher.supervisor import Supervisor
from launcher.testing import FakeBackend, FakeClock

TASK = "name: t\nresources:\n  accelerators: V100:1\n  use_spot: true\nrun: echo hi\n"
TOTAL, STEP = 100, 60.0


class SpotLosingBackend(FakeBackend):
    """Spot runs are lost after ``spot_steps`` steps, the first ``losses`` times; on-demand runs
    go on until they are told to stop. One step per poll, kept in the job's progress (as the
    store keeps it across machines)."""

    def __init__(self, state, job_id, spot_steps: int, losses: int):
        super().__init__([], polls_per_run=10**9)
        self.state, self.job_id, self.spot_steps, self.losses = state, job_id, spot_steps, losses
        self.log: list[tuple[bool, int]] = []  # (use_spot, step at start) per provision

    def provision(self, req):
        handle = super().provision(req)
        handle["spot"] = bool(req.resources.get("use_spot"))
        self.log.append((handle["spot"], self._step()))
        return handle

    def _step(self) -> int:
        return int((self.state.job(self.job_id).progress or {}).get("step", 0))

    def poll(self, handle):
        status = super().poll(handle)
        if status.done:
            return status
        step = self._step() + 1
        self.state.set_job(self.job_id, progress={"step": step, "total_steps": TOTAL})
        if step >= TOTAL:
            handle["outcome"], handle["signalled"] = "succeeded", True
        elif handle["spot"] and handle["polls"] >= self.spot_steps and self.losses > 0:
            self.losses -= 1
            handle["outcome"], handle["signalled"] = "lost", True
        return status


def test_preemptions_put_the_job_behind_it_goes_on_demand_and_stays_until_ahead():
    state = st.State()
    clock = FakeClock()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK, infra="fake", store_uri="",
                           options={"deadline": clock.now + 200 * 60, "deadline_start": clock.now,
                                    "estimate": TOTAL * STEP})
    backend = SpotLosingBackend(state, job.id, spot_steps=1, losses=6)
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time,
                     sleep=clock.sleep, poll_interval=STEP, progress_interval=0.0)
    assert sup.run() == st.SUCCEEDED
    attempts = state.attempts(job.id)
    modes = [a.handle["mode"] for a in attempts]
    assert [spot for spot, _ in backend.log] == [m == "spot" for m in modes]
    first_od = modes.index("on_demand")
    assert first_od >= 2, modes  # more than one preemption before it
    assert all(a.state == "PREEMPTED" for a in attempts[:first_od])
    # it went on demand behind the line, and left on demand only for spot, once well ahead
    od = attempts[first_od]
    line = lambda t: TOTAL * (t - job.options["deadline_start"]) / (200 * 60)  # noqa: E731
    assert backend.log[first_od][1] < line(od.started)
    assert od.state == "PREEMPTED" and od.reason.startswith("deadline policy: to spot")
    step_at_end = backend.log[first_od + 1][1]
    ahead = step_at_end - line(od.ended)
    changeover_steps = state.job(job.id).options["deadline_status"]["changeover_s"] / STEP
    # two changeovers ahead when it decided (the line climbs half a step in the minute the run
    # takes to stop), and not much more: it left as soon as it was
    assert 2 * changeover_steps - 0.5 <= ahead < 2 * changeover_steps + 2
    assert "two changeovers ahead" in od.reason
    assert modes[first_od + 1:] == ["spot"] * (len(modes) - first_od - 1)
    assert attempts[-1].state == "SUCCEEDED"
    assert clock.now <= job.options["deadline"]
    assert backend.live == set()
    kinds = [e["message"] for e in state.events(job.id) if e["kind"] == "deadline"]
    assert any("behind the progress line" in k for k in kinds)
