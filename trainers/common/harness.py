"""The harness around a training loop: resume, checkpoints, stop notices, metrics, progress.

A trainer reads like this (see ``trainers/quickstart/train.py``)::

    with Harness.from_args(args, name=..., config=..., total_epochs=..., steps_per_epoch=...) as h:
        h.track(model=model, optimizer=opt, scheduler=sched, sampler=sampler)
        h.resume()                                  # the latest verified checkpoint, if any
        for epoch in h.epochs():
            for idx in sampler.batches(batch_size):
                ...                                 # one optimizer step
                h.step_done(n=len(idx), loss=loss.item())
            h.epoch_done(evaluate(model))
        h.finish(results)

Under ``torchrun`` (see ``trainers.common.distributed``) the same loop runs on every rank: the
sampler hands each rank its shard, ``step_done`` sums the step's sample count and scalars over
the ranks (one small all-reduce, which also carries each rank's stop verdict, so all stop at the
same step), rank 0 alone writes checkpoints (every rank's RNG state in it, one file per rank),
metrics and outputs, and a resume broadcasts rank 0's checkpoint to all.

Stops happen only at step boundaries, where the state is consistent. The last step of an epoch
is not a boundary for saving: its state is saved after the evaluation, by ``epoch_done``, so the
checkpoint of a step is always taken at one point (a later attempt may rewrite the same step).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from launcher import contract
from trainers.common import distributed
from trainers.common import state as S
from trainers.common.checkpoint import CheckpointWriter, find_resume, load_state
from trainers.common.errors import HarnessError, Preempted
from trainers.common.metrics import MetricsLog, write_history, write_results
from trainers.common.notices import REASON_DEADLINE, REASON_PREEMPTED, StopNotice
from trainers.common.progress import Progress
from trainers.common.resume import better, check_fingerprint, json_clean, manifest_best
from trainers.common.sampler import ResumableSampler

RESULTS_NAME = "results.json"
HISTORY_NAME = "history.csv"
DASHBOARD_NAME = "dashboard.png"
_FIRST_SAVE_GUESS_S = 1.0  # deadline margin for a save before any save has been timed
_FROM_ENV = object()
_UNSET = object()


class _RankMetrics(MetricsLog):
    """Ranks other than 0 keep the line count (it is in the checkpoint) but write nothing."""

    def truncate(self, step: int, seq: int) -> int:
        self.seq = seq
        return 0

    def log(self, record: dict[str, Any]) -> None:
        self.seq += 1


class Harness:
    """Owns the loop counters and everything a checkpoint holds besides the tracked objects."""

    def __init__(self, name: str, config: dict[str, Any], *, total_epochs: int,
                 steps_per_epoch: int,
                 checkpoint_dir: str | os.PathLike | None = None,
                 output_dir: str | os.PathLike | None = None, ckpt_every: int = 100,
                 log_every: int = 10, keep_last: int = 2, force_resume: bool = False,
                 best: tuple[str, str] | None = None, step_sleep: float = 0.0, plot: bool = True,
                 deadline: Any = _FROM_ENV, live_progress: bool | None = None,
                 total_steps: int | None = None):
        self.name = name
        self.config = json_clean(config)
        self.fingerprint = contract.fingerprint(self.config)
        self.ckpt_root = self.checkpoint_root(checkpoint_dir)
        self.out_dir = Path(output_dir or os.environ.get(contract.ENV_OUTPUT_DIR) or "outputs")
        self.force_resume = force_resume or os.environ.get(contract.ENV_FORCE_RESUME) == "1"
        self.total_epochs, self.steps_per_epoch = int(total_epochs), int(steps_per_epoch)
        # Epochs of different lengths (a curriculum's stages) give the total directly.
        self.total_steps = int(total_steps if total_steps is not None
                               else self.total_epochs * self.steps_per_epoch)
        self.ckpt_every, self.log_every = int(ckpt_every), int(log_every)
        if best is not None and best[1] not in ("max", "min"):
            raise ValueError(f"best mode must be 'max' or 'min', got {best[1]!r}")
        self.best_key, self.best_mode = best if best else (None, None)
        self.step_sleep, self.plot = float(step_sleep), plot
        if deadline is _FROM_ENV:
            deadline = contract.deadline_from_env()
        self.notice = StopNotice(deadline)
        self.world = distributed.world()
        if self.world.distributed and not distributed.active():
            raise HarnessError(f"started as rank {self.world.rank} of {self.world.size} (torchrun), but "
                               f"this trainer never joined the process group: it runs on one process only "
                               f"(call trainers.common.distributed.init(device) before building the harness)")
        self.main = self.world.main  # rank 0 writes checkpoints, metrics and outputs
        self.writer = CheckpointWriter(self.ckpt_root, keep_last)
        log_cls = MetricsLog if self.main else _RankMetrics
        self.metrics_log = log_cls(self.out_dir / contract.METRICS_NAME)
        self.progress = Progress(name, self.total_steps, every=log_every,
                                 live=live_progress if self.main else False,
                                 stream=None if self.main else open(os.devnull, "w"))
        self._agreed: Any = _UNSET  # the stop verdict all ranks reached at this boundary
        # Loop state (saved in KEY_LOOP and neighbours).
        self.epoch = self.step = self.batch_in_epoch = 0
        self.done = False
        self.running: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.metrics_step: int | None = None  # the step the latest evaluation was made at
        self.best: dict[str, Any] | None = None
        # The trainer's own state: keep it up to date before a save, read it after resume().
        self.extra: dict[str, Any] = {}
        env_attempt = os.environ.get(contract.ENV_ATTEMPT)
        self.attempt = int(env_attempt) if env_attempt else 1
        self._attempt_from_env = bool(env_attempt)
        self._wall_before, self._t0 = 0.0, time.perf_counter()
        self._done_wall: float | None = None
        self._last_saved_step: int | None = None
        self._boundary = time.perf_counter()
        self._epoch_wall0: float | None = None  # wall_time() when the current epoch began
        self._step_s = self._eval_s = self._snapshot_s = 0.0
        self._last_n = 0
        self.model = self.optimizer = self.scheduler = self.scaler = None
        self.sampler: ResumableSampler | None = None

    @staticmethod
    def checkpoint_root(checkpoint_dir: str | os.PathLike | None = None) -> Path:
        """The checkpoint folder a harness built with ``checkpoint_dir`` uses: the flag, else
        the environment the launcher sets, else ``./checkpoints`` (for a trainer that must look
        at its checkpoint before it can build the harness, see ``checkpoint.peek_extra``)."""
        try:
            from_env = None if checkpoint_dir else contract.checkpoint_root_from_env()
        except RuntimeError as e:  # a remote LAUNCH_CHECKPOINT_URI without a local folder
            raise HarnessError(str(e)) from e
        return Path(checkpoint_dir or from_env or "checkpoints")

    @classmethod
    def from_args(cls, args: Any, **kwargs: Any) -> "Harness":
        """Build from the flags that ``cli.add_harness_args`` defined; ``kwargs`` add the rest."""
        return cls(checkpoint_dir=args.checkpoint_dir, output_dir=args.output_dir,
                   ckpt_every=args.ckpt_every, log_every=args.log_every, keep_last=args.keep_last,
                   force_resume=args.force_resume, step_sleep=args.step_sleep,
                   plot=not args.no_plot, **kwargs)

    # --- context: the SIGTERM handler lives exactly as long as the loop ---------------------------
    def __enter__(self) -> "Harness":
        self.notice.install()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.writer.wait()  # a failing loop still lets the write in flight commit
        except Exception:
            if exc_type is None:
                raise
        finally:
            self.progress.close()
            self.metrics_log.close()
            self.notice.uninstall()

    def say(self, text: str) -> None:
        self.progress.message(text)

    def track(self, *, model, sampler: ResumableSampler, optimizer=None, scheduler=None,
              scaler=None) -> None:
        """Name the objects whose ``state_dict`` goes into every checkpoint."""
        self.model, self.sampler = model, sampler
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler

    # --- resume -----------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the latest verified checkpoint, if there is one; True when it did.

        Raises ``ResumeRefused`` when that checkpoint's config fingerprint differs, unless forced.
        Either way ``metrics.jsonl`` is cut back to what the starting point had seen.
        """
        self._require_tracked()
        found = self._find_and_load()
        if found is None:
            self.metrics_log.truncate(0, 0)
            self.say(f"no checkpoint under {self.ckpt_root}: starting from scratch "
                     f"(attempt {self.attempt})")
            return False
        step, folder, state, rngs = found
        forced = check_fingerprint(folder, state.get(S.KEY_FINGERPRINT), state.get(S.KEY_CONFIG),
                                   self.config, self.fingerprint, self.force_resume)
        if forced:
            self.say(f"resuming despite a config change ({forced}): forced")
        saved_world = int(state[S.KEY_LOOP].get(S.LOOP_WORLD, 1))
        rng = rngs[self.world.rank] if self.world.rank < len(rngs) else rngs[0]
        try:
            self._apply(state, rng)
        except (KeyError, ValueError, RuntimeError) as e:
            raise HarnessError(f"cannot load checkpoint {folder}: {e}") from e
        self._last_saved_step = step
        if self.main:
            write_history(self.out_dir / HISTORY_NAME, self.history)
        self.say(f"resumed from {folder} (step {self.step}, epoch {self.epoch_progress():.3f}, "
                 f"attempt {self.attempt})")
        if saved_world != self.world.size:
            self.say(f"notice: checkpoint of step {step} was written by {saved_world} process(es), "
                     f"this run has {self.world.size}: the global sample order goes on from "
                     f"position {self.sampler.position} of epoch {self.epoch + 1}, but the run is no "
                     f"longer bit-identical to an uninterrupted one (the batch per step changed)")
        return True

    def _find_and_load(self) -> tuple[int, Path, dict[str, Any], list[dict[str, Any]]] | None:
        """Rank 0 finds and loads the newest verified checkpoint (with every rank's RNG state)
        and hands it to the other ranks: they never depend on their own copy of the store."""
        loaded: Any = None
        if self.main:
            try:
                found = find_resume(self.ckpt_root)
                if found is not None:
                    step, folder, _ = found
                    state = load_state(folder)
                    saved_world = int(state[S.KEY_LOOP].get(S.LOOP_WORLD, 1))
                    rngs = [state[S.KEY_RNG]] + [
                        torch.load(folder / contract.rank_rng_name(r), map_location="cpu",
                                   weights_only=True) for r in range(1, saved_world)]
                    loaded = (step, folder, state, rngs)
            except Exception as e:  # every rank must learn of it, or they wait forever
                if not self.world.distributed:
                    raise
                loaded = e if isinstance(e, HarnessError) else HarnessError(
                    f"cannot load the checkpoint under {self.ckpt_root}: {e}")
        if self.world.distributed:
            loaded = distributed.broadcast(loaded)
        if isinstance(loaded, BaseException):
            raise loaded
        return loaded

    def _apply(self, state: dict[str, Any], rng: dict[str, Any]) -> None:
        self.model.load_state_dict(state[S.KEY_MODEL])
        for obj, key in ((self.optimizer, S.KEY_OPTIMIZER), (self.scheduler, S.KEY_SCHEDULER),
                         (self.scaler, S.KEY_SCALER)):
            if obj is not None and state.get(key) is not None:
                obj.load_state_dict(state[key])
        self.sampler.load_state_dict(state[S.KEY_SAMPLER])
        loop = state[S.KEY_LOOP]
        self.epoch, self.step = loop[S.LOOP_EPOCH], loop[S.LOOP_STEP]
        self.batch_in_epoch, self.done = loop[S.LOOP_BATCH], loop[S.LOOP_DONE]
        self.running = dict(loop[S.LOOP_RUNNING])
        if not self._attempt_from_env:
            self.attempt = loop[S.LOOP_ATTEMPT] + 1
        self.extra, self.history = state[S.KEY_EXTRA], state[S.KEY_HISTORY]
        self.metrics, self.best = state[S.KEY_METRICS], state[S.KEY_BEST]
        self.metrics_step = loop[S.LOOP_METRICS_STEP]
        self._wall_before, self._t0 = state[S.KEY_WALL_TIME], time.perf_counter()
        # An epoch that straddles a preemption counts whole: its part before the checkpoint too.
        self._epoch_wall0 = loop.get(S.LOOP_EPOCH_START_TIME, self._wall_before)
        if self.done:
            self._done_wall = self._wall_before
        self.metrics_log.truncate(self.step, loop[S.LOOP_METRICS_SEQ])
        S.restore_rng(rng)  # last: nothing above may draw from a generator after it

    # --- the loop ---------------------------------------------------------------------------------
    def epochs(self) -> Iterator[int]:
        """The epochs still to run (none after a finished run). Checks for a stop up front, so
        an attempt started past its deadline or already notified exits at once."""
        self._require_tracked()
        self._boundary = time.perf_counter()
        self.check_stop()
        while not self.done and self.epoch < self.total_epochs:
            e = self.epoch
            if self.batch_in_epoch == 0 or self._epoch_wall0 is None:
                self._epoch_wall0 = self.wall_time()
            yield e
            if self.epoch == e:
                raise HarnessError("the loop must call epoch_done() at the end of every epoch")

    def step_done(self, *, n: int, **scalars: float) -> None:
        """Call after every optimizer step with the batch size and this step's scalars (loss=..).
        Logs, shows progress, and at a boundary stops (preemption/deadline) or saves."""
        now = time.perf_counter()
        self._step_s, self._boundary = now - self._boundary, now
        if self.world.distributed:
            n, scalars = self._reduce_step(n, scalars)
        self.step += 1
        self.batch_in_epoch += 1
        self._last_n = n
        self.running["n"] = self.running.get("n", 0) + n
        for k, v in scalars.items():
            self.running[k] = self.running.get(k, 0.0) + float(v) * n
        if self.log_every > 0 and self.step % self.log_every == 0:
            self._log("train", {k: float(v) for k, v in scalars.items()} | {"lr": self.lr()})
        self.progress.update(self.step, epoch=round(self.epoch_progress(), 2), lr=self.lr(),
                             **{k: float(v) for k, v in scalars.items()})
        if self.step_sleep > 0:
            time.sleep(self.step_sleep)  # counted in the next step's time, as it should be
        if self._epoch_over():
            self._agreed = _UNSET
            return  # the epoch's last step: epoch_done() saves after the evaluation
        self.check_stop()
        if self.ckpt_every > 0 and self.step % self.ckpt_every == 0:
            self._save("periodic")

    def epoch_done(self, metrics: dict[str, Any], save: bool = True) -> None:
        """Call after the epoch's evaluation: records history, tracks the best, saves.

        ``save=False`` skips this epoch end's checkpoint (a stop notice still commits one), for
        trainers whose epochs are too short to save after each; the periodic step checkpoints
        go on as usual."""
        if not self._epoch_over():
            raise HarnessError(
                f"epoch_done() after {self._consumed()} of {self.sampler.epoch_size} samples: "
                f"every sample of the epoch must go through step_done(n=...) (no drop_last)")
        now = time.perf_counter()
        self._eval_s = now - self._boundary
        self.epoch += 1
        self.batch_in_epoch = 0
        n = self.running.pop("n", 0) or 1
        train = {f"train_{k}": v / n for k, v in self.running.items()}
        self.running = {}
        self.metrics, self.metrics_step = dict(metrics), self.step
        self.best = better(self.best, self.best_key, self.best_mode, self.metrics, self.step,
                           self.epoch)
        self.history.append({"epoch": self.epoch, "step": self.step, **train, **self.metrics,
                             "lr": self.lr(), "epoch_time": round(self.wall_time() - self._epoch_wall0, 3),
                             "wall_time": round(self.wall_time(), 3)})
        self._log("eval", {**self.metrics, **train})
        if self.main:
            write_history(self.out_dir / HISTORY_NAME, self.history)
        self.say(f"epoch {self.epoch}/{self.total_epochs} " +
                 " ".join(f"{k} {v:.4g}" for k, v in {**train, **self.metrics}.items()
                          if isinstance(v, (int, float))))
        self.sampler.set_epoch(self.epoch, 0)
        self._boundary = time.perf_counter()
        if self.epoch >= self.total_epochs:
            self.done = True  # finish() writes the final checkpoint
            self._done_wall = self.wall_time()
            return
        self.check_stop()
        if save:
            self._save("epoch")

    def check_stop(self) -> None:
        """At a boundary: on a notice, or when the deadline is within what one more step and a
        save take, commit a checkpoint (waiting for the write in flight) and raise Preempted."""
        if self.done or self._epoch_over():
            self._agreed = _UNSET
            return  # finished (nothing left to save), or inside an epoch's evaluation
        reason = self._stop_reason()
        if reason is None:
            return
        self.writer.wait()
        if self._last_saved_step != self.step:
            self._save(reason, blocking=True)
        distributed.barrier()  # no rank leaves before rank 0 has committed the checkpoint
        self.say(f"{reason}: checkpoint of step {self.step} committed in {self.ckpt_root}")
        if self.main:
            contract.note_stopped(reason, self.step)
        raise Preempted(reason, self.step)

    def _stop_reason(self) -> str | None:
        """This rank's verdict, or on several ranks the one they all reached: preempted if any
        rank was notified, else deadline if any rank's deadline is due (agreed in the step's
        all-reduce when there was one at this boundary, else in one of its own)."""
        if not self.world.distributed:
            return self.notice.reason(self._margin())
        agreed, self._agreed = self._agreed, _UNSET
        if agreed is _UNSET:
            agreed = _verdict(distributed.all_sum(_votes(self.notice.reason(self._margin()))))
        return agreed

    def _reduce_step(self, n: int, scalars: dict[str, float]) -> tuple[int, dict[str, float]]:
        """One all-reduce per step: the samples of the step on every rank, the sample-weighted
        sums of its scalars, and every rank's stop verdict. Returns the global count and means."""
        keys = sorted(scalars)
        votes = _votes(self.notice.reason(self._margin()))
        sums = distributed.all_sum([float(n), *votes, *(float(scalars[k]) * n for k in keys)])
        total = int(round(sums[0]))
        self._agreed = _verdict(sums[1:3])
        return total, {k: v / max(total, 1) for k, v in zip(keys, sums[3:])}

    def finish(self, results: dict[str, Any] | None = None,
               panels: Sequence[tuple[str, Sequence[str]]] = ()) -> dict[str, Any]:
        """After the last epoch: the final checkpoint (unless this run was already finished), then
        results.json, history.csv and (unless --no-plot) the dashboard PNG."""
        if self.epoch < self.total_epochs and not self.done:
            raise HarnessError(f"finish() at epoch {self.epoch} of {self.total_epochs}")
        self.done = True
        if self._last_saved_step != self.step:
            self._save("final", blocking=True)
        self.writer.wait()
        distributed.barrier()
        out = {"name": self.name, "config": self.config, "fingerprint": self.fingerprint,
               "epochs": self.epoch, "steps": self.step, "wall_time": round(self.wall_time(), 3),
               "attempts": self.attempt, "final": self.history[-1] if self.history else {},
               "best": self.best, "history": self.history, **(results or {})}
        if self.world.distributed:
            out["world_size"] = self.world.size
        if not self.main:
            return out
        write_results(self.out_dir / RESULTS_NAME, out)
        write_history(self.out_dir / HISTORY_NAME, self.history)
        if self.plot and panels:
            from trainers.common.dashboard import plot_dashboard

            plot_dashboard(self.history, panels, self.out_dir / DASHBOARD_NAME, title=self.name)
        self.say(f"done: {self.step} steps, {self.epoch} epochs, {self.wall_time():.1f}s of "
                 f"training over {self.attempt} attempt(s); outputs in {self.out_dir}")
        return out

    # --- helpers ----------------------------------------------------------------------------------
    def lr(self) -> float | None:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else None

    def epoch_progress(self) -> float:
        """Epochs done as a fraction: 1.5 is the middle of the second epoch."""
        if self.sampler is None or self.batch_in_epoch == 0:
            return float(self.epoch)
        return round(self.epoch + self._consumed() / self.sampler.epoch_size, 4)

    def _consumed(self) -> int:
        """Samples of this epoch that went through step_done(n=...)."""
        return int(self.running.get("n", 0))

    def _epoch_over(self) -> bool:
        return self._consumed() >= self.sampler.epoch_size

    def wall_time(self) -> float:
        """Seconds spent by every attempt so far (frozen once the run is done)."""
        if self._done_wall is not None:
            return self._done_wall
        return self._wall_before + (time.perf_counter() - self._t0)

    def _require_tracked(self) -> None:
        if self.model is None or self.sampler is None:
            raise HarnessError("call track(model=..., sampler=...) before resume()/epochs()")

    def _margin(self) -> float:
        """What continuing costs before the next chance to stop: one step, the evaluation when
        the next step ends the epoch, and a save (the last one's duration)."""
        write = self.writer.last_write_seconds
        save = self._snapshot_s + (write if write is not None else _FIRST_SAVE_GUESS_S)
        next_ends_epoch = self.sampler.epoch_size - self._consumed() <= self._last_n
        return self._step_s + save + (self._eval_s if next_ends_epoch else 0.0)

    def _log(self, kind: str, fields: dict[str, Any]) -> None:
        self.metrics_log.log({"kind": kind, "step": self.step, "epoch": self.epoch_progress(),
                              "total_steps": self.total_steps,
                              "total_epochs": self.total_epochs,
                              "attempt": self.attempt, "time": round(time.time(), 3),
                              "wall": round(self.wall_time(), 3), **fields})

    def snapshot(self) -> dict[str, Any]:
        """The full state, copied to host memory (the loop may go on changing the originals)."""
        def sd(obj):
            return obj.state_dict() if obj is not None else None

        # The sampler's position is what the steps consumed, not what it handed out: a DataLoader
        # with workers prefetches ahead, and those samples were never trained on.
        sampler = self.sampler.state_dict()
        if self._consumed() > sampler["position"]:
            raise HarnessError(f"step_done(n=...) counted {self._consumed()} samples this epoch, "
                               f"the sampler handed out only {sampler['position']}")
        sampler["position"] = self._consumed()
        loop = {S.LOOP_EPOCH: self.epoch, S.LOOP_STEP: self.step, S.LOOP_BATCH: self.batch_in_epoch,
                S.LOOP_DONE: self.done, S.LOOP_ATTEMPT: self.attempt,
                S.LOOP_METRICS_SEQ: self.metrics_log.seq, S.LOOP_RUNNING: self.running,
                S.LOOP_METRICS_STEP: self.metrics_step, S.LOOP_EPOCH_START_TIME: self._epoch_wall0,
                S.LOOP_WORLD: self.world.size}
        return S.to_host({
            S.KEY_FORMAT: S.STATE_FORMAT, S.KEY_MODEL: self.model.state_dict(),
            S.KEY_OPTIMIZER: sd(self.optimizer), S.KEY_SCHEDULER: sd(self.scheduler),
            S.KEY_SCALER: sd(self.scaler), S.KEY_RNG: S.capture_rng(),
            S.KEY_SAMPLER: sampler, S.KEY_LOOP: loop, S.KEY_EXTRA: self.extra,
            S.KEY_HISTORY: self.history, S.KEY_METRICS: self.metrics, S.KEY_BEST: self.best,
            S.KEY_WALL_TIME: self.wall_time(), S.KEY_CONFIG: self.config,
            S.KEY_FINGERPRINT: self.fingerprint,
        })

    def _save(self, reason: str, blocking: bool = False) -> None:
        """Every rank comes here at the same step; rank 0 writes, with every rank's RNG state."""
        t0 = time.perf_counter()
        rngs = distributed.gather(S.capture_rng()) if self.world.distributed else None
        if not self.main:
            self._last_saved_step = self.step
            return
        state = self.snapshot()
        files = {contract.rank_rng_name(r): S.to_host(rng) for r, rng in enumerate(rngs or [], 0) if r > 0}
        self._snapshot_s = time.perf_counter() - t0
        self.writer.save(state, blocking=blocking, files=files, step=self.step, epoch=self.epoch_progress(),
                         metrics=self.metrics, fingerprint=self.fingerprint, reason=reason,
                         best=manifest_best(self.best_key, self.best_mode, self.metrics,
                                            self.metrics_step))
        self._last_saved_step = self.step


def _votes(reason: str | None) -> list[float]:
    return [float(reason == REASON_PREEMPTED), float(reason == REASON_DEADLINE)]


def _verdict(votes: Sequence[float]) -> str | None:
    return REASON_PREEMPTED if votes[0] > 0 else REASON_DEADLINE if votes[1] > 0 else None
