"""An HTTP-level fake of the Kaggle API, so that the real ``kaggle`` SDK runs against it.

    with FakeKaggle(tmp_path, secrets={"AWS_ACCESS_KEY_ID": ..., ...}, limits=[12, 5, 12]) as kaggle:
        env = kaggle.env()    # LAUNCH_KAGGLE_ENDPOINT, KAGGLE_USERNAME, KAGGLE_KEY, KAGGLE_CONFIG_DIR
        ...
        kaggle.sessions        # one per pushed version: status, limit, log, timings
        kaggle.pushes          # every SaveKernel request body as the SDK sent it

What it emulates, on 127.0.0.1, as the service behaves (not as we would like it to):
- Authentication: HTTP basic auth with the user's legacy key, or ``Authorization: Bearer`` with an
  access token in ``tokens`` (``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``, OAuth); the SDK
  first asks ``security.OAuthService/IntrospectToken`` who a token belongs to. Anything else is
  401. OAuth (``kaggle auth login``): ``users.AccountService/GenerateAccessToken`` trades a
  refresh token in ``refresh_tokens`` for a new access token (12 h); ``expire`` ends an access
  token early, as its 12 h running out does. ``outages`` answers the next N calls of a method
  with a front end's HTML 503 (``{"IntrospectToken": 2}``).
- ``POST /api/v1/kernels.KernelsApiService/SaveKernel`` (``kaggle kernels push``): a kernel of that
  user; each push is a new version whose session starts at once. A push while the kernel still
  has a session running is recorded in ``overlaps``. Refusals, as Kaggle answers them:
  ``Maximum batch GPU session count of N reached.`` in the response's ``error`` (HTTP 200) when
  ``gpu_sessions`` GPU sessions run (TPU: ``tpu_sessions``); a machine shape the account cannot
  have (only ``shapes`` are; a retired P100 runs on a T4 without a word); a timeout above the
  service maximum; an exhausted weekly quota; and scripted ``refusals`` (``"429"`` rate limit,
  ``"503"`` with an HTML body, ``"busy"`` the GPU session limit), one per push.
- ``.../GetKernelSessionStatus``: the status of the version named by ``versionLabel`` (``v3``), or
  of the kernel's latest version without one (``queued``, ``running``, ``complete``, ``error``,
  ``cancelAcknowledged``) and a failure message; ``stuck`` sessions keep saying ``running``
  after their script ended (the status lags).
- ``.../GetAcceleratorQuotaStatistics`` (``kaggle quota``): GPU and TPU hours used (``quota_used``
  plus the GPU time of the fake's sessions) of ``quota_hours``, and when the window resets;
  ``quota_api=False`` answers 404.
- ``.../CancelKernelSession`` by session id; ``.../DeleteKernel`` stops the kernel's sessions and
  forgets the kernel, its versions and its attached secrets.
- ``POST /requests/GetUserSecretByLabelRequest``: what ``kaggle_secrets.UserSecretsClient`` calls in
  a session, with the session's token in ``X-Kaggle-Authorization``; it answers a secret only when
  the user attached it to that kernel in the editor (``attach``; no API call does it).
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
import datetime as dt
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
INTROSPECT = "/api/v1/security.OAuthService/IntrospectToken"
GENERATE_TOKEN = "/api/v1/users.AccountService/GenerateAccessToken"
SECRETS_PATH = "/requests/GetUserSecretByLabelRequest"
# Retired shapes run on a replacement without an error (the SDK only warns).
RETIRED = {"NvidiaTeslaP100": "NvidiaTeslaT4", "TpuV38": "TpuV5E8", "Tpu1VmV38": "TpuV5E8"}
HTML_503 = "<html><head><title>503 Service Unavailable</title></head><body>busy</body></html>"
MAX_TIMEOUT = {"gpu": 12 * 3600, "tpu": 9 * 3600, "cpu": 12 * 3600}

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
    secrets_refused: list[str] = field(default_factory=list)
    accelerator: str = "cpu"  # cpu, gpu or tpu
    shape: str | None = None  # the machine it ran on
    stuck: bool = False  # its status says "running" after its script ended
    deleted: bool = False

    @property
    def log_path(self) -> Path:
        return self.folder / "session.log"

    @property
    def running(self) -> bool:
        return self.status in ("queued", "running")

    def api_status(self) -> str:
        if self.stuck and self.ended is not None and not self.cancelled:
            return "running"
        return self.status

    def used(self, now: float) -> float:
        return ((self.ended or now) - self.started) if self.started else 0.0


def session_kind(body: dict[str, Any]) -> str:
    """``tpu``, ``gpu`` or ``cpu``: the machine shape decides; without one, the (deprecated) flags."""
    shape = RETIRED.get(body.get("machineShape") or "", body.get("machineShape") or "")
    if shape:
        return "tpu" if shape.startswith("Tpu") else "gpu"
    return "tpu" if body.get("enableTpu") else "gpu" if body.get("enableGpu") else "cpu"


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
                 secrets: dict[str, str] | None = None, attached: dict[str, list[str]] | None = None,
                 tokens: dict[str, str] | None = None, limits: list[float] | float = 10.0,
                 gpu_sessions: int = 2, tpu_sessions: int = 1, shapes: tuple[str, ...] = ("NvidiaTeslaT4",),
                 quota_hours: float = 30.0, quota_used: float = 0.0, quota_api: bool = True,
                 python: str = sys.executable):
        self.root = Path(root)
        self.username = username
        self.key = key or pysecrets.token_hex(16)
        self.secrets = dict(secrets or {})
        self.attached: dict[str, set[str]] = {k: set(v) for k, v in (attached or {}).items()}
        self.tokens = dict(tokens or {})  # access token -> its user
        self.refresh_tokens: dict[str, str] = {}  # OAuth refresh token -> its user
        self.outages: dict[str, int] = {}  # method -> how many of its next calls answer 503
        self.limits = [limits] if isinstance(limits, (int, float)) else list(limits)
        self.gpu_sessions, self.tpu_sessions, self.shapes = gpu_sessions, tpu_sessions, set(shapes)
        self.quota_hours, self.quota_used, self.quota_api = quota_hours, quota_used, quota_api
        self.quota_reset = time.time() + 3 * 86400
        self.refusals: list[str] = []  # scripted answers to the next pushes: "429", "503", "busy"
        self.refused: list[str] = []  # why each refused push was refused
        self.stuck_versions: set[int] = set()  # these version numbers' status lags (see Session.stuck)
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

    def env(self, auth: str = "key") -> dict[str, str]:
        """What points the launcher (and the SDK) at this fake, with this user's credentials:
        the legacy key (``auth="key"``) or a new access token in ``KAGGLE_API_TOKEN``."""
        config_dir = self.root / "kaggle-config"
        config_dir.mkdir(exist_ok=True)
        env = {"LAUNCH_KAGGLE_ENDPOINT": self.url, "KAGGLE_CONFIG_DIR": str(config_dir)}
        if auth == "token":
            return {**env, "KAGGLE_API_TOKEN": self.new_token()}
        return {**env, "KAGGLE_USERNAME": self.username, "KAGGLE_KEY": self.key}

    def new_token(self) -> str:
        """An access token of this user, as https://www.kaggle.com/settings/api makes them."""
        token = "KGAT_" + pysecrets.token_hex(16)
        self.tokens[token] = self.username
        return token

    def oauth_login(self, home: Path, expires_in: float = 12 * 3600) -> str:
        """What ``kaggle auth login`` leaves in ``home/.kaggle/credentials.json``; returns the
        refresh token."""
        refresh = "refresh-" + pysecrets.token_hex(8)
        self.refresh_tokens[refresh] = self.username
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires_in)
        (home / ".kaggle").mkdir(parents=True, exist_ok=True)
        (home / ".kaggle" / "credentials.json").write_text(json.dumps({
            "refresh_token": refresh, "access_token": self.new_token(), "access_token_expiration": expires.isoformat(),
            "username": self.username, "scopes": []}))
        return refresh

    def expire(self, token: str) -> None:
        """The access token's time is up (12 h for OAuth ones): Kaggle answers 401 to it."""
        self.tokens.pop(token, None)

    # --- what the user does in the web UI -------------------------------------------------------
    def attach(self, kernel: str, names: list[str]) -> None:
        """The user opens the kernel in the editor and attaches these secrets (Add-ons > Secrets)."""
        self.attached.setdefault(kernel, set()).update(names)

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
        if header and header.startswith("Bearer "):
            return self.tokens.get(header[7:]) == self.username
        if not header or not header.startswith("Basic "):
            return False
        user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        return user == self.username and key == self.key

    def generate_token(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        user = self.refresh_tokens.get(body.get("refreshToken") or "")
        if not user:
            return 401, {"code": 401, "message": "Unauthenticated"}
        token = "KGAT_" + pysecrets.token_hex(16)
        self.tokens[token] = user
        return 200, {"token": token, "expiresIn": 12 * 3600, "userName": user}

    def introspect(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        user = self.tokens.get(body.get("token") or "")
        return 200, ({"active": True, "username": user, "scope": "resources.admin:*"} if user else {"active": False})

    def refusal(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """Why Kaggle refuses this push, as it answers it; None when it takes it."""
        kind, shape = session_kind(body), body.get("machineShape")
        if self.refusals:
            what = self.refusals.pop(0)
            if what == "429":
                return 429, {"code": 429, "message": "Too many requests"}
            if what == "503":
                return 503, HTML_503
            return 200, {"error": f"Maximum batch GPU session count of {self.gpu_sessions} reached."}
        live = [s for s in self.sessions if s.running and s.accelerator == kind]
        if kind == "gpu" and len(live) >= self.gpu_sessions:
            return 200, {"error": f"Maximum batch GPU session count of {self.gpu_sessions} reached."}
        if kind == "tpu" and len(live) >= self.tpu_sessions:
            return 200, {"error": f"Maximum batch TPU session count of {self.tpu_sessions} reached."}
        if shape and shape not in self.shapes and shape not in RETIRED:
            return 403, {"code": 403, "message": f"The accelerator {shape} is not available to this account."}
        timeout = int(body.get("sessionTimeoutSeconds") or 0)
        if timeout > MAX_TIMEOUT[kind]:
            return 400, {"code": 400, "message": f"sessionTimeoutSeconds {timeout} is above the maximum of {MAX_TIMEOUT[kind]}."}
        if kind != "cpu" and self.quota_left(kind) <= 0:
            return 200, {"error": f"You have exceeded your weekly {kind.upper()} quota."}
        return None

    def quota_left(self, kind: str) -> float:
        used = self.quota_used * 3600 + sum(s.used(time.time()) for s in self.sessions if s.accelerator == kind)
        return self.quota_hours * 3600 - used

    def quota(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.quota_api:
            return 404, {"code": 404, "message": "Not found"}

        def view(kind: str, hours: float) -> dict[str, str]:
            used = hours * 3600 - self.quota_left(kind)
            return {"timeUsed": f"{used:.3f}s", "timeReserved": "0s", "totalTimeAllowed": f"{hours * 3600:.0f}s",
                    "minimumTimeAllowed": "0s"}

        reset = dt.datetime.fromtimestamp(self.quota_reset, dt.timezone.utc).replace(tzinfo=None)
        return 200, {"quotaRefreshTime": reset.isoformat(timespec="milliseconds") + "Z",
                     "gpuQuota": view("gpu", self.quota_hours), "tpuQuota": view("tpu", 20.0)}

    def save_kernel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.pushes.append(body)
        kernel = body.get("slug") or ""
        owner, _, slug = kernel.partition("/")
        if owner != self.username or not slug:
            return 403, {"code": 403, "message": f"cannot push kernel {kernel!r}"}
        if body.get("language") != "python" or body.get("kernelType") != "script" or not body.get("text"):
            return 400, {"code": 400, "message": "expected a python script"}
        with self._lock:
            refused = self.refusal(body)
            if refused is not None:
                self.refused.append(json.dumps(refused[1]) if isinstance(refused[1], dict) else refused[1])
                return refused
            if any(s.kernel == kernel and s.running for s in self.sessions):
                self.overlaps.append(kernel)
            n = len(self.sessions)
            version = 1 + sum(s.kernel == kernel and not s.deleted for s in self.sessions)
            limit = float(self.limits[min(n, len(self.limits) - 1)])
            if body.get("sessionTimeoutSeconds"):
                limit = min(limit, float(body["sessionTimeoutSeconds"]))
            token = pysecrets.token_hex(12)
            shape, kind = body.get("machineShape"), session_kind(body)
            s = Session(id=1000 + n, kernel=kernel, version=version, limit=limit,
                        folder=self.root / "sessions" / f"{slug}-{n}-v{version}", token=token,
                        marker=pysecrets.token_hex(8), accelerator=kind,
                        shape=RETIRED.get(shape, shape),
                        stuck=version in self.stuck_versions)
            self.sessions.append(s)
        threading.Thread(target=self._run, args=(s, body["text"]), daemon=True).start()
        return 200, {"ref": f"/code/{kernel}", "url": f"{self.url}/code/{kernel}",
                     "versionNumber": version, "kernelId": 1}

    def session_status(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kernel = f"{body.get('userName')}/{body.get('kernelSlug')}"
        mine = [s for s in self.sessions if s.kernel == kernel and not s.deleted]
        label = body.get("versionLabel")
        if label:
            mine = [s for s in mine if f"v{s.version}" == label]
        if not mine:
            return 404, {"code": 404, "message": f"kernel {kernel} {label or ''} not found".replace("  ", " ")}
        s = mine[-1]
        return 200, {"status": s.api_status(), **({"failureMessage": s.failure} if s.failure else {})}

    def cancel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for s in self.sessions:
            if s.id == body.get("kernelSessionId") and s.running:
                s.cancelled = True
                kill_session_processes(s.marker)
        return 200, {}

    def delete_kernel(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kernel = f"{body.get('userName')}/{body.get('kernelSlug')}"
        mine = [s for s in self.sessions if s.kernel == kernel and not s.deleted]
        if not mine:
            return 404, {"code": 404, "message": f"kernel {kernel} not found"}
        for s in mine:
            if s.running:
                s.cancelled = True
                kill_session_processes(s.marker)
            s.deleted = True
        self.attached.pop(kernel, None)
        return 200, {}

    def user_secret(self, token: str, label: str) -> tuple[int, dict[str, Any]]:
        live = [s for s in self.sessions if s.token == token and s.running]
        if not live:
            return 200, {"wasSuccessful": False, "errors": ["invalid or expired token"]}
        if label not in self.secrets or label not in self.attached.get(live[0].kernel, set()):
            live[0].secrets_refused.append(label)  # a secret the user has but did not attach: same answer
            return 200, {"wasSuccessful": False, "errors": [f"no secret labelled {label} attached to this notebook"]}
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

        def _reply(self, code: int, doc: dict[str, Any] | str) -> None:
            html = isinstance(doc, str)  # a front end's error page, not the API's JSON
            data = doc.encode() if html else json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html" if html else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.requests.append((self.path, raw))
            body = json.loads(raw or b"{}")
            method = self.path.rsplit("/", 1)[-1]
            if fake.outages.get(method):
                fake.outages[method] -= 1
                return self._reply(503, HTML_503)
            if self.path == SECRETS_PATH:
                auth = self.headers.get("X-Kaggle-Authorization") or ""
                return self._reply(*fake.user_secret(auth.removeprefix("Bearer "), body.get("Label", "")))
            if self.path == INTROSPECT:
                return self._reply(*fake.introspect(body))
            if self.path == GENERATE_TOKEN:
                return self._reply(*fake.generate_token(body))
            if not self.path.startswith(KERNELS):
                return self._reply(404, {"code": 404, "message": f"no such endpoint {self.path}"})
            if not fake.authorized(self.headers.get("Authorization")):
                return self._reply(401, {"code": 401, "message": "Unauthenticated"})
            method = self.path[len(KERNELS):]
            route = {"SaveKernel": fake.save_kernel, "GetKernelSessionStatus": fake.session_status,
                     "CancelKernelSession": fake.cancel, "DeleteKernel": fake.delete_kernel,
                     "GetAcceleratorQuotaStatistics": fake.quota}.get(method)
            if route is None:
                return self._reply(404, {"code": 404, "message": f"no such method {method}"})
            return self._reply(*route(body))

    return Handler
