"""A fault-injecting HTTP proxy in front of an S3 server, driven by the test.

    proxy = S3FaultProxy(s3_server.endpoint_url).start()      # 127.0.0.1, a free port
    env = {**s3_server.env(), "AWS_ENDPOINT_URL": proxy.url}  # clients talk to the proxy
    proxy.fail_next(2, status=503, method="PUT", path=r"MANIFEST\\.json")   # SlowDown, twice
    proxy.reset_mid_body(method="PUT", path=r"partNumber=")  # a multipart part cut off mid-way
    proxy.stall(8.0, method="GET")                           # the answer comes 8 s late
    proxy.truncate(method="GET", path=r"state\\.json")        # half the body, then the end
    proxy.down(); ...; proxy.up()                            # connections refused meanwhile
    proxy.fired("reset")                                     # how many faults of a kind fired

Each request is read whole from the client (``Expect: 100-continue`` is answered here), sent to the
upstream server on a fresh connection with its headers unchanged (the SigV4 signature covers the
``Host`` header, which stays the proxy's), and the answer is passed back, unless a fault matches.
A fault matches on the HTTP method and a regular expression searched in the request target (path
and query string), fires ``times`` times (None: until cleared) and is consumed in the order the
faults were added. Every request is recorded in :attr:`S3FaultProxy.requests`.

Fault kinds:

* ``status``: an S3 error answer (``503 SlowDown``, ``500 InternalError``...) instead of the
  server's; with ``forward=True`` the server does the request first and its answer is lost.
* ``reset``: the connection is reset (RST) in the middle of the request body (``where="request"``,
  the server never sees the request) or of the response body (``where="response"``, after the
  server did it).
* ``stall``: nothing is sent back for ``seconds``, then the request goes on as usual if the
  client is still there (a client that gave up is never answered, and its request is dropped).
* ``truncate``: the response headers with the full ``Content-Length``, half the body, then a clean
  close: what a client sees when a connection dies during a download.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te",
                "upgrade"}
_REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}
_CODES = {500: "InternalError", 503: "SlowDown", 429: "SlowDown"}


@dataclass
class Fault:
    kind: str  # status | reset | stall | truncate
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    status: int = 503
    code: str = ""
    forward: bool = False
    where: str = "response"
    seconds: float = 0.0
    fired: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, target) is not None


@dataclass
class Seen:
    """One request as the proxy saw it, and what it did with it."""
    method: str
    target: str
    fault: str = ""  # the fault kind that fired, "" when passed through
    status: int | None = None  # the status sent back, None when none was


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class S3FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host, self.port = host, port
        self.requests: list[Seen] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._clients: dict[socket.socket, object] = {}  # connection -> its reader
        self._down = threading.Event()

    # --- life ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3FaultProxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True, name="s3proxy").start()
        return self

    def close(self) -> None:
        self.down()

    def down(self) -> None:
        """The store goes away: new connections are refused, open ones are reset."""
        self._down.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            clients, self._clients = dict(self._clients), {}
        for c in clients:  # their threads see the end, close them, and the linger makes it a reset
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def up(self) -> None:
        """The store is back, on the same port."""
        self._down.clear()
        if self._listener is None:
            self.start()

    # --- the fault plan ----------------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(self, times: int | None = 1, status: int = 503, code: str = "", *,
                  method: str | None = None, path: str | None = None, forward: bool = False) -> Fault:
        return self.add(Fault("status", method, path, times, status=status,
                              code=code or _CODES.get(status, "InternalError"), forward=forward))

    def reset_mid_body(self, times: int | None = 1, *, method: str | None = None,
                       path: str | None = None, where: str = "response") -> Fault:
        if where not in ("request", "response"):
            raise ValueError(f"where must be 'request' or 'response', not {where!r}")
        return self.add(Fault("reset", method, path, times, where=where))

    def stall(self, seconds: float, times: int | None = 1, *, method: str | None = None,
              path: str | None = None) -> Fault:
        return self.add(Fault("stall", method, path, times, seconds=seconds))

    def truncate(self, times: int | None = 1, *, method: str | None = None,
                 path: str | None = None) -> Fault:
        return self.add(Fault("truncate", method, path, times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def fired(self, kind: str | None = None) -> int:
        """How many requests met a fault (of ``kind``)."""
        with self._lock:
            return sum(1 for r in self.requests if r.fault and (kind is None or r.fault == kind))

    def _take(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, target):
                    f.fired += 1
                    return f
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    # --- serving -----------------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by down()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with self._lock:
            self._clients[conn] = reader
        try:
            while not self._down.is_set():
                req = _read_head(reader)
                if req is None:
                    return
                if not self._handle(conn, reader, req):
                    return
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients.pop(conn, None)
            try:
                reader.close()
                conn.close()
            except OSError:
                pass

    def _handle(self, conn: socket.socket, reader, req: _Request) -> bool:
        """Serve one request; False when the connection must end."""
        fault = self._take(req.method, req.target)
        seen = Seen(req.method, req.target, fault.kind if fault else "")
        self._record(seen)
        length = int(req.header("Content-Length") or 0)
        if (req.header("Expect") or "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if fault and fault.kind == "reset" and fault.where == "request":
            reader.read(length // 2)
            _reset(conn, reader)
            return False
        req.body = _read_body(reader, req, length)
        if fault and fault.kind == "stall" and not _wait_or_gone(conn, fault.seconds):
            return False  # the client gave up: its request never reaches the server
        if fault and fault.kind == "status" and not fault.forward:
            return self._send_error(conn, seen, fault)
        status, reason, headers, body = self._forward(req)
        if fault and fault.kind == "status":
            return self._send_error(conn, seen, fault)
        head = _head(status, reason, headers, len(body), req.method == "HEAD")
        seen.status = status
        if fault and fault.kind in ("reset", "truncate") and len(body) > 1:
            conn.sendall(head + body[:len(body) // 2])
            if fault.kind == "reset":
                _reset(conn, reader)
            else:
                conn.shutdown(socket.SHUT_RDWR)
            return False
        conn.sendall(head + body)
        return (req.header("Connection") or "").lower() != "close"

    def _send_error(self, conn: socket.socket, seen: Seen, fault: Fault) -> bool:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                f"<Message>injected by the test proxy</Message></Error>").encode()
        headers = [("Content-Type", "application/xml")]
        seen.status = fault.status
        conn.sendall(_head(fault.status, _REASONS.get(fault.status, "Error"), headers, len(body)) + body)
        return True

    def _forward(self, req: _Request) -> tuple[int, str, list[tuple[str, str]], bytes]:
        up = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            up.putrequest(req.method, req.target, skip_host=True, skip_accept_encoding=True)
            for k, v in req.headers:
                if k.lower() not in _HOP_HEADERS and k.lower() != "content-length":
                    up.putheader(k, v)
            if req.body or req.method in ("PUT", "POST"):
                up.putheader("Content-Length", str(len(req.body)))
            up.endheaders(req.body or None)
            resp = up.getresponse()
            body = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS]
            return resp.status, resp.reason, headers, body
        finally:
            up.close()


def _read_head(reader) -> _Request | None:
    line = reader.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = reader.readline(65537)
    if not line:
        return None
    method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    req = _Request(method, target, version)
    while True:
        h = reader.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            return req
        k, _, v = h.decode("latin-1").partition(":")
        req.headers.append((k.strip(), v.strip()))


def _read_body(reader, req: _Request, length: int) -> bytes:
    if (req.header("Transfer-Encoding") or "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            out += reader.read(size)
            reader.readline()
    return reader.read(length) if length else b""


def _head(status: int, reason: str, headers: list[tuple[str, str]], length: int,
          head_request: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers if head_request or k.lower() != "content-length"]
    if not head_request:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(conn: socket.socket, reader) -> None:
    """Close with RST rather than FIN: the peer sees 'connection reset by peer'. (The socket
    closes only once its reader is closed too; call from the thread that reads.)"""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reader.close()
        conn.close()
    except OSError:
        pass


def _wait_or_gone(conn: socket.socket, seconds: float) -> bool:
    """Sleep ``seconds``; False as soon as the client closes its end."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([conn], [], [], min(left, 0.2))
        if readable:
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    return False
            except OSError:
                return False
            time.sleep(min(left, 0.2))  # pipelined bytes: the client is still there
    return True
