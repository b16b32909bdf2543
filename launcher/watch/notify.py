"""Notifications through apprise (Slack, Discord, ntfy, e-mail, Telegram, JSON webhooks: one URL
format for all), sent by the supervisor.

Where the URLs come from, first found wins: ``launch up --notify URL`` (repeatable), then
``LAUNCH_NOTIFY`` (URLs separated by spaces or commas), then ``$LAUNCH_HOME/notify.yaml``::

    urls: [ntfy://my-topic, "discord://webhook_id/webhook_token"]
    events: [alert, preempted, succeeded, failed]     # optional filter; default: all

The events filter comes from ``--notify-on``, ``LAUNCH_NOTIFY_ON``, the file, in that order.
The URLs are secrets: they reach the supervisor in memory (like the task's secrets), and are never
written to the state, the store, a log or ``status --json``; a log line names a URL by its scheme.

The notifier follows the job's event timeline in the state database from a background thread,
so the supervisor never waits on a webhook: each send has connect/read timeouts and a few tries,
and a failed send is logged as a warning event, never fatal.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from launcher import state as st
from launcher.errors import LaunchError, TaskError

EVENTS = ("submitted", "running", "preempted", "recovered", "alert", "succeeded", "failed", "cancelled")
ENV_URLS = "LAUNCH_NOTIFY"
ENV_EVENTS = "LAUNCH_NOTIFY_ON"
CONFIG_NAME = "notify.yaml"
# The key under which `launch up` hands the --notify URLs to the supervisor with the secrets.
SECRET_KEY = "LAUNCH_NOTIFY"
_STATE_EVENTS = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled"}
_ENDED = re.compile(r"^attempt (\d+) (preempted|stalled): (.*)$", re.S)


def split_urls(text: str | None) -> list[str]:
    return [u for u in re.split(r"[\s,]+", text or "") if u]


def scheme(url: str) -> str:
    """What a log may say about a URL: its scheme only."""
    return url.split("://", 1)[0] + "://" if "://" in url else "(no scheme)"


def _config() -> dict[str, Any]:
    path = st.launch_home() / CONFIG_NAME
    if not path.exists():
        return {}
    import yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LaunchError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not set(doc) <= {"urls", "events"}:
        raise LaunchError(f"{path}: expected a mapping with 'urls' and optionally 'events'")
    for key in ("urls", "events"):
        v = doc.get(key)
        if isinstance(v, str):
            doc[key] = split_urls(v)
        elif v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise LaunchError(f"{path}: {key}: expected a list of strings")
    return doc


def resolve_urls(flags: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``--notify`` > ``LAUNCH_NOTIFY`` > ``notify.yaml``'s urls."""
    if flags:
        return list(flags)
    if os.environ.get(ENV_URLS):
        return split_urls(os.environ[ENV_URLS])
    return list(_config().get("urls") or [])


def resolve_events(flag: str | None = None) -> list[str]:
    """``--notify-on`` > ``LAUNCH_NOTIFY_ON`` > ``notify.yaml``'s events > all; checked."""
    if flag:
        given, where = split_urls(flag), "--notify-on"
    elif os.environ.get(ENV_EVENTS):
        given, where = split_urls(os.environ[ENV_EVENTS]), ENV_EVENTS
    else:
        given, where = _config().get("events") or list(EVENTS), f"{st.launch_home() / CONFIG_NAME}: events"
    bad = [e for e in given if e not in EVENTS]
    if bad:
        raise TaskError(f"{where}: unknown event {bad[0]!r} (choose from {', '.join(EVENTS)})")
    return given


def _apprise():
    try:
        import apprise
    except ImportError:
        raise LaunchError("notifications need apprise: pip install 'launch[notify]'") from None
    # apprise logs the URLs it fails on; they are secrets, and the supervisor's output is a log.
    logging.getLogger("apprise").disabled = True
    return apprise


def check_urls(urls: list[str]) -> None:
    """Each URL must be one apprise understands; the error names its scheme, never the URL."""
    apprise = _apprise()
    for i, url in enumerate(urls, 1):
        if apprise.Apprise.instantiate(url) is None:
            raise TaskError(f"--notify URL {i} ({scheme(url)}): not a notification URL apprise knows "
                            "(see its wiki for the formats, e.g. ntfy://topic, json://host/path)")


@dataclass(frozen=True)
class Message:
    event: str
    title: str
    body: str
    kind: str = "info"  # apprise's notify type: info | success | warning | failure


def classify(event: dict[str, Any], recovering: bool) -> tuple[str | None, int | None, str]:
    """(notification event or None, attempt number if known, reason) for one state event;
    ``recovering``: the job went through RECOVERING since it last was RUNNING."""
    kind, msg = event["kind"], event["message"]
    if kind == "submitted":
        return "submitted", None, msg
    if kind == "alert":
        m = re.match(r"^attempt (\d+): (.*)$", msg, re.S)
        return "alert", int(m.group(1)) if m else None, m.group(2) if m else msg
    if kind == "attempt":
        m = _ENDED.match(msg)
        if m:
            return "preempted", int(m.group(1)), f"{m.group(2)}: {m.group(3)}"
        return None, None, ""
    if kind == "state":
        state, _, reason = msg.partition(": ")
        if state == "RUNNING":
            m = re.match(r"^attempt (\d+)", reason)
            return ("recovered" if recovering else "running"), \
                int(m.group(1)) if m else None, reason
        if state in _STATE_EVENTS:
            return _STATE_EVENTS[state], None, reason
    return None, None, ""


