"""``--infra vast``: rent a Vast.ai instance per attempt, then run it through the SSH layer.

One attempt, as the supervisor drives it::

    provision        make our SSH public key an account key (Vast.ai adds those to every new
                     instance), search offers for the resources option (cheapest acceptable first,
                     fast download links only, not a machine that did not boot for this job),
                     write a ledger row with a unique label, create the instance (an
                     interruptible bid when ``use_spot``); the handle carries the instance id
    wait_reachable   poll the API until the instance runs and its SSH address is known (null
                     fields, or not known yet right after create, are "still starting"), attach
                     the key to it when the account key could not be set, then lease it through
                     the SSH layer (``launcher.backends.ssh``); a box not booted within
                     ``LAUNCH_VAST_BOOT_TIMEOUT`` is given up, the reason kept in the ledger
    bootstrap, sync_workdir, start_run, stream_logs, signal   the SSH layer's, unchanged
    poll             the SSH layer's answer, and the instance's state from the API (every
                     ``LAUNCH_VAST_API_POLL`` seconds, and whenever SSH says the run is gone), see
                     ``states.py``: stopped while we wanted it running is ``outbid`` for a bid;
                     ``exited`` is a failed run; ``offline`` is no loss while SSH answers. When SSH
                     loses the box first, the API is asked again for up to ``LAUNCH_VAST_SETTLE``
                     seconds, so that an outbid it reports late still counts as an outbid
    terminate        the SSH layer's clean-up, then destroy the instance; then sweep the ledger

Recovery, as events: ``instance 41 (bid $0.21/h) outbid -> attempt 2: instance 42 on the next
cheapest offer -> resumed at step 30``; after ``LAUNCH_VAST_MAX_OUTBIDS`` outbids of one job its
next attempts rent on-demand. The outbid count lives in the ledger (the state database), so a
restarted supervisor keeps it.

Nothing leaks: the ledger row of a create call is written before the call, with the label the
instance will carry. A create that fails without a clear refusal (5xx, timeout) may have rented all
the same: the label is looked up in the instance list (every page) for up to the settle time before
deciding. Every terminate (and every provision) destroys the open rows of the job and of any job
that is being cancelled or has ended, and any instance listed with such a job's label that no row
knows, so ``launch down`` at any moment, also mid-recovery, leaves no instance billing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from launcher import daemon, state as st
from launcher.backends.base import (Backend, BackendError, CredentialsError, HostLostError,
                                    NoCapacityError, ProvisionRequest, Quote, RunSpec, RunState,
                                    RunStatus, SyncStats)
from launcher.backends.ssh.backend import SSHBackend, gpus_per_node
from launcher.backends.ssh.pools import HostSpec
from launcher.backends.vast import offers as of
from launcher.backends.vast.client import OfferTaken, OutcomeUnknown, RateLimited, VastClient
from launcher.backends.vast.config import VastSettings
from launcher.backends.vast.ledger import Entry, Ledger
from launcher.backends.vast.states import EXITED, LOSSES, OFFLINE, verdict
from launcher.errors import StateError

log = logging.getLogger(__name__)
LABEL_PREFIX = "launch"
SSH_USER = "root"  # Vast.ai images log in as root
NOT_BOOTED = "not booted"


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


def label_owner(label: str | None) -> tuple[str, int] | None:
    """The job id and attempt in one of our labels (``launch:<job>:a<n>:<hex>``), else None."""
    parts = str(label or "").rsplit(":", 2)
    if len(parts) != 3 or not parts[0].startswith(LABEL_PREFIX + ":") or not parts[1][1:].isdigit():
        return None
    job = parts[0][len(LABEL_PREFIX) + 1:]
    return (job, int(parts[1][1:])) if job else None


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
        self.client = client or VastClient(self.settings, clock=clock, sleep=sleep)
        self.ledger = ledger or Ledger()
        self.clock, self.sleep = clock, sleep
        self.ssh = RentedSSH(clock=clock)
        self._api_checked: dict[int, float] = {}
        self._account_key = False  # our key is one of the account's (new instances get it)

    # --- provision -----------------------------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Rent the cheapest acceptable offer; NoCapacityError when none matches or none of the
        first ``offers_tried`` could be rented (each failed create is closed in the ledger, or
        left open for the sweeps when it may have rented all the same); CredentialsError when
        the API refuses the key."""
        self.sweep(req.job_id)
        if req.num_nodes > 1:
            raise NoCapacityError(f"Vast.ai rents single machines; num_nodes={req.num_nodes} needs "
                                  "--infra ssh/<pool> or a cloud")
        self._ensure_account_key()
        spot = self._spot(req)
        q = of.build_query(req.resources, self.settings, spot=spot)
        try:
            found = self.client.search(q.query, q.offer_type, q.order, q.disk_gb)
        except CredentialsError:
            raise
        except BackendError as e:
            raise NoCapacityError(str(e)) from None
        avoid = self.ledger.machines(req.job_id, NOT_BOOTED)
        ranked = of.rank(found, q, self.settings, avoid)
        if not ranked:
            skipped = f", {len(avoid)} machine(s) that did not boot left out" if avoid else ""
            raise NoCapacityError(f"Vast.ai: no {q.offer_type} offer matches `{q.query}`"
                                  f" ({len(found)} found, none acceptable{skipped})")
        notes: list[str] = []
        image = of.image_for(req.resources, self.settings)
        for price, offer in ranked[:self.settings.offers_tried]:
            handle = self._rent(req, offer, price, q, image, notes)
            if handle is not None:
                return handle
        raise NoCapacityError(f"Vast.ai: could not rent any of {min(len(ranked), self.settings.offers_tried)}"
                              f" offer(s): {'; '.join(notes)}")

    def quote(self, resources: dict[str, Any], num_nodes: int = 1) -> Quote:
        """The cheapest acceptable live offer's $/h (the bid we would place, for spot)."""
        if num_nodes > 1:
            return Quote(None, False, f"Vast.ai rents single machines; num_nodes={num_nodes}")
        q = of.build_query(resources, self.settings)
        try:
            ranked = of.rank(self.client.search(q.query, q.offer_type, q.order, q.disk_gb), q, self.settings)
        except BackendError as e:
            return Quote(None, False, f"Vast.ai offer search failed: {e}")
        if not ranked:
            return Quote(None, False, f"Vast.ai: no {q.offer_type} offer matches `{q.query}`")
        return Quote(round(ranked[0][0], 4), True, f"{len(ranked)} {q.offer_type} offer(s), cheapest first")

    def _ensure_account_key(self) -> None:
        """Our public key among the account's SSH keys, once per backend; when that fails the
        key is attached to each instance instead (``wait_reachable``)."""
        if self._account_key:
            return
        try:
            self.client.ensure_account_key(self.public_key)
            self._account_key = True
        except CredentialsError:
            raise
        except BackendError as e:
            log.warning("cannot add the SSH key to the Vast.ai account (%s): attaching it per instance", e)

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
        could not be rented."""
        label = f"{LABEL_PREFIX}:{req.job_id}:a{req.attempt}:{uuid.uuid4().hex[:8]}"
        bid = price if q.spot else None
        row = self.ledger.creating(req.job_id, req.attempt, label, of.offer_summary(offer), price, bid)
        daemon.kill_point("vast:before-create", req.job_id)
        try:
            iid = self.client.create(offer["id"], image=image, disk_gb=q.disk_gb, label=label, bid_price=bid)
            daemon.kill_point("vast:after-create", req.job_id)
        except (OfferTaken, RateLimited, CredentialsError) as e:  # a clear answer: nothing rented
            self.ledger.close(row, f"create refused: {e}", made=False)
            if not isinstance(e, OfferTaken):
                raise e if isinstance(e, CredentialsError) else NoCapacityError(str(e)) from None
            notes.append(f"offer {offer['id']}: {e}")
            return None
        except OutcomeUnknown as e:  # it may have rented all the same: look for our label
            iid = self._created_after_all(label)
            if iid is None:  # the row stays open: the sweeps keep looking for the label
                notes.append(f"offer {offer['id']}: {e}; no instance labelled {label} listed "
                             f"within {self.settings.settle:.0f} s")
                return None
            log.info("Vast.ai create on offer %s answered %s, but made instance %s", offer["id"], e, iid)
        self.ledger.created(row, iid)
        return {"backend": self.name, "job_id": req.job_id, "attempt": req.attempt, "ledger_row": row,
                "instance_id": iid, "label": label, "offer": of.offer_summary(offer), "bid": bid,
                "price_per_hour": price, "gpus_per_node": gpus_per_node(req.resources),
                "nodes": [], "host": f"vast-{iid}", "created_at": self.clock(),
                "key_attached": self._account_key}

    def _created_after_all(self, label: str) -> int | None:
        """The id of the instance labelled ``label``, looked for in the instance list over the
        settle time (a new instance is listed only after a while); None when not found."""
        deadline = self.clock() + self.settings.settle
        while True:
            try:
                found = self.client.find(label)
            except CredentialsError:
                raise
            except BackendError as e:
                log.debug("looking for %s: %s", label, e)
                found = []
            if found:
                return int(found[0]["id"])
            if self.clock() >= deadline:
                return None
            self.sleep(max(0.5, self.settings.settle / 10) * min(1.0, self.settings.api_pace))

    # --- reachability --------------------------------------------------------------------------
    def wait_reachable(self, handle: dict[str, Any], timeout: float) -> None:
        """Wait for the instance to run and answer over SSH, then lease it as the handle's node.
        HostLostError when it is lost, does not boot in time (the reason goes to the ledger:
        the next attempt rents another machine), or the job is being cancelled; BackendError
        when its container exits before the run started."""
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
                new = self.clock() - float(handle.get("created_at", float("-inf"))) < self.settings.settle
                kind, status = verdict(inst, handle.get("bid") is not None, new=new)
                if kind in LOSSES or kind == EXITED:
                    self.ledger.note(handle["ledger_row"], status)
                    cls = BackendError if kind == EXITED else HostLostError
                    raise cls(f"instance {iid} {status} before the run started")
                if inst and status == "running" and inst.get("ssh_host") and inst.get("ssh_port"):
                    why = self._connect(handle, inst)
                    if not why:
                        return
            if self.clock() >= deadline:
                reason = f"{NOT_BOOTED} in {limit:.0f} s (status {status}{'; ' + why if why else ''})"
                self.ledger.note(handle["ledger_row"], reason)
                raise HostLostError(f"instance {iid} {reason}")
            self.sleep(every)

    def _connect(self, handle: dict[str, Any], inst: dict[str, Any]) -> str:
        """Attach our key to the running instance when the account key could not do it, then
        lease it over SSH; '' when done, else why not yet."""
        iid = handle["instance_id"]
        if not handle.get("key_attached"):
            try:
                self.client.attach_key(iid, self.public_key)
            except CredentialsError:
                raise
            except BackendError as e:  # refused until the instance accepts it: try again
                return str(e)
            handle["key_attached"] = True
        host = HostSpec(f"vast-{iid}", str(inst["ssh_host"]), int(inst["ssh_port"]), SSH_USER,
                        self.settings.ssh_key)
        why = self.ssh.attach(handle, host)
        if not why:
            handle["host"] = f"vast-{iid} ({host.hostname}:{host.port})"
        return why

    def _show(self, iid: int) -> dict[str, Any] | None | bool:
        """The instance (None: not known to the API), or False when the API could not be asked."""
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
        """The SSH layer's status, overruled by the API (see ``states.py``): a lost machine is
        PREEMPTED with the API's reason (``outbid``, ``instance stopped``, ...), an exited
        container is FAILED. When SSH loses the machine while the API has nothing to say yet,
        the answer stays RUNNING for up to ``settle`` seconds, asking the API again each time.
        Never raises for a lost machine."""
        iid = handle.get("instance_id")
        if not iid or not handle.get("nodes"):
            return RunStatus(RunState.PREEMPTED, reason="no instance behind the attempt")
        status = self.ssh.poll(handle)
        if status.state in (RunState.SUCCEEDED, RunState.FAILED):
            return status
        lost = status.state is RunState.PREEMPTED
        due = self.clock() - self._api_checked.get(iid, float("-inf")) >= self.settings.api_poll
        if not lost and not due:
            return status
        self._api_checked[iid] = self.clock()
        inst = self._show(iid)
        kind, says = ("", "no answer from the API") if inst is False else verdict(inst, handle.get("bid") is not None)
        bid = f" (bid ${handle['bid']:.3f}/h)" if handle.get("bid") is not None else ""
        if kind in LOSSES or kind == EXITED:
            self.ledger.note(handle["ledger_row"], says)
            state = RunState.FAILED if kind == EXITED else RunState.PREEMPTED
            return RunStatus(state, status.exit_code, f"{says}: instance {iid}{bid}")
        if not lost:  # a brief offline, a reboot: SSH still answers, the run goes on
            handle.pop("lost_since", None)
            return status
        since = handle.setdefault("lost_since", self.clock())
        if self.clock() - since < self.settings.settle:
            return RunStatus(RunState.RUNNING, reason=f"{status.reason}; the API says {says}, asking again")
        handle.pop("lost_since", None)
        reason = f"{says}: {status.reason}" if kind == OFFLINE else f"{status.reason} (the API says {says})"
        self.ledger.note(handle["ledger_row"], reason)
        return RunStatus(RunState.PREEMPTED, status.exit_code, f"{reason}: instance {iid}{bid}")

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
        # A handle the supervisor wrote before provision returned carries only the run id.
        errors += self.sweep(handle.get("job_id") or handle.get("run_id"))
        if errors:
            raise BackendError("; ".join(errors))

    def sweep(self, job_id: str | None = None) -> list[str]:
        """Destroy what may bill for ``job_id`` and for every job that is being cancelled or has
        ended: their open ledger rows (a row without an instance id is matched by its label in
        the instance list), and any listed instance with such a job's label that the ledger does
        not know. Returns the errors (rows stay open for the next sweep).

        The caller holds ``job_id`` (its supervisor, or `launch down` without one), so a create
        row of that job with no instance id is no call in flight here but one whose process died
        during it: the sweep waits until its label is listed or ``create_settle`` seconds from
        the call have passed, so nothing it made is left, and the next create of the job never
        runs beside it."""
        errors: list[str] = []
        rows = [e for e in self.ledger.leaked() if e.job_id == job_id or job_stopping(e.job_id)]
        try:
            listed = self.client.find(LABEL_PREFIX + ":")
        except BackendError as err:
            listed = None
            errors.append(str(err))
        by_label = {str(r.get("label")): r for r in listed or []}
        known = {e.instance_id for e in self.ledger.entries() if e.instance_id is not None}
        for e in rows:
            iid = e.instance_id
            if iid is None:  # a create call with no known outcome: look for its label
                found = by_label.get(e.label)
                if found is not None:
                    iid = int(found["id"])
                    self.ledger.created(e.id, iid)
                elif listed is not None:
                    try:
                        iid = self._created_by(e, wait=e.job_id == job_id)
                    except BackendError as err:
                        errors.append(str(err))
                if iid is None:
                    continue
                known.add(iid)
            errors += self._destroy_row(e.id, iid, "swept")
        for r in listed or []:  # e.g. a create that failed and rented all the same
            owner, iid = label_owner(r.get("label")), int(r["id"])
            if owner is None or iid in known or (owner[0] != job_id and not job_stopping(owner[0], unknown=False)):
                continue
            row = self.ledger.creating(owner[0], owner[1], str(r["label"]), {}, 0.0, None)
            self.ledger.created(row, iid)
            self.ledger.note(row, "found by its label, unknown to the ledger")
            errors += self._destroy_row(row, iid, "swept")
        return errors

    def _created_by(self, e: Entry, wait: bool) -> int | None:
        """The instance of the open create row ``e`` once the API lists its label (recorded);
        None when it made none: the row is closed once ``create_settle`` seconds have passed
        since the call, and before that, unless ``wait``ing, it stays open (the call may still
        be in flight elsewhere)."""
        deadline = self.clock() + e.created + self.settings.create_settle - time.time()  # on our clock
        while True:
            if self.clock() >= deadline:
                self.ledger.close(e.id, "create made no instance", made=False)
                return None
            if not wait:
                return None
            self.sleep(min(1.0, max(0.0, deadline - self.clock())))
            found = self.client.find(e.label)
            if found:
                iid = int(found[0]["id"])
                self.ledger.created(e.id, iid)
                return iid

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
