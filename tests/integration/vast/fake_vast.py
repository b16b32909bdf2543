"""An HTTP fake of the Vast.ai REST API, for the real ``vastai`` SDK (pointed at it by ``VAST_URL``).

It speaks the endpoints the backend uses, with the SDK's payloads and the API's answers:

    POST   /api/v0/bundles/                 search offers (filters eq/neq/gt/gte/lt/lte/in/notin, order, limit)
    PUT    /api/v0/asks/{offer}/            create an instance (``price`` set: an interruptible bid)
    POST   /api/v0/instances/{id}/ssh/      attach an SSH public key
    GET    /api/v0/instances/{id}/          show one instance ({"instances": null} once destroyed)
    GET    /api/v1/instances/               list instances, 25 a page (``limit``, ``after_token``/``next_token``)
    DELETE /api/v0/instances/{id}/          destroy (404 when unknown)
    GET    /api/v0/ssh/, POST /api/v0/ssh/  the account's SSH keys (added to every new instance)

Each offer "rents" a machine: a test sshd host (``tests/integration/ssh/conftest.py``) whose address
becomes the instance's ``ssh_host``/``ssh_port``. An instance is ``loading`` for ``loading_s``
seconds, then ``running``. ``outbid(id)`` stops it the way Vast.ai does (``actual_status``
stopped while ``intended_status`` stays running) and kills its host: every process on it dies.
Destroying an instance kills its host too. A wrong bearer key gets 401; ``fail["create"] = 500``
makes a call fail. Every request is kept in ``requests`` (method, path, JSON body) for assertions.

Strict by default (``strict=False`` turns all of this off), as the service is:

- **Rate limits per IP and endpoint** (``RATE_LIMITS``, times ``pace_scale``): create one per 4.5 s,
  show one per 2 s, destroy one per 3 s, list one per 1 s, search 10 a minute. A call that comes
  sooner gets 429 *without* Retry-After (the SDK's own retries, 0.15 s then 0.225 s later, are
  refused too); only accepted calls count. Refused calls are in ``throttled``.
- **A create that commits and then fails**: ``commit_then_fail.append(504)`` makes the next create
  rent the offer and answer 504; the SDK re-sends the PUT, which then gets 400 (the offer is taken).
- **Right after create** (for ``new_lag_s``): the instance is not in the list yet, and show returns
  it with ``start_date``, ``actual_status``, ``cur_state``, ``ssh_host``, ``ssh_port`` and
  ``status_msg`` null (the SDK's own ``show_instance`` raises TypeError on that).
- **Late reports**: ``outbid`` kills the host at once but the API says so only ``report_lag_s`` later.
- **Keys**: attaching a key to an instance that is not running yet is refused (400).

Time is ``clock`` (``time.monotonic`` unless a test passes a ``FakeClock``, which only moves when
the code under test sleeps on it): no test waits in real time for the rate limits.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# call name -> (calls, per seconds), per client IP, as documented for the service
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "create": (1, 4.5), "show": (1, 2.0), "destroy": (1, 3.0), "list": (1, 1.0), "search": (10, 60.0),
}
PAGE = 25  # rows per page of the instance list
_NEW_NULLS = ("start_date", "actual_status", "cur_state", "ssh_host", "ssh_port", "status_msg")

_OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}
_NOT_FILTERS = {"order", "type", "limit", "allocated_storage", "disable_bundling"}


def _coerce(value: Any, like: Any) -> Any:
    """The SDK sends numbers as strings ("2"); compare them as the offer's type."""
    if isinstance(value, list):
        return [_coerce(v, like) for v in value]
    if isinstance(like, bool) or value is None:
        return value
    if isinstance(like, (int, float)) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def matches(offer: dict[str, Any], query: dict[str, Any]) -> bool:
    for field, conds in query.items():
        if field in _NOT_FILTERS or not isinstance(conds, dict):
            continue
        have = offer.get(field)
        for op, want in conds.items():
            if have is None or not _OPS[op](have, _coerce(want, have)):
                return False
    return True



