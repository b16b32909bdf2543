"""Notifications: which events become messages, what they say, where the URLs come from, and real
sends through apprise's json:// to a webhook started here."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import state as st
from launcher.errors import LaunchError, TaskError
from launcher.testing import load_by_path
from launcher.watch import notify

Webhook = load_by_path(Path(__file__).parent / "webhook.py", "watch_webhook").Webhook
SECRET = "tok-3f9a1c"


def timeline(state):
    """A job that ran, was preempted, recovered, raised an alert and succeeded."""
    job = state.create_job(name="qs", task_path=None, task_yaml="run: x", infra="local", store_uri="", options={})
    state.add_attempt(job.id, host="h1", price_per_hour=2.0, started=1000.0)
    state.transition(job.id, st.RUNNING, "attempt 1 on h1")
    state.set_job(job.id, progress={"step": 30, "epoch": 1, "total_steps": 120})
    state.event(job.id, "attempt", "attempt 1 preempted: preemption notice: the run saved and stopped")
    state.transition(job.id, st.RECOVERING, "preempted: preemption notice")
    state.transition(job.id, st.STARTING, "attempt 2")
    state.add_attempt(job.id, host="h2", price_per_hour=2.0, started=1100.0)
    state.transition(job.id, st.RUNNING, "attempt 2 on h2")
    state.event(job.id, "alert", "attempt 2: GPU 0 (Tesla V100) at 90 °C (over 85 °C)")
    state.transition(job.id, st.SUCCEEDED, "run exited 0")
    return job


def test_every_kind_of_event_becomes_one_message():
    state = st.State()
    job = timeline(state)
    sent = []
    n = notify.Notifier(state, job.id, ["json://x"], send=lambda url, m: sent.append(m) or True)
    assert n.poll_once() == 6
    names = [n._queue.get().event for _ in range(6)]
    assert names == ["submitted", "running", "preempted", "recovered", "alert", "succeeded"]


def test_the_filter_chooses_and_a_restarted_notifier_does_not_send_twice():
    state = st.State()
    job = timeline(state)
    n = notify.Notifier(state, job.id, ["json://x"], ["alert", "succeeded"], send=lambda u, m: True)
    assert n.poll_once() == 2
    again = notify.Notifier(state, job.id, ["json://x"], ["alert", "succeeded"], send=lambda u, m: True)
    assert again.poll_once() == 0


def test_a_message_names_job_attempt_infra_state_reason_progress_and_cost():
    state = st.State()
    job = timeline(state)
    n = notify.Notifier(state, job.id, ["json://x"], ["alert"], send=lambda u, m: True)
    n.poll_once()
    msg = n._queue.get()
    assert msg.title == "launch: qs alert" and msg.kind == "warning"
    for part in (f"job qs ({job.run_id})", "attempt 2", "on local", "state: SUCCEEDED",
                 "reason: GPU 0 (Tesla V100) at 90 °C", "step 30 (25%)", "cost so far: $"):
        assert part in msg.body, msg.body


def test_urls_flag_wins_over_environment_wins_over_file(monkeypatch, launch_home):
    (launch_home / "notify.yaml").write_text("urls: [ntfy://from-file]\nevents: [failed]\n")
    assert notify.resolve_urls() == ["ntfy://from-file"]
    assert notify.resolve_events() == ["failed"]
    monkeypatch.setenv("LAUNCH_NOTIFY", "ntfy://a, ntfy://b")
    monkeypatch.setenv("LAUNCH_NOTIFY_ON", "alert")
    assert notify.resolve_urls() == ["ntfy://a", "ntfy://b"] and notify.resolve_events() == ["alert"]
    assert notify.resolve_urls(("ntfy://flag",)) == ["ntfy://flag"]
    assert notify.resolve_events("succeeded,failed") == ["succeeded", "failed"]


def test_bad_settings_are_one_line_errors(launch_home):
    with pytest.raises(TaskError, match="--notify-on: unknown event 'done'"):
        notify.resolve_events("alert,done")
    with pytest.raises(TaskError, match=r"--notify URL 1 \(nope://\)") as e:
        notify.check_urls([f"nope://{SECRET}"])
    assert SECRET not in str(e.value)
    (launch_home / "notify.yaml").write_text("url: [x]\n")
    with pytest.raises(LaunchError, match="notify.yaml: expected a mapping with 'urls'"):
        notify.resolve_urls()


def test_json_webhook_receives_the_message_after_a_failed_try():
    slept = []
    with Webhook(fail_first=1) as hook:
        msg = notify.Message("alert", "launch: qs alert", "job qs, attempt 2", "warning")
        assert notify.Sender(timeout=5, sleep=slept.append)(hook.url(SECRET), msg)
    assert hook.posts == 2 and slept == [2.0]
    (body,) = hook.received
    assert body["title"] == "launch: qs alert" and body["message"] == "job qs, attempt 2"
    assert body["type"] == "warning" and hook.paths == [f"/{SECRET}"]


def test_a_failed_send_is_a_warning_naming_the_scheme_only():
    state = st.State()
    job = timeline(state)
    with Webhook(fail_first=100) as hook:
        n = notify.Notifier(state, job.id, [hook.url(SECRET)], ["succeeded"],
                            send=notify.Sender(timeout=2, tries=2, sleep=lambda s: None), every=0.05)
        n.start()
        n.stop(timeout=30)
    warnings = [e["message"] for e in state.events(job.id) if e["kind"] == "warning"]
    assert warnings == ["notification 'succeeded' to URL 1 (json://) failed after retries"]
    assert hook.posts == 2
    assert all(SECRET not in e["message"] for e in state.events(job.id))


def test_a_hanging_webhook_never_holds_the_caller():
    import threading
    import time

    state = st.State()
    job = timeline(state)
    release = threading.Event()
    n = notify.Notifier(state, job.id, ["json://x"], send=lambda u, m: release.wait(30), every=0.05).start()
    t = time.monotonic()
    state.event(job.id, "alert", "attempt 2: more")  # the supervisor goes on writing events
    n.stop(timeout=0.5)
    assert time.monotonic() - t < 5
    release.set()
