"""SSH node pools, read from SkyPilot's own file so users define their hosts once.

``~/.sky/ssh_node_pools.yaml`` (``LAUNCH_SSH_POOLS`` overrides the path)::

    lab:                              # used as --infra ssh/lab
      user: alice                     # pool-level defaults
      identity_file: ~/.ssh/lab_key
      hosts:
        - gpu-box-1                   # an alias from ~/.ssh/config, or an IP / host name
        - ip: 10.0.0.12               # a mapping with per-host overrides
          user: bob
          identity_file: ~/.ssh/bob_key
          password: hunter2           # used to log in; never stored or logged

A host name that matches a ``Host`` stanza of ``~/.ssh/config`` (``LAUNCH_SSH_CONFIG`` overrides
the path) takes its ``HostName``, ``Port``, ``User`` and ``IdentityFile`` from there, as ``ssh``
would; what the stanza leaves unset comes from the host's mapping, then the pool's defaults. A
mapping may also carry ``port`` (an extension SkyPilot ignores). Reading is side-effect free and
safe to repeat.
"""

from __future__ import annotations

import fnmatch
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import InfraError

DEFAULT_POOLS_PATH = "~/.sky/ssh_node_pools.yaml"
DEFAULT_SSH_CONFIG = "~/.ssh/config"
_HOST_KEYS = {"ip", "user", "identity_file", "password", "port"}


@dataclass(frozen=True)
class HostSpec:
    """One host of a pool, resolved: where to connect and as whom. ``password`` never leaves the
    process (it is not part of :meth:`public`, which is what handles store)."""

    name: str  # as written in the pool file (alias or address)
    hostname: str
    port: int = 22
    user: str = ""
    identity_file: str = ""
    password: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        """The identity of the machine for leases: ``user@hostname:port``."""
        return f"{self.user}@{self.hostname}:{self.port}"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "hostname": self.hostname, "port": self.port,
                "user": self.user, "identity_file": self.identity_file}


def pools_path() -> Path:
    return Path(os.environ.get("LAUNCH_SSH_POOLS") or DEFAULT_POOLS_PATH).expanduser()


def ssh_config_path() -> Path:
    return Path(os.environ.get("LAUNCH_SSH_CONFIG") or DEFAULT_SSH_CONFIG).expanduser()


def load_ssh_config(path: Path | None = None):
    """The parsed OpenSSH client config (an empty one when the file does not exist)."""
    import paramiko

    path = path or ssh_config_path()
    if path.is_file():
        return paramiko.SSHConfig.from_path(str(path))
    return paramiko.SSHConfig.from_text("")


def _has_stanza(cfg, name: str) -> bool:
    """True when a ``Host`` pattern other than ``*`` matches ``name``."""
    return any(p != "*" and fnmatch.fnmatch(name, p) for p in cfg.get_hostnames())


def resolve_host(entry: str | dict[str, Any], defaults: dict[str, Any], cfg, where: str) -> HostSpec:
    """One ``hosts`` entry -> a HostSpec. ``where`` names the pool for error messages."""
    if isinstance(entry, str):
        entry = {"ip": entry}
    if not isinstance(entry, dict) or not entry.get("ip"):
        raise InfraError(f"{where}: each host is a string or a mapping with 'ip', got {entry!r}")
    unknown = set(entry) - _HOST_KEYS
    if unknown:
        raise InfraError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in host {entry['ip']!r}"
                         f" (valid: {', '.join(sorted(_HOST_KEYS))})")
    name = str(entry["ip"])
    ssh = cfg.lookup(name) if _has_stanza(cfg, name) else {}
    user = ssh.get("user") or entry.get("user") or defaults.get("user") or getpass.getuser()
    identities = ssh.get("identityfile") or []
    identity = (identities[0] if identities else "") or entry.get("identity_file") or defaults.get("identity_file") or ""
    port = ssh.get("port") or entry.get("port") or 22
    return HostSpec(
        name=name,
        hostname=ssh.get("hostname") or name,
        port=int(port),
        user=str(user),
        identity_file=os.path.expanduser(str(identity)) if identity else "",
        password=str(entry.get("password") or defaults.get("password") or ""),
    )


def parse_pools(doc: Any, where: str, cfg) -> dict[str, list[HostSpec]]:
    """The pools of a parsed YAML document: pool name -> its hosts, in file order."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InfraError(f"{where}: expected a mapping of pool name -> {{hosts: [...]}}")
    pools = {}
    for name, body in doc.items():
        if not isinstance(body, dict) or not isinstance(body.get("hosts"), list) or not body["hosts"]:
            raise InfraError(f"{where}: pool {name!r} needs a non-empty 'hosts' list")
        defaults = {k: body.get(k) for k in ("user", "identity_file", "password") if body.get(k)}
        pools[str(name)] = [resolve_host(h, defaults, cfg, f"{where}: pool {name!r}") for h in body["hosts"]]
    return pools


def load_pools(path: Path | None = None) -> dict[str, list[HostSpec]]:
    path = path or pools_path()
    if not path.is_file():
        raise InfraError(f"no SSH node pools file at {path}; define your hosts there "
                         f"(SkyPilot's format) or point LAUNCH_SSH_POOLS at one")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InfraError(f"{path}: invalid YAML: {e}") from None
    return parse_pools(doc, str(path), load_ssh_config())


def load_pool(name: str, path: Path | None = None) -> list[HostSpec]:
    """The hosts of pool ``name``; InfraError naming the file and the pools it has otherwise."""
    path = path or pools_path()
    pools = load_pools(path)
    if name not in pools:
        have = ", ".join(sorted(pools)) or "none"
        raise InfraError(f"no SSH pool {name!r} in {path} (pools there: {have})")
    return pools[name]
