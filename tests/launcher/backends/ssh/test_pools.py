"""Pools are read from SkyPilot's ssh_node_pools.yaml, with ~/.ssh/config aliases."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from launcher.backends.ssh.pools import load_pool, load_pools, parse_pools
from launcher.errors import InfraError


@pytest.fixture
def files(tmp_path, monkeypatch):
    pools, cfg = tmp_path / "pools.yaml", tmp_path / "ssh_config"
    cfg.write_text("Host gpu-*\n  User carol\n  Port 2222\n  IdentityFile ~/.ssh/gpu_key\n"
                   "Host gpu-1\n  HostName 10.1.1.1\n"
                   "Host *\n  User nobody-from-star\n")
    monkeypatch.setenv("LAUNCH_SSH_POOLS", str(pools))
    monkeypatch.setenv("LAUNCH_SSH_CONFIG", str(cfg))
    return pools


def test_plain_strings_take_the_pool_defaults(files):
    files.write_text("lab:\n  user: alice\n  identity_file: /keys/lab\n  hosts: [1.2.3.4, box.example.org]\n")
    a, b = load_pool("lab")
    assert (a.hostname, a.port, a.user, a.identity_file) == ("1.2.3.4", 22, "alice", "/keys/lab")
    assert (b.name, b.hostname) == ("box.example.org", "box.example.org")


def test_alias_from_ssh_config_wins_over_pool_defaults(files):
    files.write_text("lab:\n  user: alice\n  identity_file: /keys/lab\n  hosts: [gpu-1]\n")
    (h,) = load_pool("lab")
    assert (h.name, h.hostname, h.port, h.user) == ("gpu-1", "10.1.1.1", 2222, "carol")
    assert h.identity_file == str(Path("~/.ssh/gpu_key").expanduser())
    assert h.key == "carol@10.1.1.1:2222"


def test_host_star_alone_does_not_make_an_alias(files):
    files.write_text("lab:\n  hosts: [5.6.7.8]\n")
    (h,) = load_pool("lab")
    assert h.user == getpass.getuser() and h.port == 22


def test_mappings_override_pool_defaults_per_host(files):
    files.write_text(
        "lab:\n  user: alice\n  password: pool-pw\n  hosts:\n"
        "    - ip: 10.0.0.1\n      user: bob\n      identity_file: /keys/bob\n      password: bob-pw\n"
        "    - ip: 10.0.0.2\n      port: 2200\n")
    a, b = load_pool("lab")
    assert (a.user, a.identity_file, a.password) == ("bob", "/keys/bob", "bob-pw")
    assert (b.user, b.port, b.password) == ("alice", 2200, "pool-pw")


def test_passwords_never_appear_in_what_handles_store(files):
    files.write_text("lab:\n  hosts:\n    - ip: 10.0.0.1\n      password: hunter2\n")
    (h,) = load_pool("lab")
    assert "hunter2" not in repr(h) and "hunter2" not in str(h.public())


def test_several_pools_in_one_file(files):
    files.write_text("a:\n  hosts: [1.1.1.1]\nb:\n  hosts: [2.2.2.2, 3.3.3.3]\n")
    assert {k: len(v) for k, v in load_pools().items()} == {"a": 1, "b": 2}


def test_unknown_pool_names_the_file_and_the_pools_there(files):
    files.write_text("lab:\n  hosts: [1.1.1.1]\n")
    with pytest.raises(InfraError, match=r"no SSH pool 'gpu'.*pools.yaml.*pools there: lab"):
        load_pool("gpu")


def test_missing_file_says_where_it_looked(files):
    with pytest.raises(InfraError, match="no SSH node pools file at .*pools.yaml"):
        load_pool("lab")


@pytest.mark.parametrize("doc, message", [
    ({"lab": {"hosts": []}}, "non-empty 'hosts'"),
    ({"lab": {"hosts": [{"user": "x"}]}}, "mapping with 'ip'"),
    ({"lab": {"hosts": [{"ip": "1.1.1.1", "pasword": "x"}]}}, "unknown key.*pasword"),
    (["not", "a", "mapping"], "expected a mapping"),
])
def test_invalid_pools_are_explained(doc, message):
    import paramiko

    with pytest.raises(InfraError, match=message):
        parse_pools(doc, "pools.yaml", paramiko.SSHConfig.from_text(""))
