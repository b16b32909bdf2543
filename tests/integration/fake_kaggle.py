"""An HTTP-level fake of the Kaggle API, so that the real ``kaggle`` SDK runs against it.

    with FakeKaggle(tmp_path, secrets={"AWS_ACCESS_KEY_ID": ..., ...}, limits=[12, 5, 12]) as kaggle:
        env = kaggle.env()    # LAUNCH_KAGGLE_ENDPOINT, KAGGLE_USERNAME, KAGGLE_KEY, KAGGLE_CONFIG_DIR
        ...
        kaggle.sessions        # one per pushed version: status, limit, log, timings
        kaggle.pushes          # every SaveKernel request body as the SDK sent it

What it emulates, on 127.0.0.1:
- ``POST /api/v1/kernels.KernelsApiService/SaveKernel`` (``kaggle kernels push``): HTTP basic auth
  with the user's key, a kernel of that user; each push is a new version whose session starts at
  once. A push while the kernel still has a session running is recorded in ``overlaps``.
- ``.../GetKernelSessionStatus``: the status of the kernel's latest version (``queued``,
  ``running``, ``complete``, ``error``, ``cancelAcknowledged``) and a failure message.
- ``.../CancelKernelSession`` by session id.
- ``POST /requests/GetUserSecretByLabelRequest``: what ``kaggle_secrets.UserSecretsClient`` calls in
  a session, with the session's token in ``X-Kaggle-Authorization``; answers the user's secret.
- A session: the pushed code file run by ``python`` (this test's interpreter stands for Kaggle's
  image, which has torch and boto3) in a folder of its own, with Kaggle's environment
  (``KAGGLE_KERNEL_RUN_TYPE``, ``KAGGLE_URL_BASE``, ``KAGGLE_USER_SECRETS_TOKEN``, a
  ``kaggle_secrets`` module on ``PYTHONPATH``) and nothing of the launching machine's (no AWS_*,
  no Kaggle key). Its output is its log. When its script ends, or at its limit (the fake's limit
  for that session, or the push's ``sessionTimeoutSeconds`` if shorter), every process of the
  session is killed, as when a container goes away (found by a marker in their environment).
"""

from __future__ import annotations

import base64
import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MARKER = "FAKE_KAGGLE_SESSION"
KERNELS = "/api/v1/kernels.KernelsApiService/"
SECRETS_PATH = "/requests/GetUserSecretByLabelRequest"

KAGGLE_SECRETS_MODULE = '''\
"""kaggle_secrets as a Kaggle image has it, reduced to get_secret (the fake's copy)."""
import json
import os
import urllib.request


class CredentialError(Exception):
    pass


class BackendError(Exception):
    pass


class UserSecretsClient:
    GET_USER_SECRET_BY_LABEL_ENDPOINT = "/requests/GetUserSecretByLabelRequest"

    def __init__(self):
        self.url_base = os.getenv("KAGGLE_URL_BASE") or "https://www.kaggle.com"
        self.jwt_token = os.getenv("KAGGLE_USER_SECRETS_TOKEN")
        if self.jwt_token is None:
            raise CredentialError("A JWT Token is required to use the UserSecretsClient")

    def get_secret(self, label):
        req = urllib.request.Request(
            self.url_base + self.GET_USER_SECRET_BY_LABEL_ENDPOINT,
            data=json.dumps({"Label": label}).encode(),
            headers={"Content-type": "application/json",
                     "X-Kaggle-Authorization": "Bearer " + self.jwt_token})
        with urllib.request.urlopen(req, timeout=40) as resp:
            body = json.loads(resp.read())
        if not body.get("wasSuccessful"):
            raise BackendError("Unexpected response from the service: %s" % body.get("errors"))
        return body["result"]["secret"]
'''


@dataclass
class Session:
    id: int
    kernel: str  # owner/slug
    version: int
    limit: float
    folder: Path
    token: str  # the session's user-secrets token
    marker: str
    status: str = "queued"
    failure: str = ""
    started: float = 0.0
    ended: float | None = None
    exit_code: int | None = None
    proc: subprocess.Popen | None = None
    cancelled: bool = False
    secrets_read: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.folder / "session.log"

    @property
    def running(self) -> bool:
        return self.status in ("queued", "running")


def session_pids(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(d))
        except OSError:
            continue
    return pids


