"""What a checkpoint holds, and how it is copied to host memory before it is written.

A checkpoint is one dict saved with ``torch.save`` into ``state.pt``. Its top-level keys are the
constants below, so the writer, the loader and the tests never disagree on a spelling. Everything
the next step depends on is in it: resuming from it must be bit-identical to never having stopped.

The dict is loaded with ``torch.load(weights_only=True)``: a checkpoint from a shared bucket is
never allowed to run code. So its leaves are tensors, numbers, strings, booleans, None, and
lists/tuples/dicts of those; that is also what a trainer may put in its ``extra`` state.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import torch

STATE_FORMAT = 1
STATE_FILE = "state.pt"

KEY_FORMAT = "format"
KEY_MODEL = "model"  # model.state_dict()
KEY_OPTIMIZER = "optimizer"  # optimizer.state_dict()
KEY_SCHEDULER = "scheduler"  # LR scheduler state_dict(), or None
KEY_SCALER = "scaler"  # AMP GradScaler state_dict(), or None
KEY_RNG = "rng"  # python / numpy / torch / cuda generator states, see capture_rng()
KEY_SAMPLER = "sampler"  # ResumableSampler.state_dict(): epoch and position inside it
KEY_LOOP = "loop"  # counters, see LOOP_* below
KEY_EXTRA = "extra"  # trainer-specific state (a controller's threshold, a curriculum stage, ...)
KEY_HISTORY = "history"  # one dict per finished epoch (what history.csv shows)
KEY_METRICS = "metrics"  # the latest evaluation metrics
KEY_BEST = "best"  # {"key", "mode", "value", "step", "epoch"} of the best evaluation so far
KEY_WALL_TIME = "wall_time"  # seconds of training summed over every attempt
KEY_CONFIG = "config"  # the config dict the run was started with (to explain a mismatch)
KEY_FINGERPRINT = "fingerprint"  # launcher.contract.fingerprint(config)

LOOP_EPOCH = "epoch"  # epochs finished
LOOP_STEP = "step"  # optimizer steps taken in total
LOOP_BATCH = "batch_in_epoch"  # steps taken in the current epoch
LOOP_DONE = "done"  # the run finished: a rerun only rewrites its outputs
LOOP_ATTEMPT = "attempt"  # the attempt that wrote the checkpoint
LOOP_METRICS_SEQ = "metrics_seq"  # lines in metrics.jsonl at the time of the checkpoint
LOOP_RUNNING = "running"  # per-epoch sums behind the running means (train loss, ...)
LOOP_METRICS_STEP = "metrics_step"  # the step at which the latest evaluation was made
LOOP_EPOCH_START_TIME = "epoch_start_time"  # wall time (all attempts) when the current epoch began
LOOP_WORLD = "world_size"  # processes that trained (1 without torchrun; absent in older checkpoints)

# Under torchrun, ranks 1.. have their RNG state in a file of their own next to state.pt
# (launcher.contract.rank_rng_name), listed in the manifest like every file of the folder.


def to_host(obj: Any) -> Any:
    """A deep copy of ``obj`` whose tensors are detached CPU copies.

    This is the snapshot an async save writes from: the loop may change every parameter and
    optimizer buffer in place right after it returns, and a background thread must not see that.
    CPU tensors are cloned too (``copy=True``), since ``state_dict()`` returns live references.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_host(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_host(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise TypeError(
        f"cannot checkpoint a {type(obj).__name__}: state holds tensors, numbers, strings and "
        f"lists/tuples/dicts of them (so that it loads with weights_only=True)"
    )


def capture_rng() -> dict[str, Any]:
    """The state of every random generator a training step may draw from.

    The sampler has its own generator (in its own state); these are the global ones used by
    dropout, augmentations and anything else. numpy's state is stored as plain values and a tensor
    so that it loads with ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np
    except ImportError:  # numpy is optional for a trainer that never uses it
        np = None
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng`` took. A CUDA state is restored only where CUDA is present
    with the same number of devices (a resume on a CPU machine cannot use it anyway)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"],
                             s["has_gauss"], s["cached"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
