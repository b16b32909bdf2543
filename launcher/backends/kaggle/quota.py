"""How long a Kaggle session may run this week: Kaggle's own quota view first, our count second.

Kaggle gives each account a weekly GPU quota (about 30 h) and a TPU quota (about 20 h), which
every session of the account uses, wherever it was started (the web editor, another machine).
``kaggle quota`` (the SDK's ``quota_view``) says how much is left and when the window resets, so
that is asked first. Where the call fails (an older API, an outage), the fallback counts the
sessions launch itself pushed over the last 7 days against ``LAUNCH_KAGGLE_WEEKLY_*_HOURS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from launcher.backends.base import NoCapacityError
from launcher.backends.kaggle.client import KaggleAPIError
from launcher.backends.kaggle.config import KaggleSettings

WEEK = 7 * 86400.0


def gpu_sessions(now: float, kind: str = "gpu") -> list[tuple[float, float]]:
    """``(start, end)`` of every Kaggle session of ``kind`` (gpu or tpu) that launch pushed from
    this machine in the last 7 days (from the state; a session still running ends ``now``).
    Sessions of the same account run from elsewhere are not seen: this is the fallback."""
    from launcher import state as st

    state, out = st.State(), []
    for job in state.jobs():
        if job.infra != "kaggle" and "kaggle" not in job.options.get("option_infras", []):
            continue  # a job whose options span providers counts when one of them is Kaggle
        for a in state.attempts(job.id):
            h = a.handle
            mine = h.get("kind") == kind if h.get("kind") else (kind == "gpu" and h.get("enable_gpu"))
            if mine and h.get("version") is not None:
                start, end = h.get("pushed_at") or a.started, a.ended or now
                if end > now - WEEK:
                    out.append((max(start, now - WEEK), min(end, now)))
    return out


def shortest(settings: KaggleSettings) -> float:
    """The shortest session worth pushing."""
    return max(settings.min_session, settings.margin + 60.0)


def budget(client, settings: KaggleSettings, kind: str, now: float,
           sessions: Callable[..., list[tuple[float, float]]]) -> float:
    """Seconds of ``kind`` quota left for the next session; NoCapacityError below the shortest
    session worth pushing, saying when enough frees up."""
    try:
        q = client.quota()
    except (KaggleAPIError, AttributeError):
        return counted(settings, kind, now, sessions(now) if kind == "gpu" else sessions(now, kind))
    left, total = q.left(kind)
    if left >= shortest(settings):
        return left
    when = f"; it resets {_when(q.resets_at)}" if q.resets_at else ""
    raise NoCapacityError(f"Kaggle's weekly {kind.upper()} quota: {left / 3600:.1f} of {total / 3600:.0f} h left "
                          f"(kaggle quota){when}")


def counted(settings: KaggleSettings, kind: str, now: float, sessions: list[tuple[float, float]]) -> float:
    """The fallback: the weekly hours less launch's own sessions of the last 7 days."""
    hours = settings.weekly_tpu_hours if kind == "tpu" else settings.weekly_gpu_hours
    if hours <= 0:
        return float("inf")
    quota = hours * 3600.0
    used = sum(end - start for start, end in sessions)
    left = quota - used
    if left >= shortest(settings):
        return left
    # Quota comes back as old sessions leave the 7-day window, oldest first.
    need, frees_at = shortest(settings) - left, now
    for start, end in sorted(sessions):
        frees_at = start + WEEK + min(need, end - start)
        need -= end - start
        if need <= 0:
            break
    var = "LAUNCH_KAGGLE_WEEKLY_TPU_HOURS" if kind == "tpu" else "LAUNCH_KAGGLE_WEEKLY_GPU_HOURS"
    raise NoCapacityError(f"Kaggle weekly {kind.upper()} quota: {used / 3600:.1f} of {quota / 3600:.0f} h used by "
                          f"launch's sessions in the last 7 days; enough frees up by {_when(frees_at)} ({var}; "
                          "Kaggle's quota view did not answer)")


def _when(t: float) -> str:
    return time.strftime("%a %H:%M UTC", time.gmtime(t))
