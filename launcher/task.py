"""SkyPilot task YAML -> pydantic models.

The YAML is SkyPilot's task format, used unchanged; ``launch`` supports the subset below. Every
error names the file, the line, the key and (for a misspelt key) the nearest valid one::

    Invalid task YAML tasks/x.yaml line 7: unknown key 'acelerators' in resources (did you mean 'accelerators'?)

Types and shapes are the models' here; each field's value rule is in ``launcher.task_rules`` and
the checks across fields in ``launcher.task_checks`` (together as strict as SkyPilot, offline).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictInt, StrictStr,
                      ValidationError, field_validator, model_validator)

from launcher import contract
from launcher import task_rules as rules
from launcher.errors import TaskError

LOCAL_INFRAS = ("local", "ssh", "vast", "kaggle")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _rule(fn):
    """A pydantic after-validator from a rule of ``task_rules`` (an explicit null passes)."""
    return lambda v: v if v is None else fn(v)


class JobRecovery(_Model):
    strategy: Any = None  # FAILOVER | EAGER_NEXT_REGION (SkyPilot); we fail over in order
    max_restarts_on_errors: StrictInt = Field(0, ge=0)
    recover_on_exit_codes: Any = None

    _strategy = field_validator("strategy")(_rule(rules.recovery_strategy))

    @field_validator("recover_on_exit_codes")
    @classmethod
    def _codes(cls, v):
        return rules.exit_codes(v)  # an explicit null too: SkyPilot's schema has no null here


# Keys an any_of/ordered option may set to null (SkyPilot validates options without dropping nulls).
_NULL_IN_OPTION = ("ports", "image_id")


class Resources(_Model):
    """One resources option. ``any_of``/``ordered`` hold further options that inherit the
    fields set here. Values are kept as written (backends read them); the rules only check."""

    infra: Any = None
    accelerators: Any = None
    use_spot: StrictBool | None = None
    job_recovery: Union[StrictStr, JobRecovery] | None = None
    disk_size: Any = None  # GB, or a size such as "256GB"
    cpus: Any = None
    memory: Any = None
    instance_type: StrictStr | None = None
    image_id: Any = None
    ports: Any = None
    labels: dict[str, StrictStr] | None = None
    any_of: list[Resources] | None = None
    ordered: list[Resources] | None = None

    _infra = field_validator("infra")(_rule(rules.infra))
    _accelerators = field_validator("accelerators")(_rule(rules.accelerators))
    _disk_size = field_validator("disk_size")(_rule(rules.disk_size))
    _cpus = field_validator("cpus")(_rule(rules.cpus))
    _memory = field_validator("memory")(_rule(rules.memory))
    _image_id = field_validator("image_id")(_rule(rules.image_id))
    _ports = field_validator("ports")(_rule(rules.ports))

    @field_validator("job_recovery")
    @classmethod
    def _strategy(cls, v):
        return rules.recovery_strategy(v) if isinstance(v, str) else v

    @field_validator("any_of", "ordered", mode="before")
    @classmethod
    def _options(cls, v):
        """What SkyPilot's schema allows in an option: no nesting, one accelerator, no nulls."""
        for i, item in enumerate(v if isinstance(v, list) else []):
            if not isinstance(item, dict):
                continue  # the type check names it
            if nested := [k for k in ("any_of", "ordered") if k in item]:
                raise ValueError(f"option {i} holds '{nested[0]}'; options cannot be nested")
            if nulls := [k for k, x in item.items() if x is None and k not in _NULL_IN_OPTION]:
                raise ValueError(f"option {i}: '{nulls[0]}' is null; leave the key out")
            if item.get("accelerators") is not None:
                try:
                    rules.accelerators(item["accelerators"], in_option=True)
                except ValueError as e:
                    raise ValueError(f"option {i}: accelerators: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_list(self):
        if self.any_of and self.ordered:
            raise ValueError("use either 'any_of' or 'ordered', not both")
        n = _accelerator_count(self.accelerators)
        if n > 1 and self.ordered:
            raise ValueError("several accelerators cannot go with 'ordered'; list them as options")
        if n > 1 and self.any_of and isinstance(self.accelerators, list):
            raise ValueError("an ordered list of accelerators cannot go with 'any_of'")
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


def _accelerator_count(acc: Any) -> int:
    """How many accelerator choices a value names (SkyPilot dedupes a list's names)."""
    if isinstance(acc, (dict, list)):
        return len(set(acc))
    return 0 if acc is None else 1


class StorageMount(_Model):
    """A storage file mount: ``/checkpoints: {source: s3://bucket/prefix, mode: MOUNT_CACHED}``."""

    name: StrictStr | None = None
    source: Union[StrictStr, list[StrictStr]] | None = None
    store: Any = None
    mode: Any = None  # MOUNT | COPY | MOUNT_CACHED, any case
    persistent: StrictBool | None = None

    _store = field_validator("store")(_rule(rules.storage_store))
    _mode = field_validator("mode")(_rule(rules.storage_mode))


class Task(_Model):
    name: Any = None
    workdir: StrictStr | None = None
    num_nodes: StrictInt = Field(1, ge=1)
    resources: Resources = Field(default_factory=Resources)
    envs: dict[Any, Any] = Field(default_factory=dict)
    secrets: dict[Any, Any] = Field(default_factory=dict)
    file_mounts: dict[StrictStr, Union[StrictStr, StorageMount]] = Field(default_factory=dict)
    setup: StrictStr | None = None
    run: StrictStr | None = None

    # Where the task came from (not part of the YAML).
    path: str | None = Field(None, exclude=True)
    _marks: dict = PrivateAttr(default_factory=dict)
    _where: str = PrivateAttr("<string>")

    _name = field_validator("name")(_rule(rules.task_name))

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data):
        """A key with no value is as good as absent at the top level (SkyPilot's schema)."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @field_validator("envs", "secrets", mode="before")
    @classmethod
    def _mapping(cls, v):
        # Stricter: SkyPilot's list form of secrets names managed secrets, which need its store.
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of NAME: value, got {v!r}")
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


def _marks(node: yaml.Node, path: tuple = (),
           dups: list | None = None) -> dict[tuple, tuple[int, str | None]]:
    """Map each path in the document to (line, key) of where it is written; a key written twice
    in one mapping goes into ``dups``."""
    out: dict[tuple, tuple[int, str | None]] = {}
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = knode.value
            if path + (key,) in out and dups is not None:
                dups.append((path + (key,), knode.start_mark.line + 1))
            out[path + (key,)] = (knode.start_mark.line + 1, key)
            out.update(_marks(vnode, path + (key,), dups))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = (item.start_mark.line + 1, None)
            out.update(_marks(item, path + (i,), dups))
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


_UNION_TAGS = ("str", "int", "float", "bool", "list[str]", "JobRecovery", "StorageMount", "Resources")


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (e.g. 'StorageMount', 'str') from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or p not in _UNION_TAGS)


def _line(marks: dict, loc: tuple) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in marks:
            return marks[loc[:n]][0]
    return None


def refusal(where: str, marks: dict, loc: tuple, msg: str) -> TaskError:
    """``Invalid task YAML FILE line N: KEY: MSG`` as one line."""
    line = _line(marks, loc)
    at = f"{where} line {line}" if line else where
    key = ".".join(str(p) for p in loc)
    msg = " ".join(str(msg).split())
    return TaskError(f"Invalid task YAML {at}: {key + ': ' if key else ''}{msg}")


def _format_error(err: dict, marks: dict, where: str, model: type[BaseModel]) -> TaskError:
    loc = _clean_loc(tuple(err["loc"]))
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
        return _unknown(where, marks, loc, msg)
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] != "value_error" and "input" in err:
        msg += f", got {_short(err['input'])}"
    return refusal(where, marks, loc or ("(top level)",), msg)


def _unknown(where: str, marks: dict, loc: tuple, msg: str) -> TaskError:
    line = _line(marks, loc)
    return TaskError(f"Invalid task YAML {where}{f' line {line}' if line else ''}: {msg}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """PyYAML's own words on one line, with the line: its problem, or its reader's reason."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(e, "position", None), int):  # a ReaderError: a character YAML refuses
        line = text[:e.position].count("\n") + 1
    else:
        line = None
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
    if isinstance(getattr(e, "character", None), (str, int)) and getattr(e, "reason", None):
        char = e.character if isinstance(e.character, int) else ord(e.character)
        problem += f" (character #x{char:04x})"
    return f"{f' line {line}' if line else ''}: {' '.join(str(problem).split())}"


