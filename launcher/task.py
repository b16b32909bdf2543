"""SkyPilot task YAML -> pydantic models.

The YAML is SkyPilot's task format, used unchanged; ``launch`` supports the subset below. Every
error names the file, the line, the key and (for a misspelt key) the nearest valid one::

    Invalid task YAML tasks/x.yaml line 7: unknown key 'acelerators' in resources (did you mean 'accelerators'?)
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from launcher import contract
from launcher.errors import TaskError

LOCAL_INFRAS = ("local", "ssh", "vast", "kaggle")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class JobRecovery(_Model):
    strategy: str | None = None  # FAILOVER | EAGER_NEXT_REGION (SkyPilot); we fail over in order
    max_restarts_on_errors: int = Field(0, ge=0)
    recover_on_exit_codes: list[int] | int | None = None


class Resources(_Model):
    """One resources option. ``any_of``/``ordered`` hold further options that inherit the
    fields set here."""

    infra: str | None = None
    accelerators: Union[str, dict[str, int | float | None], list[str]] | None = None
    use_spot: bool | None = None
    job_recovery: Union[str, JobRecovery] | None = None
    disk_size: Union[int, str] | None = None  # GB, or a size such as "256GB"
    cpus: Union[int, float, str] | None = None
    memory: Union[int, float, str] | None = None
    instance_type: str | None = None
    image_id: str | None = None
    ports: Union[int, str, list[Union[int, str]]] | None = None
    labels: dict[str, str] | None = None
    any_of: list[Resources] | None = None
    ordered: list[Resources] | None = None

    @field_validator("accelerators")
    @classmethod
    def _accelerators(cls, v):
        if isinstance(v, str):
            name, _, count = v.partition(":")
            if not name or (count and not re.fullmatch(r"\d+(\.\d+)?", count)):
                raise ValueError(f"expected NAME or NAME:COUNT (e.g. 'V100:1'), got {v!r}")
        return v

    @field_validator("disk_size")
    @classmethod
    def _disk_size(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive number of GB")
        if isinstance(v, str) and not re.fullmatch(r"[0-9]+([kKmMgGtTpP][bBiI])?", v):
            raise ValueError(f"expected a size such as 100 or '256GB', got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_list(self):
        if self.any_of and self.ordered:
            raise ValueError("use either 'any_of' or 'ordered', not both")
        return self

    def options(self) -> list[dict[str, Any]]:
        """The concrete options to try, in order, each with the base fields merged in."""
        base = self.model_dump(exclude_none=True, exclude={"any_of", "ordered"})
        alts = self.ordered or self.any_of
        if not alts:
            return [base]
        return [{**base, **alt.model_dump(exclude_none=True)} for alt in alts]

    def recovery(self) -> JobRecovery:
        jr = self.job_recovery
        if jr is None:
            return JobRecovery()
        if isinstance(jr, str):
            return JobRecovery(strategy=jr)
        return jr

    def accelerator_summary(self) -> str:
        acc = self.accelerators
        if acc is None:
            return "-"
        if isinstance(acc, dict):
            return ",".join(f"{k}:{v}" if v else k for k, v in acc.items())
        if isinstance(acc, list):
            return "|".join(acc)
        return acc


class StorageMount(_Model):
    """A storage file mount: ``/checkpoints: {source: s3://bucket/prefix, mode: MOUNT_CACHED}``."""

    name: str | None = None
    source: Union[str, list[str]] | None = None
    store: str | None = None
    mode: Literal["MOUNT", "COPY", "MOUNT_CACHED"] | None = None
    persistent: bool | None = None


class Task(_Model):
    name: str | None = None
    workdir: str | None = None
    num_nodes: int = Field(1, ge=1)
    resources: Resources = Field(default_factory=Resources)
    envs: dict[str, Union[str, int, float, bool, None]] = Field(default_factory=dict)
    secrets: dict[str, Union[str, int, float, None]] = Field(default_factory=dict)
    file_mounts: dict[str, Union[str, StorageMount]] = Field(default_factory=dict)
    setup: str | None = None
    run: str | None = None

    # Where the task came from (not part of the YAML).
    path: str | None = Field(None, exclude=True)

    @field_validator("envs", "secrets")
    @classmethod
    def _env_names(cls, v):
        for k in v:
            if not _ENV_NAME.match(str(k)):
                raise ValueError(f"invalid environment variable name {k!r}")
        return v

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return Path(self.path).stem if self.path else "task"

    def checkpoint_mount(self) -> StorageMount | None:
        """The storage mount declared at the contract's checkpoint path, if any."""
        m = self.file_mounts.get(contract.CHECKPOINT_MOUNT)
        return m if isinstance(m, StorageMount) else None

    def env_strings(self) -> dict[str, str]:
        return {k: "" if v is None else _scalar(v) for k, v in self.envs.items()}

    def secret_strings(self) -> dict[str, str]:
        return {k: "" if v is None else _scalar(v) for k, v in self.secrets.items()}

    def resolved_workdir(self) -> str | None:
        """The workdir as an absolute local path. As with `sky launch`, a relative workdir is
        relative to the directory the command runs in (``launch up`` makes it absolute)."""
        if not self.workdir:
            return None
        return os.path.abspath(os.path.expanduser(self.workdir))


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --- loading with line numbers ----------------------------------------------------------------


def _marks(node: yaml.Node, path: tuple = ()) -> dict[tuple, tuple[int, str | None]]:
    """Map each path in the document to (line, key) of where it is written."""
    out: dict[tuple, tuple[int, str | None]] = {}
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = knode.value
            out[path + (key,)] = (knode.start_mark.line + 1, key)
            out.update(_marks(vnode, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = (item.start_mark.line + 1, None)
            out.update(_marks(item, path + (i,)))
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the model that sits at ``loc`` (for did-you-mean)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int) or cur is None:
            continue
        f = getattr(cur, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        cur = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            for c in (cand, *getattr(cand, "__args__", ())):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    cur = c
    return [n for n, f in getattr(cur, "model_fields", {}).items() if not f.exclude] if cur else []


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (e.g. 'StorageMount', 'str') from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or not (p[:1].isupper() or p in (
        "str", "int", "float", "bool", "list[str]", "dict[str,union[int,float,none]]")) )


def _format_error(err: dict, marks: dict, where: str, model: type[BaseModel]) -> str:
    loc = _clean_loc(tuple(err["loc"]))
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in marks:
            line = marks[loc[:n]][0]
            break
    at = f"{where} line {line}" if line else where
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        bad = str(loc[-1])
        parent = loc[:-1]
        valid = _fields_at(model, parent)
        hint = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
        scope = f" in {'.'.join(str(p) for p in parent)}" if parent else ""
        msg = f"unknown key '{bad}'{scope}"
        if hint:
            msg += f" (did you mean '{hint[0]}'?)"
        elif valid:
            msg += f" (valid keys: {', '.join(valid)})"
        return f"Invalid task YAML {at}: {msg}"
    return f"Invalid task YAML {at}: {key}: {err['msg']}"


def parse_task(text: str, where: str = "<string>") -> Task:
    """Parse YAML text into a Task; raises TaskError with file and line on any problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise TaskError(f"Invalid task YAML {where}{line}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TaskError(f"Invalid task YAML {where}: expected a mapping at the top level")
    marks = _marks(node) if node is not None else {}
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        # Prefer unknown-key errors: they are what users most often get wrong.
        errors.sort(key=lambda er: er["type"] != "extra_forbidden")
        raise TaskError(_format_error(errors[0], marks, where, Task)) from None
    return task


def load_task(path: str | os.PathLike) -> Task:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise TaskError(f"Task file not found: {p}") from None
    except OSError as e:
        raise TaskError(f"Cannot read task file {p}: {e.strerror}") from None
    task = parse_task(text, where=str(path))
    task.path = str(p)
    return task


def parse_env_overrides(pairs: list[str] | tuple[str, ...], what: str = "--env") -> dict[str, str]:
    """``["A=1", "B=x=y"] -> {"A": "1", "B": "x=y"}``; ``KEY`` alone takes the caller's env."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not _ENV_NAME.match(key):
            raise TaskError(f"{what} {key!r}: expected KEY=VALUE with a valid variable name")
        if not eq:
            if key not in os.environ:
                raise TaskError(f"{what} {key}: not set in your environment; use {key}=VALUE")
            value = os.environ[key]
        out[key] = value
    return out
