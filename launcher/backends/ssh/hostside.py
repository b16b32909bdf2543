"""Runs on the SSH host, not here: small housekeeping that must see the host's ``/proc``.

The backend sends this file's text as ``python -c`` (standard library only, any Python 3) with a
JSON request on stdin, and reads one JSON answer from stdout. Paths travel on stdin, never on the
command line, so the scan for an attempt's processes does not find itself. Every action is safe to
run twice.

Actions:
- ``take_lease {path, doc, force}``: create the lease file exclusively (or overwrite it with
  ``force``); answers ``{taken, current}`` where ``current`` is the lease found there.
- ``release_lease {path, job_id, attempt, owner}``: remove the lease file if that lease is it.
- ``kill {dir}``: SIGKILL every process whose command line or environment mentions the attempt
  folder (the agent, the run, anything they started), until none is left.
- ``cleanup {dir, lease}``: ``kill``, remove ``secrets.json``, then ``release_lease``.
"""

import json
import os
import signal
import sys
import time


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def attempt_pids(folder):
    """Pids of live processes started for ``folder`` (found in their cmdline or environ)."""
    needle = (folder.rstrip("/") + "/").encode()
    me = os.getpid()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        if needle in _read(f"/proc/{p}/cmdline") or needle in _read(f"/proc/{p}/environ"):
            found.append(int(p))
    return found


def kill(req):
    killed = 0
    for _ in range(50):
        pids = attempt_pids(req["dir"])
        if not pids:
            return {"killed": killed, "left": []}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.1)
    return {"killed": killed, "left": attempt_pids(req["dir"])}


def _load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: the caller treats it as stale


def take_lease(req):
    path, doc = req["path"], req["doc"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if req.get("force") else os.O_EXCL)
    try:
        fd = os.open(path + (".tmp" if req.get("force") else ""), flags, 0o644)
    except FileExistsError:
        return {"taken": False, "current": _load(path)}
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    if req.get("force"):
        os.replace(path + ".tmp", path)
    return {"taken": True, "current": doc}


def release_lease(req):
    cur = _load(req["path"])
    mine = cur is not None and all(cur.get(k) == req[k] for k in ("job_id", "attempt", "owner"))
    if mine:
        try:
            os.unlink(req["path"])
        except FileNotFoundError:
            pass
    return {"released": mine}


def cleanup(req):
    out = kill(req)
    try:
        os.unlink(os.path.join(req["dir"], "secrets.json"))
    except FileNotFoundError:
        pass
    if req.get("lease"):
        out.update(release_lease(req["lease"]))
    return out


ACTIONS = {"take_lease": take_lease, "release_lease": release_lease, "kill": kill, "cleanup": cleanup}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    print(json.dumps(ACTIONS[request.pop("action")](request)))
