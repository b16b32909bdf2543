"""Checkpoint folders: a folder is loaded only when its manifest verifies; writes happen in the
background, one at a time, from a snapshot the loop can no longer change; retention is last N
plus the best."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from launcher import contract
from trainers.common import (CheckpointError, CheckpointWriter, Harness, ResumableSampler,
                             find_resume, load_state)
from trainers.common import checkpoint as ckpt_mod
from trainers.common import state as S


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_partial_checkpoint_never_loaded(tmp_path, toy):
    ref = toy(tmp_path / "ref", epochs=2, n=40, batch_size=4)
    ref.run()
    run = toy(tmp_path / "run", epochs=2, n=40, batch_size=4, ckpt_every=3, keep_last=50)
    run.run()
    ckpt = tmp_path / "run" / "ckpt"
    assert [s for s, _ in contract.local_checkpoints(ckpt)][:3] == [20, 18, 15]
    (ckpt / "step-00000020" / contract.MANIFEST_NAME).unlink()  # files written, never committed
    flip_a_byte(ckpt / "step-00000018" / S.STATE_FILE)  # same size, another sha256

    step, folder, _ = find_resume(ckpt)
    assert step == 15

    again = toy(tmp_path / "run", epochs=2, n=40, batch_size=4, ckpt_every=3, keep_last=50)
    loaded = []
    again.run(on_step=lambda h: loaded.append(h.step))
    assert loaded[0] == 16, "resume must start after the last verified checkpoint (15)"
    final = load_state(find_resume(ckpt)[1])
    expected = load_state(find_resume(tmp_path / "ref" / "ckpt")[1])
    for k, v in expected[S.KEY_MODEL].items():
        assert torch.equal(final[S.KEY_MODEL][k], v)
    assert contract.verify_checkpoint(ckpt / "step-00000018") is not None  # rewritten whole


BIG_WRITER = textwrap.dedent("""
    import sys, time, torch
    from trainers.common import Harness, ResumableSampler

    root = sys.argv[1]
    model = torch.nn.Linear(4, 2)
    sampler = ResumableSampler(100, seed=0)
    h = Harness("big", {"k": 1}, total_epochs=1, steps_per_epoch=100, checkpoint_dir=root + "/ckpt",
                output_dir=root + "/out", ckpt_every=1, deadline=None, live_progress=False)
    h.track(model=model, sampler=sampler)
    with h:
        h.resume()
        for _ in h.epochs():
            for idx in sampler.batches(1):
                if h.step == 1:
                    h.writer.wait()  # step 1 is committed, and small
                    h.extra["blob"] = torch.full((64 * 2**20,), 1.0)  # 256 MB: a slow write
                h.step_done(n=1)
                if h.step == 2:
                    time.sleep(120)  # the step-2 write runs in the background; the test kills us
