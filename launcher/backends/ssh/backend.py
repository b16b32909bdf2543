"""``--infra ssh/<pool>``: run attempts on the hosts of an SSH node pool.

Each host has a root folder, ``$LAUNCH_REMOTE_ROOT`` on the host or ``~/.launch-remote``::

    lease.json                     which job holds the host (the local half is in leases.py)
    code/                          the launcher and trainers packages, bootstrap.sh, constraints.txt
    venv/                          made by infra/bootstrap.sh; sees the image's PyTorch
    wheels/<set>/                  wheels sent from here to a host that reaches no package index
    bootstrap.sha256               the hash of the bootstrap that made venv/ (a match skips it)
    attempts/<job>/workdir/        the task's workdir, shared by the job's attempts on this host
    attempts/<job>/attempt-N/      spec.json, secrets.json (0600), agent.pid, run.log, exit_code

A lost host is noticed by the poll itself: every poll runs one short command over a persistent
connection whose socket has TCP keepalive and TCP_USER_TIMEOUT set; no answer for ``grace``
seconds (``LAUNCH_SSH_GRACE``, default 6) since the last one makes the attempt PREEMPTED ("host
lost"). A host that died or dropped off the network is so detected in well under 10 seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher import agent as agent_files
from launcher.backends.base import (Backend, BackendError, HostLostError, NoCapacityError,
                                    ProvisionRequest, RunSpec, RunState, RunStatus, SyncStats)
from launcher.backends.local.backend import status_from_exit_code
from launcher.backends.ssh import transfer, wheels
from launcher.backends.ssh.client import Remote, q
from launcher.backends.ssh.leases import Leases
from launcher.backends.ssh.pools import HostSpec, load_pool
from launcher.errors import InfraError
from launcher.state import launch_home

REPO = Path(__file__).resolve().parents[3]
BOOTSTRAP = ("infra/bootstrap.sh", "constraints.txt")
HOSTSIDE = Path(__file__).with_name("hostside.py")
DEFAULT_GRACE = 6.0
_ROOT_CMD = 'R="${LAUNCH_REMOTE_ROOT:-$HOME/.launch-remote}"; mkdir -p "$R" && cd "$R" && pwd -P'
_DETACH = "env -u SSH_CLIENT -u SSH2_CLIENT -u SSH_CONNECTION -u SSH_TTY setsid"
_PY = 'PY={root}/venv/bin/python; [ -x "$PY" ] || PY=$(command -v python3 || command -v python); '
# One poll of one node: the exit code if written, else whether the agent still runs.
_PROBE = ('cd {att} 2>/dev/null || {{ echo NODIR; exit 0; }}; '
          '[ -f exit_code ] && {{ echo "EXIT $(cat exit_code)"; exit 0; }}; '
          'pid=$(cat agent.pid 2>/dev/null || echo {pid}); '
          'grep -qs launcher.agent /proc/$pid/cmdline && ! grep -qs "^State:.*Z" /proc/$pid/status '
          '&& {{ echo ALIVE; cat store.json 2>/dev/null; exit 0; }}; '
          '[ -f exit_code ] && echo "EXIT $(cat exit_code)" || echo GONE')


def owner_id() -> str:
    """Who holds a lease: this machine and this state folder."""
    return f"{socket.gethostname()}:{launch_home().resolve()}"


def bootstrap_digest() -> str:
    h = hashlib.sha256()
    for rel in BOOTSTRAP:
        h.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
    return h.hexdigest()


def gpus_per_node(resources: dict[str, Any]) -> int:
    """``"A100:8" -> 8``, ``{"A100": 2} -> 2``, ``"V100" -> 1``, none -> 0; of a list of
    alternatives, the first."""
    acc = resources.get("accelerators")
    if isinstance(acc, list):
        acc = acc[0] if acc else None
    if isinstance(acc, dict):
        acc = next(iter(acc.items()), None)
        return int(float(acc[1])) if acc else 0
    if isinstance(acc, str) and acc:
        return int(float(acc.split(":", 1)[1])) if ":" in acc else 1
    return 0


class SSHBackend(Backend):
    name = "ssh"

    keeps_leftovers = True  # hosts outlive our attempts: a lost one is cleaned when it is back

    def __init__(self, infra: str, *, hosts: list[HostSpec] | None = None, grace: float | None = None,
                 leases: Leases | None = None, probe_timeout: float = 3.0, connect_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        """``infra`` is ``ssh/<pool>``, read from the pool file; with ``hosts`` given, any name
        (e.g. ``vast``) and those hosts (none: nodes carry their own address in the handle)."""
        kind, _, pool = infra.partition("/")
        if hosts is None and (kind != "ssh" or not pool):
            raise InfraError(f"infra {infra!r}: expected ssh/<pool>, e.g. --infra ssh/lab")
        self.pool = pool or kind
        self.hosts = load_pool(pool) if hosts is None else list(hosts)
        self.grace = float(grace or os.environ.get("LAUNCH_SSH_GRACE") or DEFAULT_GRACE)
        self.probe_timeout = probe_timeout
        self.connect_timeout = connect_timeout
        self.leases = leases or Leases()
        self.clock = clock
        self._remotes: dict[str, Remote] = {}
        self._last_ok: dict[str, float] = {}
        self._lost: set[str] = set()

    # --- connections ---------------------------------------------------------------------------
    def _spec(self, node: dict[str, Any]) -> HostSpec:
        for h in self.hosts:
            if h.key == node["key"]:
                return h
        return HostSpec(node["name"], node["hostname"], int(node["port"]), node["user"], node["identity_file"])

    def _remote(self, node_or_host: dict[str, Any] | HostSpec) -> Remote:
        host = node_or_host if isinstance(node_or_host, HostSpec) else self._spec(node_or_host)
        if host.key not in self._remotes:
            self._remotes[host.key] = Remote(host, connect_timeout=self.connect_timeout)
        return self._remotes[host.key]

    def _drop(self, key: str) -> None:
        r = self._remotes.pop(key, None)
        if r is not None:
            r.close()

    def _hostside(self, remote: Remote, root: str, request: dict[str, Any], timeout: float = 30) -> dict:
        cmd = _PY.format(root=q(root)) + '"$PY" -c ' + q(HOSTSIDE.read_text())
        out = remote.run(cmd, stdin=json.dumps(request).encode(), timeout=timeout).stdout
        return json.loads(out.strip().splitlines()[-1])

    # --- provision: lease free hosts -----------------------------------------------------------
    def provision(self, req: ProvisionRequest) -> dict[str, Any]:
        """Lease ``num_nodes`` free hosts of the pool, in pool order. NoCapacityError (after
        releasing any partial lease) when too few are free and reachable."""
        self.sweep_leftovers()
        handle = {"backend": self.name, "pool": self.pool, "job_id": req.job_id, "attempt": req.attempt,
                  "gpus_per_node": gpus_per_node(req.resources), "nodes": []}
        notes = []
        for host in self.hosts:
            if len(handle["nodes"]) == req.num_nodes:
                break
            node = self._lease(host, req, notes)
            if node is not None:
                handle["nodes"].append(node)
        handle["host"] = ",".join(n["name"] for n in handle["nodes"])
        if len(handle["nodes"]) < req.num_nodes:
            self.terminate(handle)
            raise NoCapacityError(f"ssh/{self.pool}: {len(handle['nodes'])} of {req.num_nodes} host(s) "
                                  f"could be leased ({'; '.join(notes)})")
        return handle

    def set_aside(self, handle: dict[str, Any], reason: str) -> None:
        """Keep the attempt's hosts out of every pool's leases for ``LAUNCH_SSH_SET_ASIDE`` s (3600)."""
        until = time.time() + float(os.environ.get("LAUNCH_SSH_SET_ASIDE", 3600))  # wall time: shared
        for node in handle.get("nodes") or []:
            self.leases.set_aside(node["key"], until, reason)

    def _lease(self, host: HostSpec, req: ProvisionRequest, notes: list[str]) -> dict[str, Any] | None:
        aside = self.leases.aside(host.key, time.time())
        if aside is not None:
            notes.append(f"{host.name} set aside for {aside[0] - time.time():.0f} s more ({aside[1]})")
            return None
        if not self.leases.acquire(host.key, req.job_id, req.attempt):
            holder = self.leases.holder(host.key)
            notes.append(f"{host.name} busy with job {holder.job_id if holder else '?'}")
            return None
        try:
            remote = self._remote(host).open()
            root = remote.run(_ROOT_CMD, timeout=self.connect_timeout).stdout.strip()
            att = f"{root}/attempts/{req.job_id}/attempt-{req.attempt}"
            doc = {"owner": owner_id(), "job_id": req.job_id, "attempt": req.attempt, "since": time.time(),
                   "attempt_dir": att}
            why = self._take_remote_lease(remote, root, doc)
        except BackendError as e:  # unreachable, refused, or a failing command
            self._drop(host.key)
            why = f"unreachable ({e})"
        if why:
            self.leases.release(host.key, req.job_id, req.attempt)
            notes.append(f"{host.name} {why}")
            return None
        return {**host.public(), "key": host.key, "root": root, "attempt_dir": att}

    def _take_remote_lease(self, remote: Remote, root: str, doc: dict[str, Any]) -> str:
        """'' when the host's lease file is now ours, else why not. A lease left by one of our own
        earlier attempts (we hold the host locally, so it is stale) is taken over after killing
        whatever that attempt left running."""
        path = f"{root}/lease.json"
        got = self._hostside(remote, root, {"action": "take_lease", "path": path, "doc": doc})
        if got["taken"]:
            return ""
        cur = got["current"] or {}
        if cur and cur.get("owner") != doc["owner"]:
            return f"leased by {cur.get('owner')} (job {cur.get('job_id')}); remove {path} to free it"
        if cur.get("attempt_dir"):  # its processes and its secrets.json go
            self._hostside(remote, root, {"action": "cleanup", "dir": cur["attempt_dir"]})
            self.leases.drop_leftover(remote.host.key, cur["attempt_dir"])
        self._hostside(remote, root, {"action": "take_lease", "path": path, "doc": doc, "force": True})
        return ""

    def wait_reachable(self, handle: dict[str, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in handle["nodes"]:
            while True:
                try:
                    self._remote(node).open()
                    break
                except HostLostError as e:
                    if time.monotonic() > deadline:
                        raise HostLostError(f"{node['name']} not reachable in {timeout:.0f} s: {e}") from None
                    time.sleep(1.0)

    # --- bootstrap and sync --------------------------------------------------------------------
    def bootstrap(self, handle: dict[str, Any]) -> None:
        """Sync the launcher's code to every host, then run infra/bootstrap.sh unless the host's
        recorded hash says this very script already made its venv. A host that lacks packages
        and reaches no package index gets them as wheels from this machine (see ``wheels``);
        ``node["wheels"]`` then names the packages. Safe to call twice."""
        missing = [rel for rel in BOOTSTRAP if not (REPO / rel).is_file()]
        if missing:
            raise BackendError(f"cannot bootstrap: {', '.join(str(REPO / m) for m in missing)} not found"
                               " (install launch from a source checkout)")
        digest = bootstrap_digest()
        files = transfer.code_files(REPO) + [(rel, REPO / rel) for rel in BOOTSTRAP]
        for node in handle["nodes"]:
            remote, root = self._remote(node), node["root"]
            transfer.sync_files(remote, files, f"{root}/code")
            marker = remote.run(f"cd {q(root)} && [ -x venv/bin/python ] && cat bootstrap.sha256 || true",
                                timeout=30).stdout.strip()
            if marker == digest:
                node["bootstrap"] = "skipped"
                continue
            self._run_bootstrap(remote, root, node)
            remote.put_bytes(f"{root}/bootstrap.sha256", digest.encode())
            node["bootstrap"] = "ran"

    def _run_bootstrap(self, remote: Remote, root: str, node: dict[str, Any]) -> None:
        """Probe the host (which is all it takes when it lacks nothing); install what it lacks
        from its index, or from wheels sent from here."""
        script = f"bash {q(root)}/code/infra/bootstrap.sh {q(root)}"
        probe = wheels.parse_probe(remote.run(f"{script} --probe", timeout=300).stdout)
        if probe.get("ready"):
            return
        if not wheels.needs_wheels(probe):
            remote.run(script, timeout=3600)
            return
        folder = wheels.wheel_cache(probe, REPO / "constraints.txt", host=node["name"])
        dest = f"{root}/wheels/{folder.name}"
        transfer.sync_files(remote, wheels.wheel_files(folder), dest)
        remote.run(f"{script} --wheels {q(dest)}", timeout=3600)
        node["wheels"] = sorted(probe["missing"])

    def sync_workdir(self, handle: dict[str, Any], workdir: str | None) -> SyncStats:
        """Send the workdir to ``attempts/<job>/workdir`` on every host; a relaunch on the same
        host sends only what changed."""
        total = SyncStats()
        if not workdir:
            return total
        for node in handle["nodes"]:
            dest = f"{node['root']}/attempts/{handle['job_id']}/workdir"
            stats = transfer.sync_dir(self._remote(node), workdir, dest)
            node["workdir"] = dest
            total.files_sent += stats.files_sent
            total.bytes_sent += stats.bytes_sent
            total.files_skipped += stats.files_skipped
        return total

    # --- run -----------------------------------------------------------------------------------
    def node_envs(self, handle: dict[str, Any], rank: int) -> dict[str, str]:
        """SkyPilot's multi-node variables, the same on every backend."""
        return {"SKYPILOT_NODE_RANK": str(rank),
                "SKYPILOT_NODE_IPS": "\n".join(n["hostname"] for n in handle["nodes"]),
                "SKYPILOT_NUM_NODES": str(len(handle["nodes"])),
                "SKYPILOT_NUM_GPUS_PER_NODE": str(handle.get("gpus_per_node", 0))}

    def start_run(self, handle: dict[str, Any], spec: RunSpec) -> None:
        """Write spec.json and the 0600 secrets.json on every host, then start the agent under
        ``setsid`` (it outlives our connection) and record its pid. Secrets never appear on a
        command line."""
        for rank, node in reversed(list(enumerate(handle["nodes"]))):  # workers first, head last
            remote, att = self._remote(node), node["attempt_dir"]
            public = {**spec.public_dict(), "workdir": node.get("workdir") or spec.workdir,
                      "envs": {**spec.envs, **self.node_envs(handle, rank)}}
            remote.run(f"mkdir -p {q(att)}/checkpoints", timeout=30)
            remote.put_bytes(f"{att}/spec.json", json.dumps(public, indent=1).encode())
            if spec.secrets:
                remote.put_bytes(f"{att}/secrets.json", json.dumps(spec.secrets).encode(), mode=0o600)
            py = f"{q(node['root'])}/venv/bin/python"
            # Without the SSH_* variables the run's bash does not read ~/.bashrc (bash does when
            # "run by sshd"), which could put another Python first on PATH.
            out = remote.run(f"cd {q(att)} || exit 1; {_DETACH} {py} -m launcher.agent {q(att)}/spec.json"
                             " >> agent.out 2>&1 < /dev/null & echo $!", timeout=30).stdout
            node["agent_pid"] = int(out.split()[-1])
        # Every host just answered: the grace starts now, not at the last poll of an earlier
        # attempt on the same host (which would make a relaunch there look lost at once).
        for node in handle["nodes"]:
            self._last_ok[node["key"]] = self.clock()
            self._lost.discard(node["key"])
        handle["workdir"] = handle["nodes"][0].get("workdir")

    def poll(self, handle: dict[str, Any]) -> RunStatus:
        """The head's state; PREEMPTED when any host has not answered for ``grace`` seconds or
        its agent vanished. Each call takes at most about ``probe_timeout`` seconds."""
        nodes = handle.get("nodes") or []
        if not nodes:
            return RunStatus(RunState.PREEMPTED, reason="no host leased")
        statuses = [self._probe(n) for n in nodes]
        for s in statuses[1:]:
            if s.state is RunState.PREEMPTED and s.exit_code is None:
                return s
        return statuses[0]

    def _probe(self, node: dict[str, Any]) -> RunStatus:
        key, name = node["key"], node["name"]
        now = self.clock()
        last = self._last_ok.setdefault(key, now)
        budget = max(0.5, min(self.probe_timeout, last + self.grace - now))
        try:
            remote = self._remote(node).open(timeout=budget)
            text = remote.run(_PROBE.format(att=q(node["attempt_dir"]), pid=int(node.get("agent_pid") or 0)),
                              timeout=budget).stdout
            out = text.split()
        except BackendError as e:  # unreachable, timed out, refused: no answer either way
            self._drop(key)
            silent = self.clock() - last
            if silent >= self.grace:
                self._lost.add(key)
                return RunStatus(RunState.PREEMPTED, reason=f"host lost: {name} unreachable for {silent:.1f} s ({e})")
            return RunStatus(RunState.RUNNING, reason=f"{name}: no answer for {silent:.1f} s")
        self._last_ok[key] = self.clock()
        self._lost.discard(key)
        if out[:1] == ["EXIT"] and len(out) > 1:
            return status_from_exit_code(int(out[1]))
        if out[:1] == ["ALIVE"]:
            return RunStatus(RunState.RUNNING, store=agent_files.store_note(text.split("ALIVE", 1)[1]))
        where = "its attempt folder is gone" if out[:1] == ["NODIR"] else "the agent vanished without an exit code"
        return RunStatus(RunState.PREEMPTED, reason=f"machine lost: on {name}, {where}")

    def stream_logs(self, handle: dict[str, Any], follow: bool = False) -> Iterator[str]:
        """The head's run.log; with ``follow`` a ``tail -F`` that ends with the agent. Raises
        HostLostError when the host is gone."""
        if not handle.get("nodes"):
            raise HostLostError("the attempt never got a host")
        node = handle["nodes"][0]
        att, pid = q(node["attempt_dir"]), int(node.get("agent_pid") or 0)
        if follow:
            cmd = (f"cd {att} || exit 0; [ -f exit_code ] && exec cat run.log; "
                   f"exec tail -s 0.5 -n +1 -F --pid=$(cat agent.pid 2>/dev/null || echo {pid}) run.log 2>/dev/null")
        else:
            cmd = f"cat {att}/run.log 2>/dev/null || true"
        yield from self._remote(node).stream(cmd)

    def signal(self, handle: dict[str, Any], kind: str) -> None:
        """``term``: SIGTERM to every agent (the preemption notice). ``kill``: SIGKILL to every
        process of the attempt, as if the machines vanished."""
        if kind not in ("term", "kill"):
            raise ValueError(f"unknown fire drill {kind!r}")
        for node in handle["nodes"]:
            remote = self._remote(node)
            try:
                if kind == "term":
                    att = q(node["attempt_dir"])
                    remote.run(f"pid=$(cat {att}/agent.pid 2>/dev/null) && grep -qs launcher.agent "
                               "/proc/$pid/cmdline && kill -TERM $pid || true", timeout=30)
                else:
                    self._hostside(remote, node["root"], {"action": "kill", "dir": node["attempt_dir"]})
            except HostLostError:
                pass  # already gone: the next poll says so

    # --- teardown ------------------------------------------------------------------------------
    def terminate(self, handle: dict[str, Any]) -> None:
        """Kill every process of the attempt, remove its secrets.json and release the hosts, on
        the host and here. A host that is gone counts as success: its attempt folder is recorded
        and cleared once it answers again (``sweep_leftovers``); calling this twice is quiet."""
        errors = []
        for node in handle.get("nodes") or []:
            key = node["key"]
            try:
                if key in self._lost:
                    raise HostLostError(f"{node['name']} was lost")
                self._cleanup(handle, node)
            except HostLostError:
                if self.keeps_leftovers:
                    self.leases.add_leftover(node, handle["job_id"], handle["attempt"])
            except BackendError as e:  # the other hosts are still cleaned up and released
                errors.append(str(e))
            finally:
                self.leases.release(key, handle["job_id"], handle["attempt"])
                self._drop(key)
        if errors:
            raise BackendError("; ".join(errors))

    def sweep_leftovers(self) -> list[str]:
        """Clean what lost hosts kept of their attempts (processes, ``secrets.json``, our lease on
        the host) on every such host that answers now; the others stay recorded for the next
        sweep. Returns the attempt folders cleaned."""
        cleaned = []
        for node, job_id, attempt in self.leases.leftovers():
            try:
                self._cleanup({"job_id": job_id, "attempt": attempt}, node)
            except BackendError:  # still away (or a process survived): try again next time
                self._drop(node["key"])
                continue
            self.leases.drop_leftover(node["key"], node["attempt_dir"])
            cleaned.append(f"{node['name']}:{node['attempt_dir']}")
        return cleaned

    def _cleanup(self, handle: dict[str, Any], node: dict[str, Any]) -> None:
        lease = {"path": f"{node['root']}/lease.json", "job_id": handle["job_id"],
                 "attempt": handle["attempt"], "owner": owner_id()}
        out = self._hostside(self._remote(node), node["root"],
                             {"action": "cleanup", "dir": node["attempt_dir"], "lease": lease})
        if out.get("left"):
            raise BackendError(f"{node['name']}: processes {out['left']} of the attempt survived SIGKILL")
