"""The SSH socket notices a dead link in seconds; failed commands say what failed."""

from __future__ import annotations

import socket

import pytest

from launcher.backends.base import HostLostError
from launcher.backends.ssh.client import TCP_USER_TIMEOUT, CommandError, Remote, Unreachable, open_socket
from launcher.backends.ssh.pools import HostSpec


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s.getsockname()[1]


def test_keepalive_and_user_timeout_are_set_on_the_socket(listener):
    sock = open_socket("127.0.0.1", listener, timeout=2, keepalive=2, user_timeout=5)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT) == 5000
    finally:
        sock.close()


def test_refused_connection_is_a_lost_host():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    remote = Remote(HostSpec("gone", "127.0.0.1", port, "root"), connect_timeout=1)
    with pytest.raises(Unreachable, match="gone: cannot connect") as e:
        remote.open()
    assert isinstance(e.value, HostLostError)
    remote.close()
    remote.close()  # closing twice is quiet


def test_a_failed_command_names_command_exit_code_and_last_lines():
    output = "\n".join(f"line {i}" for i in range(50))
    e = CommandError("host-a", "bash bootstrap.sh /root", 3, output)
    assert "host-a: `bash bootstrap.sh /root` failed (exit code 3)" in str(e)
    assert "line 49" in str(e) and "line 29" not in str(e)
