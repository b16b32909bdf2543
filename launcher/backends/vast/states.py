"""What the API's view of an instance means for our attempt.

``actual_status`` takes null, ``loading``, ``running``, ``stopped``, ``frozen``, ``exited``,
``rebooting``, ``unknown`` and ``offline``; ``intended_status`` is what the owner asked for. The
verdict, one of:

    STARTING   null, loading, rebooting, unknown, frozen, or running: nothing to act on
    OFFLINE    the host lost its link to Vast.ai; often brief, so not a loss by itself
    OUTBID     an interruptible instance stopped (by its host) while we still wanted it running
    STOPPED    stopped because someone asked for it, or an on-demand one stopped
    GONE       the API no longer knows it (destroyed outside launch)
    EXITED     the container exited: the run failed, the machine was not taken from us

A newly created instance may be unknown to the API for a short while: ``None`` within the
settle time of its creation is STARTING, not GONE (the caller says which with ``new``).
"""

from __future__ import annotations

from typing import Any

from launcher.backends.vast.ledger import OUTBID

STARTING, OFFLINE, STOPPED, GONE, EXITED = "starting", "offline", "stopped", "gone", "exited"
LOSSES = (OUTBID, STOPPED, GONE)  # the machine is no longer ours: a preemption


def verdict(inst: dict[str, Any] | None, bid: bool, *, new: bool = False) -> tuple[str, str]:
    """``(kind, reason)`` for the instance; ``bid``: we rented it interruptible."""
    if inst is None:
        return (STARTING, "not known to the API yet") if new else (GONE, "instance gone (destroyed outside launch)")
    actual = str(inst.get("actual_status") or "").lower()
    intended = str(inst.get("intended_status") or "").lower()
    msg = str(inst.get("status_msg") or "").strip()
    detail = f" ({msg[:120]})" if msg else ""
    if actual == "exited":
        return EXITED, f"container exited{detail}"
    if "outbid" in msg.lower():
        return OUTBID, OUTBID
    if actual == "stopped":
        if intended == "stopped" or not (bid or inst.get("is_bid")):
            return STOPPED, f"instance stopped{detail}"
        return OUTBID, OUTBID
    if actual == "offline":
        return OFFLINE, f"host offline{detail}"
    return STARTING, actual or "starting"
