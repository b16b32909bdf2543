"""Placement across providers: each ``any_of``/``ordered`` option on its own infra.

An option may name its own ``infra`` (``kaggle``, ``vast``, ``ssh/<pool>``, ``local`` or a
SkyPilot infra); one without takes the one infra the others name, else ``local``. ``--infra``/``LAUNCH_INFRA`` put every option on
the one infra they name (flag > environment > YAML, as everywhere). Each attempt runs on the
backend of its option. ``any_of`` is tried cheapest first by expected $/h (each backend's
``quote``: SkyPilot's catalog, Vast.ai's live offers, 0 for Kaggle within its quota, SSH pools and
this machine), options that cannot be had now last; ``ordered`` keeps the user's order. The order
is fixed when the job is submitted (``option_order`` in the job's options), so a restarted
supervisor keeps it. What moves a job to the next option: no capacity (``decide``'s failover: no
offer, a quota used up) and, here, ``outbids_before_failover`` outbids in a row on one option.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from launcher.backends.base import Backend, Quote
from launcher.errors import LaunchError
from launcher.recovery import Action, Event, History, Outcome

if TYPE_CHECKING:  # pydantic stays out of `launch status`, which imports this through launcher.jobs
    from launcher.task import Task

DEFAULT_OUTBIDS_BEFORE_FAILOVER = 2


def outbids_before_failover() -> int:
    """``LAUNCH_OUTBIDS_BEFORE_FAILOVER`` (default 2): outbids in a row on one option that move
    the job to the next option."""
    try:
        return max(1, int(os.environ.get("LAUNCH_OUTBIDS_BEFORE_FAILOVER", DEFAULT_OUTBIDS_BEFORE_FAILOVER)))
    except ValueError:
        return DEFAULT_OUTBIDS_BEFORE_FAILOVER


def default_infra(task: Task) -> str:
    """Where an option that names no infra runs: the one infra the other options name, else
    ``local`` (``resources.infra`` is already merged into every option)."""
    named = {o["infra"] for o in task.resources.options() if o.get("infra")}
    return named.pop() if len(named) == 1 else "local"


def option_infras(task: Task, default: str, forced: str | None = None) -> list[str]:
    """The infra of each option (in the YAML's order): ``forced`` for all, else its own, else
    ``default``."""
    return [forced or opt.get("infra") or default for opt in task.resources.options()]


@dataclass(frozen=True)
class OptionQuote:
    index: int  # in the YAML's order
    infra: str
    resources: dict[str, Any]
    quote: Quote

    def to_dict(self) -> dict[str, Any]:
        return {"option": self.index + 1, "infra": self.infra, "provider": provider(self.infra),
                "accelerators": self.resources.get("accelerators"), "spot": bool(self.resources.get("use_spot")),
                "price_per_hour": self.quote.price_per_hour, "usable": self.quote.usable, "why": self.quote.why}


def provider(infra: str) -> str:
    from launcher.backends import infra_kind

    return infra_kind(infra)


def quote_options(task: Task, infras: list[str],
                  backend_for: Callable[[str], Backend] | None = None) -> list[OptionQuote]:
    """Each option's quote from its backend; a backend that cannot be made (no SDK, no key)
    makes its options unusable, saying why."""
    from launcher.backends import get_backend

    backend_for = backend_for or get_backend
    made: dict[str, Backend | LaunchError] = {}
    out = []
    for i, (opt, infra) in enumerate(zip(task.resources.options(), infras)):
        if infra not in made:
            try:
                made[infra] = backend_for(infra)
            except LaunchError as e:
                made[infra] = e
        b = made[infra]
        if isinstance(b, LaunchError):
            q = Quote(None, False, str(b))
        else:
            try:
                q = b.quote({**opt, "infra": infra}, task.num_nodes)
            except LaunchError as e:
                q = Quote(None, False, str(e))
        out.append(OptionQuote(i, infra, opt, q))
    return out


def order(task: Task, quotes: list[OptionQuote]) -> list[int]:
    """Indices of the options in the order they are tried: ``any_of`` cheapest first (unknown
    prices after known ones, what cannot be had now last, ties in the YAML's order); otherwise
    the YAML's order."""
    if not task.resources.any_of:
        return [q.index for q in quotes]
    key = lambda q: (not q.quote.usable, math.inf if q.quote.price_per_hour is None else q.quote.price_per_hour,  # noqa: E731
                     q.index)
    return [q.index for q in sorted(quotes, key=key)]


def after_outbids(action: Action, event: Event, history: History, n_options: int,
                  limit: int | None = None) -> Action:
    """``decide``'s action, moved to the next option when ``event`` is the ``limit``-th outbid in
    a row on its option and there is another option to go to."""
    limit = outbids_before_failover() if limit is None else limit
    if not action.relaunch or n_options < 2 or not _outbid(event):
        return action
    streak = 1
    for e in reversed(history.events):
        if e.option != event.option or not _outbid(e):
            break
        streak += 1
    if streak < limit:
        return action
    nxt = (event.option + 1) % n_options
    return replace(action, option=nxt, reason=f"{action.reason}; {streak} outbids in a row on this "
                                               f"option: moving to the next")


def _outbid(e: Event) -> bool:
    return e.outcome is Outcome.PREEMPTED and e.reason.lower().startswith("outbid")