def _error_rank(err: dict) -> tuple:
    """Unknown keys first (what users most often get wrong), then our rules' own messages, then
    the deepest location (inside a union, the branch that got furthest)."""
    return (err["type"] != "extra_forbidden", err["type"] != "value_error", -len(err["loc"]))


def parse_task(text: str, where: str = "<string>", env_overrides: dict[str, str] | None = None) -> Task:
    """Parse YAML text into a Task; raises TaskError with file, line and key on any problem.

    As in SkyPilot, an env with no value must get one from ``env_overrides`` (``--env``); the
    overrides fill those nulls in the returned task. Checks that depend on where the task runs
    are ``check_placement``'s."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TaskError(f"Invalid task YAML {where}{_yaml_problem(e, text)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TaskError(f"Invalid task YAML {where}: expected a mapping of keys (name, resources, "
                        f"run, ...) at the top level, got {type(data).__name__}")
    dups: list = []
    marks = _marks(node, dups=dups) if node is not None else {}
    if dups:
        # Stricter: SkyPilot's YAML loader keeps the last of two equal keys and drops the first.
        loc, line = dups[0]
        raise TaskError(f"Invalid task YAML {where} line {line}: {'.'.join(map(str, loc))} is written twice")
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        raise _format_error(min(e.errors(), key=_error_rank), marks, where, Task) from None
    task._marks, task._where = marks, where
    from launcher.task_checks import check_task

    check_task(task, env_overrides or {})
    return task


def load_task(path: str | os.PathLike, env_overrides: dict[str, str] | None = None) -> Task:
    """Read and parse a task file; a file that cannot be read, is not UTF-8, is not YAML or is
    not a mapping is a TaskError of one line that names it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise TaskError(f"Task file not found: {p}") from None
    except OSError as e:
        raise TaskError(f"Cannot read task file {p}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TaskError(f"Invalid task YAML {p} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} "
                        "cannot be decoded); save the file as UTF-8") from None
    task = parse_task(text.removeprefix("\ufeff"), where=str(path), env_overrides=env_overrides)
    task.path = str(p)
    return task


def parse_env_overrides(pairs: list[str] | tuple[str, ...], what: str = "--env") -> dict[str, str]:
    """``["A=1", "B=x=y"] -> {"A": "1", "B": "x=y"}``; ``KEY`` alone takes the caller's env."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not rules.ENV_NAME.fullmatch(key):
            raise TaskError(f"{what} {key!r}: expected KEY=VALUE with a valid variable name")
        if not eq:
            if key not in os.environ:
                raise TaskError(f"{what} {key}: not set in your environment; use {key}=VALUE")
            value = os.environ[key]
        out[key] = value
    return out