def kill_session_processes(marker: str) -> None:
    for _ in range(50):
        pids = [p for p in session_pids(marker) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


class FakeKaggle:
    def __init__(self, root: Path, *, username: str = "launchuser", key: str | None = None,
                 secrets: dict[str, str] | None = None, limits: list[float] | float = 10.0,
                 python: str = sys.executable):
        self.root = Path(root)
        self.username = username
        self.key = key or pysecrets.token_hex(16)
        self.secrets = dict(secrets or {})
        self.limits = [limits] if isinstance(limits, (int, float)) else list(limits)
        self.python = python
        self.sessions: list[Session] = []
        self.pushes: list[dict[str, Any]] = []
        self.overlaps: list[str] = []
        self.requests: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.image = self.root / "image"
        self.image.mkdir(parents=True, exist_ok=True)
        (self.image / "kaggle_secrets.py").write_text(KAGGLE_SECRETS_MODULE)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> FakeKaggle:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for s in self.sessions:
            if s.proc is not None and s.proc.poll() is None:
                kill_session_processes(s.marker)
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict[str, str]:
        """What points the launcher (and the SDK) at this fake, with this user's credentials."""
        config_dir = self.root / "kaggle-config"
        config_dir.mkdir(exist_ok=True)
        return {"LAUNCH_KAGGLE_ENDPOINT": self.url, "KAGGLE_USERNAME": self.username,
                "KAGGLE_KEY": self.key, "KAGGLE_CONFIG_DIR": str(config_dir)}

    # --- views for tests -----------------------------------------------------------------------
    def running(self) -> list[Session]:
        return [s for s in self.sessions if s.running]

    def wait_idle(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while self.running() and time.monotonic() < end:
            time.sleep(0.1)
        assert not self.running(), f"sessions still running: {[s.id for s in self.running()]}"

    def session_logs(self) -> str:
        return "\n".join(s.log_path.read_text(errors="replace") for s in self.sessions if s.log_path.exists())

    # --- the API ------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        return user == self.username and key == self.key

    def save_kernel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.pushes.append(body)
        kernel = body.get("slug") or ""
        owner, _, slug = kernel.partition("/")
        if owner != self.username or not slug:
            return 403, {"code": 403, "message": f"cannot push kernel {kernel!r}"}
        if body.get("language") != "python" or body.get("kernelType") != "script" or not body.get("text"):
            return 400, {"code": 400, "message": "expected a python script"}
        with self._lock:
            if any(s.kernel == kernel and s.running for s in self.sessions):
                self.overlaps.append(kernel)
            n = len(self.sessions)
            version = 1 + sum(s.kernel == kernel for s in self.sessions)
            limit = float(self.limits[min(n, len(self.limits) - 1)])
            if body.get("sessionTimeoutSeconds"):
                limit = min(limit, float(body["sessionTimeoutSeconds"]))
            token = pysecrets.token_hex(12)
            s = Session(id=1000 + n, kernel=kernel, version=version, limit=limit,
                        folder=self.root / "sessions" / f"{slug}-v{version}", token=token,
                        marker=pysecrets.token_hex(8))
            self.sessions.append(s)
        threading.Thread(target=self._run, args=(s, body["text"]), daemon=True).start()
        return 200, {"ref": f"/code/{kernel}", "url": f"{self.url}/code/{kernel}",
                     "versionNumber": version, "kernelId": 1}

    def session_status(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kernel = f"{body.get('userName')}/{body.get('kernelSlug')}"
        mine = [s for s in self.sessions if s.kernel == kernel]
        if not mine:
            return 404, {"code": 404, "message": f"kernel {kernel} not found"}
        s = mine[-1]
        return 200, {"status": s.status, **({"failureMessage": s.failure} if s.failure else {})}

    def cancel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for s in self.sessions:
            if s.id == body.get("kernelSessionId") and s.running:
                s.cancelled = True
                kill_session_processes(s.marker)
        return 200, {}

    def user_secret(self, token: str, label: str) -> tuple[int, dict[str, Any]]:
        live = [s for s in self.sessions if s.token == token and s.running]
        if not live:
            return 200, {"wasSuccessful": False, "errors": ["invalid or expired token"]}
        if label not in self.secrets:
            return 200, {"wasSuccessful": False, "errors": [f"no secret labelled {label}"]}
        live[0].secrets_read.append(label)
        return 200, {"wasSuccessful": True, "result": {"secret": self.secrets[label]}}

    # --- a session -----------------------------------------------------------------------------
    def _run(self, s: Session, source: str) -> None:
        working = s.folder / "working"
        for d in (working, s.folder / "tmp", s.folder / "home"):
            d.mkdir(parents=True, exist_ok=True)
        code = s.folder / "__script__.py"
        code.write_text(source)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(s.folder / "home"),
               "TMPDIR": str(s.folder / "tmp"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_URL_BASE": self.url,
               "KAGGLE_USER_SECRETS_TOKEN": s.token, "PYTHONPATH": str(self.image), MARKER: s.marker}
        with open(s.log_path, "wb") as log:
            s.proc = subprocess.Popen([self.python, str(code)], cwd=working, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        s.started, s.status = time.time(), "running"
        try:
            s.exit_code = s.proc.wait(timeout=s.limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        kill_session_processes(s.marker)  # the container goes away with everything in it
        s.proc.wait()
        s.ended = time.time()
        if s.cancelled:
            s.status = "cancelAcknowledged"
        elif timed_out:
            s.status, s.failure = "error", f"session exceeded its time limit of {s.limit:g} s"
        elif s.exit_code == 0:
            s.status = "complete"
        else:
            s.status, s.failure = "error", f"the script exited with code {s.exit_code}"


def _handler(fake: FakeKaggle):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, code: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.requests.append((self.path, raw))
            body = json.loads(raw or b"{}")
            if self.path == SECRETS_PATH:
                auth = self.headers.get("X-Kaggle-Authorization") or ""
                return self._reply(*fake.user_secret(auth.removeprefix("Bearer "), body.get("Label", "")))
            if not self.path.startswith(KERNELS):
                return self._reply(404, {"code": 404, "message": f"no such endpoint {self.path}"})
            if not fake.authorized(self.headers.get("Authorization")):
                return self._reply(401, {"code": 401, "message": "Unauthenticated"})
            method = self.path[len(KERNELS):]
            route = {"SaveKernel": fake.save_kernel, "GetKernelSessionStatus": fake.session_status,
                     "CancelKernelSession": fake.cancel}.get(method)
            if route is None:
                return self._reply(404, {"code": 404, "message": f"no such method {method}"})
            return self._reply(*route(body))

    return Handler
