"""An HTTP fake of the Vast.ai REST API, for the real ``vastai`` SDK (pointed at it by ``VAST_URL``).

It speaks the endpoints the backend uses, with the SDK's payloads and the API's answers:

    POST   /api/v0/bundles/                 search offers (filters eq/neq/gt/gte/lt/lte/in/notin, order, limit)
    PUT    /api/v0/asks/{offer}/            create an instance (``price`` set: an interruptible bid)
    POST   /api/v0/instances/{id}/ssh/      attach an SSH public key
    GET    /api/v0/instances/{id}/          show one instance ({"instances": null} once destroyed)
    GET    /api/v1/instances/               list instances (one page)
    DELETE /api/v0/instances/{id}/          destroy (404 when unknown)

Each offer "rents" a machine: a test sshd host (``tests/integration/ssh/conftest.py``) whose address
becomes the instance's ``ssh_host``/``ssh_port``. An instance is ``loading`` for ``loading_s``
seconds, then ``running``. ``outbid(id)`` stops it the way Vast.ai does (``actual_status``
stopped while ``intended_status`` stays running) and kills its host: every process on it dies.
Destroying an instance kills its host too. A wrong bearer key gets 401; ``fail["create"] = 500``
makes a call fail. Every request is kept in
``requests`` (method, path, JSON body) for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


class FakeVast:
    def __init__(self, api_key: str):
        self.api_key = api_key
        self.offers: dict[int, dict[str, Any]] = {}
        self.hosts: dict[int, Any] = {}  # offer id -> the host it rents
        self.instances: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.loading_s = 0.3
        self.fail: dict[str, int] = {}  # call name (search, create, attach, show, list, destroy) -> status
        self.lock = threading.RLock()
        self._next_offer, self._next_instance = 500, 9000
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do -------------------------------------------------------------------------
    def add_offer(self, host: Any, *, gpu_name: str = "RTX 4090", num_gpus: int = 1, dph_total: float = 0.40,
                  min_bid: float = 0.15, reliability: float = 0.99, disk_space: float = 200.0,
                  loading_s: float | None = None, **extra: Any) -> int:
        """An offer that rents ``host`` (anything with ``hostname`` and ``port``; ``kill()`` if any)."""
        with self.lock:
            self._next_offer += 1
            oid = self._next_offer
            self.offers[oid] = {"id": oid, "ask_contract_id": oid, "machine_id": oid * 10, "gpu_name": gpu_name,
                                "num_gpus": num_gpus, "dph_total": dph_total, "min_bid": min_bid,
                                "reliability": reliability, "reliability2": reliability, "disk_space": disk_space,
                                "gpu_ram": 24564, "cpu_cores_effective": 16.0, "cpu_ram": 64000,
                                "verified": True, "external": False, "rentable": True, "rented": False,
                                "geolocation": "Iceland, IS", "hosting_type": 0,
                                "loading_s": self.loading_s if loading_s is None else loading_s, **extra}
            self.hosts[oid] = host
            return oid

    def outbid(self, iid: int) -> None:
        """Someone bid more: the instance stops (still wanted running) and its machine's
        processes all die."""
        with self.lock:
            inst = self.instances[iid]
            inst.update(actual_status="stopped", cur_state="stopped", next_state="stopped")
        self._kill(inst["offer_id"])

    def creates(self) -> list[dict[str, Any]]:
        """The create payloads, in order, each with the offer id."""
        return [{**body, "offer_id": int(path.rstrip("/").rsplit("/", 1)[1])}
                for method, path, body in self.requests if method == "PUT" and "/asks/" in path]

    def live(self) -> list[int]:
        return [i for i, x in self.instances.items() if not x.get("destroyed")]

    def wait_instances(self, n: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.instances) >= n:
                return sorted(self.instances)
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {n} instance(s); have {sorted(self.instances)}")

    def _kill(self, oid: int) -> None:
        host = self.hosts.get(oid)
        if hasattr(host, "kill"):
            host.kill()

    # --- the API -------------------------------------------------------------------------------
    def _row(self, inst: dict[str, Any]) -> dict[str, Any]:
        row = {k: v for k, v in inst.items() if k not in ("destroyed", "loading_until", "offer_id")}
        if inst["actual_status"] == "loading" and time.time() >= inst["loading_until"]:
            inst.update(actual_status="running", cur_state="running")
            row.update(actual_status="running", cur_state="running")
        return row

    def search(self, q: dict[str, Any]) -> dict[str, Any]:
        found = [dict(o) for o in self.offers.values() if matches(o, q)]
        for field, direction in reversed(q.get("order") or []):
            found.sort(key=lambda o: o.get(field) or 0, reverse=direction == "desc")
        for o in found:
            if q.get("type") != "bid":
                o.pop("min_bid", None)
        return {"offers": found[: int(q.get("limit") or 64)]}

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
        host = self.hosts[oid]
        self.instances[iid] = {
            "id": iid, "offer_id": oid, "machine_id": offer["machine_id"], "label": body.get("label"),
            "image_uuid": body.get("image"), "disk_space": body.get("disk"), "gpu_name": offer["gpu_name"],
            "num_gpus": offer["num_gpus"], "is_bid": bid is not None,
            "dph_total": float(bid) if bid is not None else offer["dph_total"],
            "actual_status": "loading", "cur_state": "running", "next_state": "running",
            "intended_status": "running", "status_msg": "", "start_date": time.time(), "extra_env": [],
            "ssh_host": host.hostname, "ssh_port": host.port, "public_ipaddr": host.hostname,
            "loading_until": time.time() + offer["loading_s"], "ssh_keys": [],
        }
        return 200, {"success": True, "new_contract": iid}

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
                        return self._send(401, {"success": False, "error": "auth_error", "msg": "bad key"})
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
            return 200, {"instances": [self._row(x) for x in self.instances.values() if not x.get("destroyed")],
                         "next_token": None}
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
            inst["ssh_keys"].append(body.get("ssh_key"))
            return 200, {"success": True}
        if method == "GET":
            return 200, {"instances": None if inst.get("destroyed") else self._row(inst)}
        if method == "DELETE":
            inst["destroyed"] = time.time()
            threading.Thread(target=self._kill, args=(inst["offer_id"],), daemon=True).start()
            return 200, {"success": True}
        return 405, {"success": False, "msg": f"{method} not supported"}
