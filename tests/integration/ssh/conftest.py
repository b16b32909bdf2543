"""Pretend SSH hosts: real OpenSSH ``sshd`` processes on this machine, one per host.

Each host has its own port, host key, authorized_keys, sshd config and root folder. sshd hands
every session ``LAUNCH_REMOTE_ROOT`` (so the hosts look like separate machines),
``LAUNCH_PYTHON`` (the "image Python" that already has torch: this test run's Python, so no test
installs anything, unless the host is given its own, e.g. an :func:`image_python`) and a marker
variable. Killing a host kills its sshd and every process that
carries its marker: its sessions and the detached runs started through them, as if the machine
had vanished. A host may live in its own network namespace behind a veth pair, so that a test
can silently drop its link.

    def test_x(ssh_lab):
        a, b = ssh_lab.add_host("host-a"), ssh_lab.add_host("host-b")
        ssh_lab.write_pool("duo", ["host-a", "host-b"])     # sets LAUNCH_SSH_POOLS/_CONFIG
        a.kill()

A host that lacks packages and has no package index (``no_index=True``): its own image Python,
in a network namespace (no route but the link to us), with pip's configuration (here: file://
indexes on the shared disk) left out::

    def test_y(ssh_lab, image_python):    # torch, torchvision, numpy; no boto3
        h = ssh_lab.add_host("air", python=image_python, no_index=True)
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from launcher.testing import wait_for

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
MARKER = "LAUNCH_TEST_HOST"
LAUNCH = str(Path(sys.executable).with_name("launch"))
# pip on a host without an index: no configuration file (this machine's points at file:// indexes
# that a pretend host would read off the shared disk), so pip has only PyPI, which a host in a
# network namespace cannot reach.
NO_INDEX_ENV = {"PIP_CONFIG_FILE": os.devnull}


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def pids_with(needle: bytes, where: tuple[str, ...] = ("environ",)) -> list[int]:
    """Live processes whose environ (or cmdline) contains ``needle``."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid() and any(needle in _read(f"/proc/{p}/{w}") for w in where):
            found.append(int(p))
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            stat = _read(f"/proc/{p}/stat").decode(errors="replace")
            if ")" in stat:
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(p))
    found, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _requirements(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def make_image_python(dest: Path, packages: list[str]) -> str:
    """A Python like a GPU image's: a fresh venv (no system site-packages) that sees ``packages``
    and what they depend on, as installed in this test run's environment (symlinked, nothing is
    copied), and nothing else: no boto3, no launcher. Returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    python = str(dest / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    seen, todo = set(), list(packages)
    while todo:
        try:
            dist = metadata.distribution(todo.pop())
        except metadata.PackageNotFoundError:  # an optional or platform-only dependency
            continue
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        todo += _requirements(dist)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    return python


@dataclass
class NetNS:
    """A network namespace joined to ours by a veth pair: ``outer`` here, ``inner`` inside."""

    name: str
    outer_if: str
    inner_if: str
    outer: str
    inner: str

    @classmethod
    def create(cls, index: int) -> "NetNS":
        tag = f"{os.getpid() % 100000}{index}"
        net = f"10.{200 + index % 50}.{os.getpid() % 250}"
        ns = cls(f"lt{tag}", f"lto{tag}", f"lti{tag}", f"{net}.1", f"{net}.2")
        sh("ip", "netns", "add", ns.name)
        sh("ip", "link", "add", ns.outer_if, "type", "veth", "peer", "name", ns.inner_if)
        sh("ip", "link", "set", ns.inner_if, "netns", ns.name)
        sh("ip", "addr", "add", f"{ns.outer}/30", "dev", ns.outer_if)
        sh("ip", "link", "set", ns.outer_if, "up")
        ns.exec("ip", "addr", "add", f"{ns.inner}/30", "dev", ns.inner_if)
        ns.exec("ip", "link", "set", ns.inner_if, "up")
        ns.exec("ip", "link", "set", "lo", "up")
        return ns

    def exec(self, *cmd: str) -> None:
        sh("ip", "netns", "exec", self.name, *cmd)

    def drop_link(self) -> None:
        """The silent drop: the host's side of the link goes down; nothing is reset or refused."""
        self.exec("ip", "link", "set", self.inner_if, "down")

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer_if], capture_output=True)


@dataclass
class Host:
    name: str
    hostname: str
    port: int
    dir: Path
    root: Path
    marker: str
    netns: NetNS | None = None
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, client_pub: str) -> "Host":
        key = self.dir / "host_ed25519"
        if not key.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (self.dir / "authorized_keys").write_text(client_pub)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.dir / "sshd_config").write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.hostname}", f"HostKey {key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "UsePAM no", "StrictModes no", "PermitRootLogin yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PrintMotd no",
            "MaxSessions 64", "MaxStartups 64:30:128", "LogLevel INFO",
            f"Subsystem sftp {SFTP_SERVER}",
            # PYENV_REHASH_TIMEOUT: a login's ~/.bashrc may run `pyenv init`, whose rehash waits up
            # to 60 s for a lock that a session killed with its host can leave behind.
            f"SetEnv LAUNCH_PYTHON={self.python} LAUNCH_REMOTE_ROOT={self.root} {MARKER}={self.marker}"
            " PYENV_REHASH_TIMEOUT=1" + "".join(f" {k}={v}" for k, v in self.env.items()),
            ""]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        cmd = [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns.name, *cmd]
        with open(self.dir / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, MARKER: self.marker}, start_new_session=True)
        wait_for(self._answers, 20, f"sshd of {self.name} to answer")
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd of {self.name} exited:\n{(self.dir / 'sshd.log').read_text()}")
        try:
            with socket.create_connection((self.hostname, self.port), timeout=1) as s:
                return s.recv(4) == b"SSH-"
        except OSError:
            return False

    def pids(self) -> list[int]:
        """Every process of this host: its sshd and their children (found by parentage: sshd
        rewrites its own environment for its process titles), and whatever carries its marker
        (the sessions' commands and the detached runs they started)."""
        found = set(pids_with(f"{MARKER}={self.marker}".encode()))
        if self.proc and self.proc.poll() is None:
            found |= descendants(self.proc.pid) | {self.proc.pid}
        return sorted(found)

    def kill(self) -> None:
        """The machine vanishes: SIGKILL to its sshd and every process under it, until none is left."""
        wait_for(lambda: not self._kill_round(), 10, f"every process of {self.name} to die", every=0.05)
        if self.proc:
            self.proc.wait(timeout=5)

    def _kill_round(self) -> list[int]:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


