"""The trainer end to end on --synthetic data written as real CIFAR-10 batches: parameters
learned, every method scored on the same images, the apply command, exact resume after a kill
mid-epoch, and one-line errors for bad data."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from launcher import contract
from trainers.common import cifar, read_jsonl
from trainers.common.testing import final_tensors
from trainers.denoise import apply, synthetic
from trainers.denoise.model import build
from trainers.denoise.train import main

# CPU-sized: 64 training images, 16 validation images, a coarse patch grid, 2 diffusion steps.
SMALL = ["--synthetic", "--synthetic-train", "64", "--synthetic-test", "16", "--val-size", "16",
         "--batch-size", "16", "--stride", "4", "--steps", "2", "--lr", "0.05", "--threads", "1",
         "--log-every", "1"]
METHODS = {"ours", "noisy", "gaussian_blur", "bilateral", "nl_means"}


@pytest.fixture
def one_thread(restore_torch_determinism):
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_synthetic_batches_load_through_torchvisions_cifar10(tmp_path):
    folder = synthetic.write(tmp_path, train=20, test=6, seed=3)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*cifar.TRAIN_FILES, cifar.TEST_FILE, cifar.META_FILE, "SYNTHETIC"])
    x, y = cifar.load(tmp_path, train=True)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and len(y) == 20
    again, _ = synthetic.make_images(20, 3)
    assert np.array_equal(x, again)  # image i depends on (seed, i) only
    assert x.std() > 20  # edges and textures, not flat colour


def test_trains_its_parameters_and_scores_every_method(tmp_path, one_thread):
    out = tmp_path / "out"
    res = main([*SMALL, "--epochs", "3", "--data-dir", str(tmp_path / "data"),
                "--checkpoint-dir", str(tmp_path / "ckpt"), "--output-dir", str(out)])
    init = build({**res["config"]["model"]}).learned()
    learned = res["learned"]
    assert learned["sigma_s"] != pytest.approx(init["sigma_s"], rel=1e-3)
    assert any(a != pytest.approx(b, rel=1e-3) for a, b in zip(learned["tau"], init["tau"]))
    train = [r for r in read_jsonl(out / contract.METRICS_NAME) if r["kind"] == "train"]
    assert len(train) == 12 and {"loss", "tau_0", "sigma_0", "radius"} <= set(train[0])
    first, last = np.mean([r["loss"] for r in train[:3]]), np.mean([r["loss"] for r in train[-3:]])
    assert last < first
    val = res["validation"]
    assert set(val) == METHODS and val["ours"]["psnr"] > val["noisy"]["psnr"] + 3
    assert res["gain_over_noisy_db"] == pytest.approx(val["ours"]["psnr"] - val["noisy"]["psnr"])
    photos = res["photographs"]
    assert set(photos["images"]) == {"astronaut", "coffee", "chelsea"}
    assert set(photos["mean"]) == METHODS and photos["gain_over_noisy_db"] > 3
    assert 0.3 <= res["fitted"]["blur_sigma"] <= 3.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["validation"] == val
    for name in ("examples.png", "parameters.png", "dashboard.png", "history.csv"):
        assert (out / name).stat().st_size > 0, name

    # The apply command with this checkpoint: a grey PNG of another size, any step folder.
    from PIL import Image

    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(40, 200, 50), (37, 1))
    Image.fromarray(np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
                    ).save(tmp_path / "in.png")
    step_dir = contract.latest_checkpoint(tmp_path / "ckpt")[1]
    for ckpt in (tmp_path / "ckpt", step_dir):
        assert apply.main(["--checkpoint", str(ckpt), "--sigma", "25", str(tmp_path / "in.png"),
                           str(tmp_path / "out.png")]) == 0
        den = np.asarray(Image.open(tmp_path / "out.png"), dtype=float)
        assert den.shape == clean.shape
        noisy = np.asarray(Image.open(tmp_path / "in.png"), dtype=float)
        assert np.mean((den - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)


def run_child(root: Path, data: Path, child_env, *extra: str) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / f"run-{len(list(root.glob('run-*.log')))}.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "trainers.denoise", *SMALL, "--epochs", "2",
                          "--ckpt-every", "2", "--no-plot", "--no-photos", "--data-dir", str(data),
                          "--checkpoint-dir", str(root / "ckpt"), "--output-dir",
                          str(root / "out"), *extra], env=child_env(), stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    p.log_path = log.name
    log.close()
    return p


def test_killed_mid_epoch_resumes_bit_exact(tmp_path, child_env, poll):
    data = tmp_path / "data"
    ref = run_child(tmp_path / "ref", data, child_env)
    assert ref.wait(timeout=300) == 0, Path(ref.log_path).read_text()

    root = tmp_path / "killed"
    p = run_child(root, data, child_env, "--step-sleep", "0.3")
    poll(lambda: any(s == 2 for s, f in contract.local_checkpoints(root / "ckpt")
                     if contract.read_manifest(f)), 200, p, "the checkpoint of step 2")
    os.killpg(p.pid, signal.SIGKILL)  # mid-epoch (4 steps an epoch), no notice
    p.wait()
    p = run_child(root, data, child_env)
    assert p.wait(timeout=300) == 0, Path(p.log_path).read_text()
    assert "resumed from" in Path(p.log_path).read_text()
    step_a, a = final_tensors(tmp_path / "ref" / "ckpt")
    step_b, b = final_tensors(root / "ckpt")
    assert step_a == step_b == 8 and a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def run_cli(argv, child_env, module="trainers.denoise"):
    return subprocess.run([sys.executable, "-m", module, *argv], env=child_env(),
                          capture_output=True, text=True, timeout=300)


def test_bad_data_is_one_line_naming_the_file(tmp_path, child_env):
    r = run_cli(["--data-dir", str(tmp_path / "nowhere"), "--epochs", "1"], child_env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    folder = synthetic.write(tmp_path / "data", train=10, test=4)
    (folder / "data_batch_3").write_bytes(b"\x80\x04not a pickle")
    r = run_cli(["--data-dir", str(tmp_path / "data"), "--epochs", "1"], child_env)
    assert r.returncode == 1 and "data_batch_3" in r.stderr and "Traceback" not in r.stderr
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": np.zeros((3, 5), np.uint8), "labels": [0, 1, 2]}, f)
    r = run_cli(["--data-dir", str(tmp_path / "data"), "--epochs", "1"], child_env)
    assert r.returncode == 1 and "data_batch_3" in r.stderr and "3072" in r.stderr


def test_apply_refuses_bad_images_and_other_trainers_checkpoints(tmp_path, child_env):
    from trainers.common import write_checkpoint

    other = tmp_path / "other"
    write_checkpoint(other, {"model": {}, "extra": {}, "config": {"epochs": 1}}, step=1, epoch=1.0,
                     metrics={}, fingerprint="x", best=None, reason="final")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = run_cli(["--checkpoint", str(other), str(tmp_path / "bad.png"), str(tmp_path / "o.png")],
                child_env, "trainers.denoise.apply")
    assert r.returncode == 1 and "not a checkpoint of the denoise trainer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

    ckpt = tmp_path / "dn"
    model = build({"stride": 4, "steps": 1})
    write_checkpoint(ckpt, {"model": model.state_dict(),
                            "extra": {"trainer": "denoise", "model": model.config.to_dict()}},
                     step=1, epoch=1.0, metrics={}, fingerprint="x", best=None, reason="final")
    r = run_cli(["--checkpoint", str(ckpt), str(tmp_path / "bad.png"), str(tmp_path / "o.png")],
                child_env, "trainers.denoise.apply")
    assert r.returncode == 1 and "bad.png" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["--checkpoint", str(ckpt), str(tmp_path / "missing.png"),
                 str(tmp_path / "o.png")], child_env, "trainers.denoise.apply")
    assert r.returncode == 1 and "missing.png" in r.stderr