def compose(state: st.State, job_id: int, name: str, attempt: int | None, reason: str) -> Message:
    """The message: job, attempt, infra, state, reason, progress and cost."""
    job = state.job(job_id)
    attempts = state.attempts(job_id)
    n = attempt or (attempts[-1].n if attempts else None)
    cost = sum(a.cost() for a in attempts)
    p = job.progress or {}
    prog = " ".join(f"{k} {p[k]}" for k in ("epoch", "step") if k in p) or "-"
    if p.get("total_steps") and "step" in p:
        prog += f" ({float(p['step']) / float(p['total_steps']):.0%})"
    body = (f"job {job.name} ({job.run_id}), attempt {n or '-'}, on {job.infra}\n"
            f"state: {job.state}\nreason: {reason or '-'}\nprogress: {prog}\ncost so far: ${cost:.2f}")
    kind = {"succeeded": "success", "failed": "failure", "alert": "warning", "preempted": "warning"}.get(name, "info")
    return Message(name, f"launch: {job.name} {name}", body, kind)


class Sender:
    """Sends one message to one URL with timeouts and a few tries; True if it went."""

    def __init__(self, timeout: float = 10.0, tries: int = 3, backoff: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.timeout, self.tries, self.backoff, self.sleep = timeout, tries, backoff, sleep

    def __call__(self, url: str, msg: Message) -> bool:
        apprise = _apprise()
        for i in range(self.tries):
            ap = apprise.Apprise()
            plugin = apprise.Apprise.instantiate(url)
            if plugin is None:
                return False
            for attr in ("socket_connect_timeout", "socket_read_timeout"):
                if hasattr(plugin, attr):
                    setattr(plugin, attr, self.timeout)
            ap.add(plugin)
            try:
                if ap.notify(body=msg.body, title=msg.title, notify_type=msg.kind):
                    return True
            except Exception:
                pass
            if i + 1 < self.tries:
                self.sleep(self.backoff * 2 ** i)
        return False


class Notifier:
    """Follows job ``job_id``'s events and sends the chosen ones to every URL, off the caller's
    thread. Where it stopped is kept in ``$LAUNCH_HOME/notify/job-N.pos`` (a count of events,
    no URL), so a restarted supervisor does not send twice."""

    def __init__(self, state: st.State, job_id: int, urls: list[str], events: list[str] | None = None,
                 *, send: Callable[[str, Message], bool] | None = None, every: float = 1.0):
        self.state, self.job_id, self.urls = state, job_id, list(urls)
        self.events = set(events or EVENTS)
        self.send = send or Sender()
        self.every = every
        self.pos_path = st.launch_home() / "notify" / f"job-{job_id}.pos"
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, daemon=True, name="notify-follow")
        self._sender = threading.Thread(target=self._drain, daemon=True, name="notify-send")

    def start(self) -> "Notifier":
        if self.urls:
            self._follower.start()
            self._sender.start()
        return self

    def _position(self) -> int:
        try:
            return int(self.pos_path.read_text())
        except (OSError, ValueError):
            return 0

    def _save_position(self, n: int) -> None:
        self.pos_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pos_path.with_suffix(".tmp")
        tmp.write_text(str(n))
        tmp.replace(self.pos_path)

    def poll_once(self) -> int:
        """Queue messages for the events since the last call; returns how many were queued."""
        events = self.state.events(self.job_id)
        pos = self._position()
        recovering = False
        queued = 0
        for i, e in enumerate(events):
            name, attempt, reason = classify(e, recovering)
            if e["kind"] == "state":
                state = e["message"].partition(": ")[0]
                recovering = state == "RECOVERING" or (recovering and state != "RUNNING")
            if i >= pos and name in self.events:
                self._queue.put(compose(self.state, self.job_id, name, attempt, reason))
                queued += 1
        self._save_position(len(events))
        return queued

    def _follow(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # the state is busy; the next pass catches up
                pass
            if self._stop.wait(self.every):
                try:
                    self.poll_once()  # what happened just before the stop (the job's end)
                except Exception:
                    pass
                self._queue.put(None)
                return

    def _drain(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            for i, url in enumerate(self.urls, 1):
                if not self.send(url, msg):
                    try:
                        self.state.event(self.job_id, "warning", f"notification '{msg.event}' to URL {i} "
                                         f"({scheme(url)}) failed after retries")
                    except Exception:
                        pass

    def stop(self, timeout: float = 60.0) -> None:
        """Send what is left, waiting at most ``timeout`` seconds in all."""
        if not self.urls:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._follower.join(max(0.0, deadline - time.monotonic()))
        self._sender.join(max(0.0, deadline - time.monotonic()))


def for_supervisor(state: st.State, job: st.Job, secrets: dict[str, str]) -> Notifier:
    """The supervisor's notifier: URLs handed over by `launch up` (taken out of ``secrets``),
    else from ``LAUNCH_NOTIFY`` or ``notify.yaml``. ``LAUNCH_NOTIFY`` is then removed from this
    process's environment, so a run started from here never sees it. A bad setting is a warning
    event, not a crash: the job runs without notifications."""
    given = split_urls(secrets.pop(SECRET_KEY, ""))
    try:
        urls = given or resolve_urls()
        events = job.options.get("notify_on") or resolve_events()
        if urls:
            _apprise()
    except LaunchError as e:
        state.event(job.id, "warning", f"notifications off: {e}")
        urls, events = [], []
    os.environ.pop(ENV_URLS, None)
    return Notifier(state, job.id, urls, events)
