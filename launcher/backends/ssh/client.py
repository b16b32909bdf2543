"""One SSH connection to one host, on Fabric, with a socket that notices a dead link in seconds.

The TCP socket is ours: keepalive probes every ``keepalive`` seconds and ``TCP_USER_TIMEOUT`` (data
unacknowledged that long kills the connection), plus SSH-level keepalives so an idle connection
still sends something. Plain Fabric on a silently dropped link hangs for the kernel default (about
15 minutes); with these options the drop surfaces within a few seconds.

Every command runs with a deadline. A network failure raises :class:`Unreachable` (a
``HostLostError``); a command that exits non-zero raises :class:`CommandError` naming the command,
its exit code and the last lines of its output. Connections open lazily and close idempotently.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fabric
import paramiko

from launcher.backends.base import BackendError, HostLostError
from launcher.backends.ssh.pools import HostSpec

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)  # Linux; 18 in <linux/tcp.h>
TAIL_LINES = 20


class Unreachable(HostLostError):
    """The host did not answer (refused, timed out, connection dropped)."""


class AuthError(BackendError):
    """The host answered but refused our credentials."""


class CommandError(BackendError):
    def __init__(self, host: str, command: str, exit_code: int | None, output: str):
        self.host, self.command, self.exit_code, self.output = host, command, exit_code, output
        tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
        code = "no exit status" if exit_code is None else f"exit code {exit_code}"
        super().__init__(f"{host}: `{_short(command)}` failed ({code}); last lines:\n{tail}")


class CommandTimeout(BackendError):
    """The command did not finish within its deadline; the connection itself may be fine."""


@dataclass
class Result:
    exit_code: int | None
    stdout: str
    stderr: str


def _short(command: str, limit: int = 200) -> str:
    return command if len(command) <= limit else command[:limit] + "..."


def configure_socket(sock: socket.socket, keepalive: float, user_timeout: float) -> None:
    """TCP keepalive (idle, interval: ``keepalive`` s; 3 probes) and TCP_USER_TIMEOUT."""
    k = max(1, int(keepalive))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt, value in (("TCP_KEEPIDLE", k), ("TCP_KEEPINTVL", k), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(user_timeout * 1000))
    except OSError:  # not Linux: keepalive alone has to do
        pass


def open_socket(host: str, port: int, timeout: float, keepalive: float, user_timeout: float) -> socket.socket:
    """A connected TCP socket with our options set before the handshake."""
    last: OSError | None = None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            configure_socket(sock, keepalive, user_timeout)
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError(f"cannot resolve {host}")


class Remote:
    """A lazily opened, reusable connection to one host. ``close()`` is safe to call twice."""

    def __init__(self, host: HostSpec, *, connect_timeout: float = 5.0, keepalive: float = 2.0,
                 user_timeout: float = 5.0):
        self.host = host
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.user_timeout = user_timeout
        self._conn: fabric.Connection | None = None
        self._sftp = None

    @property
    def label(self) -> str:
        return self.host.name

    # --- connection ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def open(self, timeout: float | None = None) -> "Remote":
        """Connect if not connected. Raises Unreachable or AuthError."""
        if self.connected:
            return self
        self.close()
        timeout = timeout or self.connect_timeout
        try:
            sock = open_socket(self.host.hostname, self.host.port, timeout, self.keepalive, self.user_timeout)
        except OSError as e:
            raise Unreachable(f"{self.label}: cannot connect to {self.host.hostname}:{self.host.port}: {e}") from None
        kwargs = {"sock": sock, "banner_timeout": timeout, "auth_timeout": timeout,
                  "look_for_keys": not self.host.identity_file}
        if self.host.identity_file:
            kwargs["key_filename"] = self.host.identity_file
        if self.host.password:
            kwargs["password"] = self.host.password
        conn = fabric.Connection(self.host.hostname, user=self.host.user, port=self.host.port,
                                 connect_timeout=int(max(1, timeout)), connect_kwargs=kwargs,
                                 config=fabric.Config(overrides={"load_ssh_configs": False}))
        try:
            conn.open()
        except paramiko.AuthenticationException as e:
            sock.close()
            raise AuthError(f"{self.label}: authentication as {self.host.user!r} failed: {e}") from None
        except (OSError, EOFError, paramiko.SSHException) as e:
            sock.close()
            raise Unreachable(f"{self.label}: SSH handshake failed: {e or type(e).__name__}") from None
        conn.transport.set_keepalive(max(1, int(self.keepalive)))
        self._conn = conn
        return self

    def close(self) -> None:
        """Close the connection and its SFTP session; quiet when already closed."""
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transport(self) -> paramiko.Transport:
        self.open()
        return self._conn.transport

    # --- commands ------------------------------------------------------------------------------
    def _channel(self, command: str, timeout: float) -> paramiko.Channel:
        try:
            chan = self._transport().open_session(timeout=timeout)
            chan.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise Unreachable(f"{self.label}: connection lost: {e or type(e).__name__}") from None
        return chan

    def run(self, command: str, *, timeout: float = 30.0, stdin: bytes | None = None,
            check: bool = True) -> Result:
        """Run ``command`` (a bash-compatible line) and wait for it, at most ``timeout`` seconds.
        Raises Unreachable when the link dies, CommandTimeout past the deadline, CommandError for
        a non-zero exit when ``check``."""
        deadline = time.monotonic() + timeout
        chan = self._channel(command, timeout)
        out, err = bytearray(), bytearray()
        try:
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not self.connected:
                    raise Unreachable(f"{self.label}: connection lost while running `{_short(command, 60)}`")
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"{self.label}: `{_short(command, 60)}` still running after {timeout:.0f} s")
                chan.status_event.wait(0.02)
            code = chan.recv_exit_status()
            if code == -1:  # closed without an exit status: sshd or the link went away
                raise Unreachable(f"{self.label}: connection lost while running `{_short(command, 60)}`")
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise Unreachable(f"{self.label}: connection lost: {e or type(e).__name__}") from None
        finally:
            chan.close()
        res = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and code != 0:
            raise CommandError(self.label, command, code, res.stdout + res.stderr)
        return res

    def stream(self, command: str, *, idle: float = 1.0) -> Iterator[str]:
        """Yield the output lines of ``command`` as they come; return when it ends. Raises
        Unreachable when the connection dies before the command's exit status arrives."""
        chan = self._channel(command, self.connect_timeout)
        chan.settimeout(idle)
        buf = b""
        try:
            while True:
                try:
                    chunk = chan.recv(1 << 16)
                except socket.timeout:
                    if not self.connected:
                        raise Unreachable(f"{self.label}: connection lost while streaming") from None
                    continue
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")
            chan.status_event.wait(1.0)
            if not chan.exit_status_ready() or chan.exit_status == -1:
                self.close()
                raise Unreachable(f"{self.label}: connection lost while streaming")
        except (OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise Unreachable(f"{self.label}: connection lost: {e or type(e).__name__}") from None
        finally:
            chan.close()

    # --- files ---------------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or not self.connected:
            try:
                self._sftp = self.open()._conn.sftp()
            except (OSError, EOFError, paramiko.SSHException) as e:
                self.close()
                raise Unreachable(f"{self.label}: SFTP failed: {e or type(e).__name__}") from None
        return self._sftp

    @contextmanager
    def file_errors(self, what: str) -> Iterator[None]:
        """Turn SFTP failures into Unreachable (the link died) or BackendError (it did not)."""
        try:
            yield
        except BackendError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            if not self.connected or isinstance(e, (EOFError, paramiko.SSHException)):
                self.close()
                raise Unreachable(f"{self.label}: connection lost {what}: {e or type(e).__name__}") from None
            raise BackendError(f"{self.label}: failed {what}: {e}") from None

    def put_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically (temp file, then rename). The file has ``mode``
        before any byte is written, so a 0600 secret is never readable by others."""
        tmp = f"{path}.tmp"
        with self.file_errors(f"writing {path}"):
            sftp = self.sftp()
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)
                f.write(data)
            sftp.posix_rename(tmp, path)

    def get_bytes(self, path: str) -> bytes:
        with self.file_errors(f"reading {path}"):
            with self.sftp().open(path, "rb") as f:
                return f.read()


def q(value: str) -> str:
    """Quote one word for the remote shell."""
    return shlex.quote(str(value))
