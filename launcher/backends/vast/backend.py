"""``--infra vast``: rent a Vast.ai instance per attempt, then run it through the SSH layer.

One attempt, as the supervisor drives it::

    provision        search offers for the resources option (cheapest acceptable first), write a
                     ledger row, create the instance (an interruptible bid when ``use_spot``),
                     attach our SSH public key; the handle carries the instance id
    wait_reachable   poll the API until the instance runs and its SSH address is known, then
                     lease it through the SSH layer (``launcher.backends.ssh``)
    bootstrap, sync_workdir, start_run, stream_logs, signal   the SSH layer's, unchanged
    poll             the SSH layer's answer, and the instance's state from the API (every
                     ``LAUNCH_VAST_API_POLL`` seconds, and whenever SSH says the run is gone):
                     stopped while we wanted it running is ``outbid`` for a bid, else ``stopped``;
                     ``exited``, ``offline`` or unknown to the API is PREEMPTED too
    terminate        the SSH layer's clean-up, then destroy the instance; then sweep the ledger

Recovery, as events: ``instance 41 (bid $0.21/h) outbid -> attempt 2: instance 42 on the next
cheapest offer -> resumed at step 30``; after ``LAUNCH_VAST_MAX_OUTBIDS`` outbids of one job its
next attempts rent on-demand. The outbid count lives in the ledger (the state database), so a
restarted supervisor keeps it.

Nothing leaks: the ledger row of a create call is written before the call, and every terminate
(and every provision) destroys the open rows of the job, and of any job that is being cancelled or
has ended, so ``launch down`` at any moment, also mid-recovery, leaves no instance billing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from launcher import state as st
from launcher.backends.base import (Backend, BackendError, HostLostError, NoCapacityError,
                                    ProvisionRequest, RunSpec, RunState, RunStatus, SyncStats)
from launcher.backends.ssh.backend import SSHBackend, gpus_per_node
from launcher.backends.ssh.pools import HostSpec
from launcher.backends.vast import offers as of
from launcher.backends.vast.client import OfferTaken, OutcomeUnknown, VastClient
from launcher.backends.vast.config import VastSettings
from launcher.backends.vast.ledger import OUTBID, Ledger
from launcher.errors import StateError

LABEL_PREFIX = "launch"
SSH_USER = "root"  # Vast.ai images log in as root


class RentedSSH(SSHBackend):
    """The SSH layer for machines that the handle describes (a rented instance's address), not a
    pool file: ``SSHBackend`` finds a node's address in the node itself when its pool does not
    list it. A lost instance is destroyed with its disk: nothing of it is left to clean later."""

    keeps_leftovers = False

    def __init__(self, *, grace: float | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__("vast", hosts=[], grace=grace, clock=clock)

    def attach(self, handle: dict[str, Any], host: HostSpec) -> str:
        """Lease ``host`` for the handle's attempt and add it as the handle's node; '' when done,
        else why not (not answering yet)."""
        req = ProvisionRequest(handle["job_id"], handle["attempt"], "vast")
        notes: list[str] = []
        node = self._lease(host, req, notes)
        if node is None:
            return "; ".join(notes) or "not reachable"
        handle["nodes"] = [node]
        return ""


def instance_ended(inst: dict[str, Any] | None, bid: bool) -> str:
    """Why a rented instance no longer runs our attempt, from the API's view of it; '' while it
    runs or is still starting."""
    if inst is None:
        return "instance gone (destroyed outside launch)"
    actual = str(inst.get("actual_status") or "").lower()
    intended = str(inst.get("intended_status") or "").lower()
    current = str(inst.get("cur_state") or "").lower()
    msg = str(inst.get("status_msg") or "").strip()
    if "outbid" in msg.lower():
        return OUTBID
    if actual in ("stopped", "exited") or current == "stopped":
        if intended == "stopped" or not (bid or inst.get("is_bid")):
            return f"instance {actual or current}" + (f" ({msg[:120]})" if msg else "")
        return OUTBID
    if actual == "offline":
        return "host offline"
    return ""


def job_stopping(job_id: str, unknown: bool = True) -> bool:
    """True when the job is being cancelled or has ended: its instances must all go. A job the
    state does not know counts as ``unknown``."""
    try:
        job = st.State().job(job_id)
    except StateError:
        return unknown
    return job.terminal or job.state == st.CANCELLING


class VastBackend(Backend):
    name = "vast"

    def __init__(self, infra: str = "vast", *, settings: VastSettings | None = None,
                 client: VastClient | None = None, ledger: Ledger | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings or VastSettings.from_env()
        self.public_key = self.settings.public_key()  # fail at `launch up`, not mid-job
        self.client = client or VastClient(self.settings)
        self.ledger = ledger or Ledger()
        self.clock, self.sleep = clock, sleep
        self.ssh = RentedSSH(clock=clock)
        self._api_checked: dict[int, float] = {}

    # --- provision -----------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Rent the cheapest acceptable offer; NoCapacityError when none matches or none of the
        first ``offers_tried`` could be rented (each failed create is closed in the ledger)."""
        self.sweep(req.job_id)
        if req.num_nodes > 1:
            raise NoCapacityError(f"Vast.ai rents single machines; num_nodes={req.num_nodes} needs "
                                  "--infra ssh/<pool> or a cloud")
        spot = self._spot(req)
        q = of.build_query(req.resources, self.settings, spot=spot)
        try:
            found = self.client.search(q.query, q.offer_type, q.order, q.disk_gb)
        except BackendError as e:
            raise NoCapacityError(str(e)) from None
        ranked = of.rank(found, q, self.settings)
        if not ranked:
            raise NoCapacityError(f"Vast.ai: no {q.offer_type} offer matches `{q.query}`"
                                  f" ({len(found)} found, none acceptable)")
        notes = []
        image = of.image_for(req.resources, self.settings)
        for price, offer in ranked[:self.settings.offers_tried]:
            handle = self._rent(req, offer, price, q, image, notes)
            if handle is not None:
                return handle
        raise NoCapacityError(f"Vast.ai: could not rent any of {min(len(ranked), self.settings.offers_tried)}"
                              f" offer(s): {'; '.join(notes)}")

    def _spot(self, req: ProvisionRequest) -> bool:
        if not req.resources.get("use_spot"):
            return False
        outbids = self.ledger.outbids(req.job_id)
        if outbids < self.settings.max_outbids:
            return True
        _event(req.job_id, f"attempt {req.attempt}: {outbids} outbid(s) so far "
                           f"(LAUNCH_VAST_MAX_OUTBIDS={self.settings.max_outbids}): renting on-demand")
        return False

    def _rent(self, req: ProvisionRequest, offer: dict[str, Any], price: float, q: of.OfferQuery,
              image: str, notes: list[str]) -> dict[str, Any] | None:
        """Create one instance on ``offer``; its handle, or None (with a note) when the offer
        could not be rented. A created instance that cannot be set up is destroyed first."""
        label = f"{LABEL_PREFIX}:{req.job_id}:a{req.attempt}:{uuid.uuid4().hex[:8]}"
        bid = price if q.spot else None
        row = self.ledger.creating(req.job_id, req.attempt, label, of.offer_summary(offer), price, bid)
        try:
            iid = self.client.create(offer["id"], image=image, disk_gb=q.disk_gb, label=label, bid_price=bid)
        except OfferTaken as e:
            self.ledger.close(row, f"create refused: {e}", made=False)
            notes.append(f"offer {offer['id']}: {e}")
            return None
        except OutcomeUnknown as e:  # it may exist all the same: look for our label
            notes.append(f"offer {offer['id']}: {e}")
            try:
                found = self.client.find(label)
            except BackendError:  # cannot tell: the row stays open, later sweeps look again
                return None
            if not found:
                self.ledger.close(row, f"create failed: {e}", made=False)
                return None
            notes.pop()
            iid = int(found[0]["id"])
        self.ledger.created(row, iid)
        handle = {"backend": self.name, "job_id": req.job_id, "attempt": req.attempt, "ledger_row": row,
                  "instance_id": iid, "label": label, "offer": of.offer_summary(offer), "bid": bid,
                  "price_per_hour": price, "gpus_per_node": gpus_per_node(req.resources),
                  "nodes": [], "host": f"vast-{iid}"}
        try:
            self.client.attach_key(iid, self.public_key)
        except BackendError as e:
            failed = self._destroy_row(row, iid, f"set-up failed: {e}")
            gone = f"not destroyed yet ({failed[0]})" if failed else "destroyed"
            notes.append(f"offer {offer['id']}: instance {iid} {gone}: {e}")
            return None
        return handle

    # --- reachability --------------------------------------------------------------------------
    def wait_reachable(self, handle: dict[str, Any], timeout: float) -> None:
        """Wait for the instance to run and answer over SSH, then lease it as the handle's node.
        HostLostError when it ends, does not come up in time, or the job is being cancelled."""
        iid = handle["instance_id"]
        limit = min(timeout, self.settings.boot_timeout)
        deadline = self.clock() + limit
        every = max(0.2, min(5.0, self.settings.api_poll))
        why, status = "", "unknown"
        while True:
            if job_stopping(handle["job_id"], unknown=False):
                raise HostLostError(f"instance {iid}: the job is being cancelled")
            inst = self._show(iid)
            if inst is not False:
                ended = instance_ended(inst, handle.get("bid") is not None)
                if ended:
                    self.ledger.note(handle["ledger_row"], ended)
                    raise HostLostError(f"instance {iid} {ended} before the run started")
                status = str(inst.get("actual_status") or "starting")
                if status == "running" and inst.get("ssh_host") and inst.get("ssh_port"):
                    host = HostSpec(f"vast-{iid}", str(inst["ssh_host"]), int(inst["ssh_port"]), SSH_USER,
                                    self.settings.ssh_key)
                    why = self.ssh.attach(handle, host)
                    if not why:
                        handle["host"] = f"vast-{iid} ({host.hostname}:{host.port})"
                        return
            if self.clock() >= deadline:
                raise HostLostError(f"instance {iid} not reachable in {limit:.0f} s (status {status}"
                                    f"{'; ' + why if why else ''})")
            self.sleep(every)

    def _show(self, iid: int) -> dict[str, Any] | None | bool:
        """The instance (None: gone), or False when the API could not be asked."""
        try:
            return self.client.show(iid)
        except BackendError:
            return False

    # --- the SSH layer's part ------------------------------------------------------------------
    def bootstrap(self, handle: dict[str, Any]) -> None:
        self.ssh.bootstrap(handle)

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        return self.ssh.sync_workdir(handle, workdir)

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        self.ssh.start_run(handle, spec)

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        if not handle.get("nodes"):
            raise HostLostError("the attempt never reached its instance")
        return self.ssh.stream_logs(handle, follow)

    def signal(self, handle: dict[str, Any], kind: str) -> None:
        self.ssh.signal(handle, kind)

    # --- poll ----------------------------------------------------------------------------------
    def poll(self, handle: dict[str, Any]) -> RunStatus:
        """The SSH layer's status, overruled by the API when the instance is no longer running
        (reason ``outbid``, ``instance stopped``, ...). Never raises for a lost machine."""
        iid = handle.get("instance_id")
        if not iid or not handle.get("nodes"):
            return RunStatus(RunState.PREEMPTED, reason="no instance behind the attempt")
        status = self.ssh.poll(handle)
        if status.state in (RunState.SUCCEEDED, RunState.FAILED):
            return status
        due = self.clock() - self._api_checked.get(iid, float("-inf")) >= self.settings.api_poll
        if status.state is RunState.RUNNING and not due:
            return status
        self._api_checked[iid] = self.clock()
        inst = self._show(iid)
        ended = "" if inst is False else instance_ended(inst, handle.get("bid") is not None)
        if not ended:
            return status
        self.ledger.note(handle["ledger_row"], ended)
        bid = f" (bid ${handle['bid']:.3f}/h)" if handle.get("bid") is not None else ""
        return RunStatus(RunState.PREEMPTED, status.exit_code, f"{ended}: instance {iid}{bid}")

    # --- teardown ------------------------------------------------------------------------------
    def terminate(self, handle: dict[str, Any]) -> None:
        """Clean the attempt up over SSH, destroy its instance, then every open ledger row of the
        job and of jobs being cancelled or ended. An instance already gone counts as success;
        calling this twice is quiet."""
        errors = []
        row, iid = handle.get("ledger_row"), handle.get("instance_id")
        entry = self.ledger.entry(row) if row else None
        if entry is not None and entry.open:
            if handle.get("nodes"):
                try:
                    self.ssh.terminate(handle)
                except BackendError as e:  # the instance goes anyway: nothing can survive it
                    errors.append(f"clean-up over SSH: {e}")
            if iid:
                errors += self._destroy_row(row, iid, "terminated")
        errors += self.sweep(handle.get("job_id"))
        if errors:
            raise BackendError("; ".join(errors))

    def sweep(self, job_id: str | None = None) -> list[str]:
        """Destroy the open ledger rows of ``job_id`` and of every job that is being cancelled or
        has ended; returns the errors (the rows stay open for the next sweep)."""
        errors = []
        for e in self.ledger.leaked():
            if e.job_id != job_id and not job_stopping(e.job_id):
                continue
            iid = e.instance_id
            if iid is None:  # a create call with no known outcome: look for its label
                try:
                    found = self.client.find(e.label)
                except BackendError as err:
                    errors.append(str(err))
                    continue
                if not found:  # it made nothing (unless it is still in flight elsewhere)
                    if time.time() - e.created > 60:
                        self.ledger.close(e.id, "create made no instance", made=False)
                    continue
                iid = int(found[0]["id"])
                self.ledger.created(e.id, iid)
            errors += self._destroy_row(e.id, iid, "swept")
        return errors

    def _destroy_row(self, row: int, iid: int, reason: str) -> list[str]:
        try:
            self.client.destroy(iid)
        except BackendError as e:
            return [str(e)]
        self.ledger.close(row, reason)
        self._api_checked.pop(iid, None)
        return []

    def cost_per_hour(self, handle: dict[str, Any]) -> float:
        """The bid for an interruptible instance, the offer's $/h for an on-demand one."""
        return float(handle.get("price_per_hour") or 0.0)


def _event(job_id: str, message: str) -> None:
    """A line in the job's timeline (`launch status JOB`)."""
    try:
        state = st.State()
        state.event(state.job(job_id).id, "vast", message)
    except StateError:
        pass