class Forwarder:
    """A TCP forwarder from ``listen`` to ``target`` (both (host, port)), threads only."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]):
        self.target = target
        self.sock = socket.create_server(listen)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


@dataclass
class Lab:
    dir: Path
    key: Path
    monkeypatch: pytest.MonkeyPatch
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[NetNS] = field(default_factory=list)
    forwarders: list[Forwarder] = field(default_factory=list)

    def add_host(self, name: str, *, netns: bool = False, python: str | None = None,
                 env: dict[str, str] | None = None, no_index: bool = False) -> Host:
        """A started host; ``python`` is its image Python (default: this test run's), ``env``
        more variables for its sessions; ``no_index``: in a network namespace, and its pip
        without this machine's configuration (``NO_INDEX_ENV``)."""
        netns = netns or no_index
        env = {**(NO_INDEX_ENV if no_index else {}), **(env or {})}
        ns = NetNS.create(len(self.namespaces)) if netns else None
        if ns:
            self.namespaces.append(ns)
        hostname = ns.inner if ns else "127.0.0.1"
        port = 22 if ns else free_port()
        d = self.dir / name
        d.mkdir(parents=True)
        host = Host(name, hostname, port, d, d / "root", f"{name}-{uuid.uuid4().hex[:8]}", ns,
                    python or sys.executable, env)
        self.hosts[name] = host
        return host.start(Path(f"{self.key}.pub").read_text())

    def write_pool(self, pool: str, names: list[str]) -> Path:
        """The pool file (SkyPilot's format, hosts as ~/.ssh/config aliases) and the ssh config;
        both paths go into the environment (LAUNCH_SSH_POOLS, LAUNCH_SSH_CONFIG)."""
        cfg = self.dir / "ssh_config"
        cfg.write_text("".join(
            f"Host {h.name}\n  HostName {h.hostname}\n  Port {h.port}\n  User root\n  IdentityFile {self.key}\n"
            for h in self.hosts.values()))
        pools_file = self.dir / "ssh_node_pools.yaml"
        doc = yaml.safe_load(pools_file.read_text()) if pools_file.exists() else {}
        doc[pool] = {"hosts": list(names)}
        pools_file.write_text(yaml.safe_dump(doc))
        self.monkeypatch.setenv("LAUNCH_SSH_POOLS", str(pools_file))
        self.monkeypatch.setenv("LAUNCH_SSH_CONFIG", str(cfg))
        return pools_file

    def s3_endpoint_for(self, host: Host, s3_url: str, *others: Host) -> str:
        """An S3 endpoint that ``host`` (in its namespace) and this side both reach, through the
        veth link only: dropping the link cuts the host off the store too. Hosts in ``others``
        (each in its own namespace) get a route to it over their own link."""
        target = s3_url.split("//", 1)[1].rsplit(":", 1)
        fwd = Forwarder((host.netns.outer, 0), (target[0], int(target[1])))
        self.forwarders.append(fwd)
        for other in others:
            other.netns.exec("ip", "route", "add", f"{host.netns.outer}/32", "via", other.netns.outer)
        return f"http://{host.netns.outer}:{fwd.sock.getsockname()[1]}"

    def job_pids(self, run_id: str, host: "Host | None" = None) -> list[int]:
        """Processes of a job on any host (or on ``host`` only: those that name its root folder):
        its agents (attempt folder in the command line) and runs (LAUNCH_JOB_ID in the environment)."""
        pids = set(pids_with(f"attempts/{run_id}/".encode(), ("cmdline",))) | set(pids_with(f"LAUNCH_JOB_ID={run_id}\0".encode()))
        if host is not None:
            pids &= set(pids_with(str(host.root).encode(), ("environ", "cmdline")))
        return sorted(pids)

    def close(self) -> None:
        for h in self.hosts.values():
            try:
                h.kill()
            except AssertionError:
                pass
        for f in self.forwarders:
            f.close()
        for ns in self.namespaces:
            ns.delete()


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("ssh-client") / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    return key


@pytest.fixture
def ssh_lab(tmp_path, client_key, monkeypatch):
    if not (Path(SSHD).exists() and Path(SFTP_SERVER).exists()):
        raise RuntimeError(f"{SSHD} or {SFTP_SERVER} missing: install openssh-server "
                           "(bash scripts/install-system-deps.sh, or make test)")
    lab = Lab(tmp_path / "lab", client_key, monkeypatch)
    lab.dir.mkdir()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def image_python(tmp_path_factory) -> str:
    """A GPU image's Python: torch, torchvision, numpy (and what they need), no boto3."""
    return make_image_python(tmp_path_factory.mktemp("image") / "venv", ["torch", "torchvision", "numpy"])


@pytest.fixture
def launch_cli():
    """``launch_cli("up", ...)``: the real ``launch`` command, in this test's environment."""

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([LAUNCH, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"launch {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    run.path = LAUNCH
    run.status = lambda job: json.loads(run("status", str(job), "--json").stdout)[0]
    return run