""")


def test_kill_during_a_large_write_resumes_from_the_previous_step(tmp_path, poll, child_env):
    script = tmp_path / "big_writer.py"
    script.write_text(BIG_WRITER)
    ckpt = tmp_path / "ckpt"
    step2 = ckpt / contract.step_dirname(2)
    with open(tmp_path / "child.log", "w") as log:
        p = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=child_env(),
                             stdout=log, stderr=subprocess.STDOUT)
    p.log_path = str(tmp_path / "child.log")
    try:
        poll(lambda: step2.is_dir() and not (step2 / contract.MANIFEST_NAME).exists(), 60, p,
             "the step-2 write to start")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not (step2 / contract.MANIFEST_NAME).exists(), "the kill came after the commit"
    assert step2.is_dir()  # a torn folder really is there...

    step, folder, _ = find_resume(ckpt)
    assert step == 1  # ...and the resume takes the previous verified step
    from trainers.common import Harness, ResumableSampler

    h = Harness("big", {"k": 1}, total_epochs=1, steps_per_epoch=100, checkpoint_dir=ckpt,
                output_dir=tmp_path / "out", deadline=None, live_progress=False)
    h.track(model=torch.nn.Linear(4, 2), sampler=ResumableSampler(100, seed=0))
    assert h.resume() and h.step == 1 and "blob" not in h.extra
    h.progress.close()


def test_retention_keeps_the_last_two_and_the_best(tmp_path, toy):
    run = toy(tmp_path, epochs=4, n=16, batch_size=4, ckpt_every=3,
              evals=[0.9, 0.5, 0.6, 0.55])
    run.run()
    committed = {s: contract.read_manifest(p)
                 for s, p in contract.local_checkpoints(tmp_path / "ckpt")}
    assert sorted(committed) == [4, 15, 16]  # best (end of epoch 1), then the last two
    assert committed[4]["best"] == {"key": "val_acc", "mode": "max", "value": 0.9, "step": 4}
    assert committed[16]["reason"] == "final" and committed[16]["metrics"] == {"val_acc": 0.55}
    assert committed[15]["best"]["value"] == 0.6  # the latest evaluation, made at step 12
    assert committed[15]["best"]["step"] == 12


def test_snapshot_is_a_copy_the_loop_cannot_change(tmp_path, toy):
    run = toy(tmp_path)
    snap = run.h.snapshot()
    weight = run.model[0].weight
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    assert torch.equal(snap[S.KEY_MODEL]["0.weight"], before)
    assert snap[S.KEY_MODEL]["0.weight"].data_ptr() != weight.data_ptr()
    run.h.progress.close()


def test_saves_run_in_the_background_one_at_a_time(tmp_path, monkeypatch):
    events, gate = [], threading.Event()

    def slow_write(root, state, **meta):
        events.append(("start", meta["step"]))
        gate.wait(10)
        events.append(("end", meta["step"]))

    monkeypatch.setattr(ckpt_mod, "write_checkpoint", slow_write)
    w = CheckpointWriter(tmp_path)
    w.save({}, step=1)
    assert w.busy and events == [("start", 1)]  # save() returned while the write goes on
    threading.Timer(0.05, gate.set).start()
    w.save({}, step=2)  # waits for step 1 first
    w.wait()
    assert events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]


def test_a_failed_write_is_raised_in_the_training_thread(tmp_path, monkeypatch):
    def failing_write(root, state, **meta):
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_mod, "write_checkpoint", failing_write)
    w = CheckpointWriter(tmp_path)
    w.save({}, step=1)
    with pytest.raises(CheckpointError, match="No space left"):
        w.wait()


def test_the_loop_goes_on_while_a_checkpoint_is_written(tmp_path, toy, monkeypatch):
    gate, seen = threading.Event(), []
    real_write = ckpt_mod.write_checkpoint

    def gated_write(root, state, **meta):
        gate.wait(10)
        return real_write(root, state, **meta)

    def on_step(h):
        if h.step == 3:  # the step-2 save is still blocked, yet step 3 ran
            seen.append((h.writer.busy, contract.latest_checkpoint(tmp_path / "ckpt")))
            gate.set()

    monkeypatch.setattr(ckpt_mod, "write_checkpoint", gated_write)
    toy(tmp_path, ckpt_every=2).run(on_step=on_step)
    assert seen == [(True, None)]
    assert contract.latest_checkpoint(tmp_path / "ckpt")[0] == 10


def test_an_armed_save_pauses_between_the_files_and_the_manifest(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    monkeypatch.setenv(contract.ENV_HOOK_DIR, str(hooks))
    (hooks / "armed-save").write_text("drill")
    writer = CheckpointWriter(tmp_path / "ckpt")
    writer.save({"w": torch.ones(3)}, step=7, epoch=0.5, metrics={}, fingerprint="f", best=None, reason="periodic")
    at = hooks / "at-save"
    from launcher.testing import wait_for

    wait_for(at.exists, timeout=30, what="the pause point")
    folder = tmp_path / "ckpt" / contract.step_dirname(7)
    assert at.read_text() == "step 7" and (folder / S.STATE_FILE).exists()
    assert not (folder / contract.MANIFEST_NAME).exists() and find_resume(tmp_path / "ckpt") is None
    at.unlink()  # the drill lets it go on
    writer.wait()
    assert find_resume(tmp_path / "ckpt")[0] == 7
    assert not (hooks / "armed-save").exists()  # one pause per arming
    writer.save({"w": torch.ones(3)}, step=8, epoch=0.6, metrics={}, fingerprint="f", best=None, reason="periodic")
    writer.wait()
    assert not at.exists()


def test_epoch_end_without_save_keeps_periodic_and_final_checkpoints(tmp_path):
    h = Harness("short", {"k": 1}, total_epochs=3, steps_per_epoch=2,
                checkpoint_dir=tmp_path / "ckpt", output_dir=tmp_path / "out", ckpt_every=3,
                keep_last=10, deadline=None, live_progress=False, plot=False)
    sampler = ResumableSampler(4, seed=0)
    h.track(model=torch.nn.Linear(2, 1), sampler=sampler)
    with h:
        h.resume()
        for epoch in h.epochs():
            for idx in sampler.batches(2):
                h.step_done(n=len(idx))
            h.epoch_done({}, save=epoch == 1)
        h.finish()
    reasons = {s: contract.read_manifest(p)["reason"]
               for s, p in contract.local_checkpoints(tmp_path / "ckpt")}
    assert reasons == {3: "periodic", 4: "epoch", 6: "final"}  # no checkpoint of epoch 1's end