class FakeClock:
    """Time that moves only when the code under test sleeps on it (``clock=fake_clock,
    sleep=fake_clock.sleep``); shared with the fake, rate limits and boots take no real time."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.slept = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, float(seconds))
            self.slept += max(0.0, float(seconds))


class FakeVast:
    def __init__(self, api_key: str, *, strict: bool = True, pace_scale: float = 1.0,
                 clock: Callable[[], float] | None = None):
        self.api_key = api_key
        self.clock = clock or time.monotonic
        self.offers: dict[int, dict[str, Any]] = {}
        self.hosts: dict[int, Any] = {}  # offer id -> the host it rents
        self.instances: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.loading_s = 0.3
        self.fail: dict[str, int] = {}  # call name (search, create, attach, show, list, destroy, keys) -> status
        # --- strictness (see the module docstring) ---
        self.rate_limits = {k: (n, w * pace_scale) for k, (n, w) in RATE_LIMITS.items()} if strict else {}
        self.new_lag_s = 2.0 * pace_scale if strict else 0.0
        self.report_lag_s = 10.0 * pace_scale if strict else 0.0
        self.attach_needs_running = strict
        self.commit_then_fail: list[int] = []  # statuses the next creates answer after renting
        self.throttled: list[str] = []  # call names answered 429
        self.account_keys: list[dict[str, Any]] = []
        self._calls: dict[tuple[str, str], deque] = defaultdict(deque)
        self.lock = threading.RLock()
        self._next_offer, self._next_instance, self._next_key = 500, 9000, 70
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do -------------------------------------------------------------------------
    def add_offer(self, host: Any, *, gpu_name: str = "RTX 4090", num_gpus: int = 1, dph_total: float = 0.40,
                  min_bid: float = 0.15, reliability: float = 0.99, disk_space: float = 200.0,
                  loading_s: float | None = None, inet_down: float = 800.0, **extra: Any) -> int:
        """An offer that rents ``host`` (anything with ``hostname`` and ``port``; ``kill()`` if any)."""
        with self.lock:
            self._next_offer += 1
            oid = self._next_offer
            self.offers[oid] = {"id": oid, "ask_contract_id": oid, "machine_id": oid * 10, "gpu_name": gpu_name,
                                "num_gpus": num_gpus, "dph_total": dph_total, "min_bid": min_bid,
                                "reliability": reliability, "reliability2": reliability, "disk_space": disk_space,
                                "gpu_ram": 24564, "cpu_cores_effective": 16.0, "cpu_ram": 64000,
                                "inet_down": inet_down, "inet_up": inet_down / 2,
                                "verified": True, "external": False, "rentable": True, "rented": False,
                                "geolocation": "Iceland, IS", "hosting_type": 0,
                                "loading_s": self.loading_s if loading_s is None else loading_s, **extra}
            self.hosts[oid] = host
            return oid

    def add_others(self, n: int, label: str = "someone else's") -> list[int]:
        """``n`` running instances of the account that are not ours (they fill the list's pages)."""
        with self.lock:
            ids = []
            for _ in range(n):
                self._next_instance += 1
                iid = self._next_instance
                self.instances[iid] = self._new_instance(iid, None, {"label": label}, None, visible=True)
                self.instances[iid].update(actual_status="running", ssh_host="10.9.9.9", ssh_port=22)
                ids.append(iid)
            return ids

    def outbid(self, iid: int, report_after: float | None = None) -> None:
        """Someone bid more: the machine's processes all die at once; the API reports the instance
        stopped (still wanted running) ``report_after`` (default ``report_lag_s``) seconds later."""
        self.report(iid, report_after, actual_status="stopped", cur_state="stopped", next_state="stopped")
        with self.lock:
            oid = self.instances[iid]["offer_id"]
        self._kill(oid)

    def report(self, iid: int, after: float | None = None, **fields: Any) -> None:
        """Change what the API says about the instance, ``after`` seconds from now."""
        lag = self.report_lag_s if after is None else after
        with self.lock:
            self.instances[iid].setdefault("pending", []).append((self.clock() + lag, fields))

    def creates(self) -> list[dict[str, Any]]:
        """The create payloads, in order, each with the offer id."""
        return [{**body, "offer_id": int(path.rstrip("/").rsplit("/", 1)[1])}
                for method, path, body in self.requests if method == "PUT" and "/asks/" in path]

    def calls(self, name: str) -> int:
        """How many requests of one kind (``call_name``) came, refused or not."""
        return sum(1 for m, p, _ in self.requests if self.call_name(m, p) == name)

    def live(self) -> list[int]:
        return [i for i, x in self.instances.items() if not x.get("destroyed")]

    def wait_instances(self, n: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.instances) >= n:
                return sorted(self.instances)
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {n} instance(s); have {sorted(self.instances)}")

    def _kill(self, oid: int | None) -> None:
        host = self.hosts.get(oid)
        if hasattr(host, "kill"):
            host.kill()

    # --- the API -------------------------------------------------------------------------------
    def _visible(self, inst: dict[str, Any]) -> bool:
        return self.clock() >= inst["visible_at"]

    def _row(self, inst: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        due = [p for p in inst.get("pending", []) if p[0] <= now]
        for p in due:
            inst["pending"].remove(p)
            inst.update(p[1])
        if inst["actual_status"] == "loading" and now >= inst["loading_until"]:
            inst.update(actual_status="running", cur_state="running")
        hidden = ("destroyed", "loading_until", "offer_id", "pending", "visible_at")
        row = {k: v for k, v in inst.items() if k not in hidden}
        if not self._visible(inst):
            row.update({k: None for k in _NEW_NULLS})
        return row

    def search(self, q: dict[str, Any]) -> dict[str, Any]:
        found = [dict(o) for o in self.offers.values() if matches(o, q)]
        for field, direction in reversed(q.get("order") or []):
            found.sort(key=lambda o: o.get(field) or 0, reverse=direction == "desc")
        for o in found:
            if q.get("type") != "bid":
                o.pop("min_bid", None)
        return {"offers": found[: int(q.get("limit") or 64)]}

    def _new_instance(self, iid: int, oid: int | None, body: dict[str, Any], host: Any,
                      visible: bool = False) -> dict[str, Any]:
        offer = self.offers.get(oid) or {"machine_id": 1, "gpu_name": "RTX 4090", "num_gpus": 1,
                                          "dph_total": 0.3, "loading_s": 0.0}
        bid = body.get("price")
        now = self.clock()
        return {
            "id": iid, "offer_id": oid, "machine_id": offer["machine_id"], "label": body.get("label"),
            "image_uuid": body.get("image"), "disk_space": body.get("disk"), "gpu_name": offer["gpu_name"],
            "num_gpus": offer["num_gpus"], "is_bid": bid is not None,
            "dph_total": float(bid) if bid is not None else offer["dph_total"],
            "actual_status": "loading", "cur_state": "running", "next_state": "running",
            "intended_status": "running", "status_msg": "", "start_date": time.time(), "extra_env": [],
            "ssh_host": getattr(host, "hostname", None), "ssh_port": getattr(host, "port", None),
            "public_ipaddr": getattr(host, "hostname", None), "loading_until": now + offer["loading_s"],
            "ssh_keys": [k["public_key"] for k in self.account_keys],
            "visible_at": now if visible else now + self.new_lag_s,
        }

    def create(self, oid: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        offer = self.offers.get(oid)
        if offer is None or not offer["rentable"]:
            return 400, {"success": False, "error": "no_such_ask", "msg": f"Instance type {oid} no longer available"}
        bid = body.get("price")
        if bid is not None and float(bid) < offer["min_bid"]:
            return 400, {"success": False, "error": "bid_too_low", "msg": "bid below the minimum"}
        self._next_instance += 1
        iid = self._next_instance
        offer.update(rentable=False, rented=True)
        self.instances[iid] = self._new_instance(iid, oid, body, self.hosts[oid])
        if self.commit_then_fail:  # it is rented all the same
            code = self.commit_then_fail.pop(0)
            return code, {"success": False, "error": "gateway", "msg": f"HTTP {code} from the gateway"}
        return 200, {"success": True, "new_contract": iid}

    def list_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """One page of the account's instances, by id, after ``after_token``."""
        limit = min(PAGE, int(json.loads((query.get("limit") or ["25"])[0])))
        after = int((query.get("after_token") or ["0"])[0] or 0)
        rows = [x for i, x in sorted(self.instances.items())
                if i > after and not x.get("destroyed") and self._visible(x)]
        page = rows[:limit]
        more = len(rows) > limit
        return {"instances": [self._row(x) for x in page], "total_instances": len(rows),
                "next_token": str(page[-1]["id"]) if more else None}

    def _throttled(self, ip: str, name: str) -> bool:
        """True (and not counted) when this call from ``ip`` comes sooner than its rate allows."""
        limit = self.rate_limits.get(name)
        if not limit:
            return False
        n, window = limit
        now = self.clock()
        seen = self._calls[(ip, name)]
        while seen and seen[0] <= now - window:
            seen.popleft()
        if len(seen) >= n:
            self.throttled.append(name)
            return True
        seen.append(now)
        return False

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null") if n else None
                url = urlsplit(self.path)
                with fake.lock:
                    fake.requests.append((method, url.path, body))
                    if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                        return self._send(401, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
                    if fake._throttled(self.client_address[0], fake.call_name(method, url.path)):
                        return self._send(429, {"success": False, "error": "too_many_requests",
                                                "msg": "API requests too frequent"})
                    code, doc = fake.route(method, url.path, parse_qs(url.query), body or {})
                self._send(code, doc)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PUT(self):
                self._serve("PUT")

            def do_DELETE(self):
                self._serve("DELETE")

        return Handler

    @staticmethod
    def call_name(method: str, path: str) -> str:
        if re.fullmatch(r"/api/v0/ssh/(\d+/)?", path):
            return "keys"
        if path.endswith("/ssh/"):
            return "attach"
        if "/asks/" in path:
            return "create"
        return {"POST": "search", "DELETE": "destroy"}.get(method) or \
            ("list" if path == "/api/v1/instances/" else "show")

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, Any]:
        failing = self.fail.get(self.call_name(method, path))
        if failing:
            return failing, {"success": False, "error": "injected", "msg": f"injected HTTP {failing}"}
        if method == "POST" and path == "/api/v0/bundles/":
            return 200, self.search(body)
        if method == "GET" and path == "/api/v1/instances/":
            return 200, self.list_page(query)
        if self.call_name(method, path) == "keys":
            return self.keys(method, body)
        m = re.fullmatch(r"/api/v0/(asks|instances)/(\d+)/(ssh/)?", path)
        if not m:
            return 404, {"success": False, "msg": f"no route {method} {path}"}
        kind, ident, ssh = m.group(1), int(m.group(2)), m.group(3)
        if kind == "asks" and method == "PUT":
            return self.create(ident, body)
        inst = self.instances.get(ident)
        if inst is None or (inst.get("destroyed") and method != "GET"):
            return 404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}
        if ssh and method == "POST":
            if self.attach_needs_running and self._row(inst)["actual_status"] != "running":
                return 400, {"success": False, "error": "instance_not_ready",
                             "msg": "instance is not running yet; try again"}
            inst["ssh_keys"].append(body.get("ssh_key"))
            return 200, {"success": True}
        if method == "GET":
            return 200, {"instances": None if inst.get("destroyed") else self._row(inst)}
        if method == "DELETE":
            inst["destroyed"] = time.time()
            threading.Thread(target=self._kill, args=(inst["offer_id"],), daemon=True).start()
            return 200, {"success": True}
        return 405, {"success": False, "msg": f"{method} not supported"}

    def keys(self, method: str, body: dict) -> tuple[int, Any]:
        """The account's SSH keys: listed, or one added (every new instance gets them all)."""
        if method == "GET":
            return 200, [dict(k) for k in self.account_keys]
        if method == "POST":
            self._next_key += 1
            key = {"id": self._next_key, "public_key": str(body.get("ssh_key") or "").strip(),
                   "created_at": time.time()}
            self.account_keys.append(key)
            return 200, {"success": True, "key": key}
        return 405, {"success": False, "msg": f"{method} not supported"}
