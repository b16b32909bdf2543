"""Graph diffusion against non-local means: images per second and PSNR on the same noisy images.

Both methods denoise the same images with the same noise, one after the other and then once more
in the other order, so that a change in the machine's load hits both; the printed ratios come from
this one run. Ours runs batched through torch (on the GPU where there is one, then also on the
CPU); non-local means is scikit-image's, one image at a time, on the CPU, as it runs.

    python bench/denoise.py --checkpoint CKPT        # a trained denoise checkpoint folder
    python bench/denoise.py                          # trains a small model first (a few minutes)

Images: CIFAR-10's test split with --data-dir, else generated ones (as the trainer's
--synthetic), plus one 256 x 256 photograph from scikit-image for the large-image speed.
A benchmark, not a test: it prints numbers and exits 0 unless something fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--checkpoint", help="a trained denoise checkpoint (default: train one)")
    p.add_argument("--data-dir", help="folder with cifar-10-batches-py/ (default: generated)")
    p.add_argument("--images", type=int, default=128, help="32x32 images to denoise" + d)
    p.add_argument("--sigma", type=float, default=25.0, help="noise std, 0-255 scale" + d)
    p.add_argument("--train-epochs", type=int, default=4,
                   help="epochs of the small model trained when no --checkpoint is given" + d)
    return p.parse_args()


def train_small(root: Path, epochs: int, sigma: float) -> Path:
    cmd = [sys.executable, "-m", "trainers.denoise", "--synthetic", "--data-dir",
           str(root / "data"), "--synthetic-train", "512", "--synthetic-test", "64",
           "--val-size", "64", "--batch-size", "16", "--epochs", str(epochs), "--sigma",
           str(sigma), "--no-plot", "--no-photos", "--checkpoint-dir", str(root / "ckpt"),
           "--output-dir", str(root / "out")]
    print(f"training a small model ({epochs} epochs on generated images)...", file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return root / "ckpt"


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    import torch

    from trainers.denoise import baselines, data, report, synthetic
    from trainers.denoise.apply import denoise, load_model

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or train_small(Path(tmp), args.train_epochs, args.sigma)
        model, _ = load_model(ckpt)
        if args.data_dir:
            from trainers.common import cifar

            x, _ = cifar.load(args.data_dir, train=False)
        else:
            x, _ = synthetic.make_images(args.images, seed=12345)
    clean = data.to_tensor(x[:args.images])
    sigma = args.sigma / 255
    noisy = clean + data.fixed_noise(clean.shape, sigma, 99)
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]

    def ours(device):
        m = model.to(device)
        with torch.no_grad():
            out = torch.cat([m(noisy[i:i + 64].to(device), sigma).cpu()
                             for i in range(0, len(noisy), 64)])
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    times: dict[str, list[float]] = {}
    outs = {}
    for order in (["ours", "nlm"], ["nlm", "ours"]):
        for name in order:
            if name == "nlm":
                outs["nl_means"], t = timed(baselines.nl_means, noisy)
                times.setdefault("nl_means (cpu)", []).append(t)
            else:
                for dev in devices:
                    outs[f"ours ({dev})"], t = timed(ours, dev)
                    times.setdefault(f"ours ({dev})", []).append(t)
    n = len(noisy)
    print(f"{n} images of 32x32 at sigma {args.sigma:g}; times are the mean of two passes")
    print(f"{'method':<16}{'images/s':>10}{'PSNR dB':>10}{'SSIM':>8}")
    base = {"noisy": noisy}
    for name, out in {**base, **outs}.items():
        s = baselines.score(out, clean)
        runs = times.get(name) or times.get(f"{name} (cpu)")  # non-local means runs on the CPU
        t = sum(runs) / 2 if runs else None
        rate = f"{n / t:10.1f}" if t else f"{'-':>10}"
        print(f"{name:<16}{rate}{s['psnr']:10.2f}{s['ssim']:8.3f}")
    nlm_t = sum(times["nl_means (cpu)"]) / 2
    for dev in devices:
        ratio = nlm_t / (sum(times[f"ours ({dev})"]) / 2)
        gain = (baselines.score(outs[f"ours ({dev})"], clean)["psnr"]
                - baselines.score(outs["nl_means"], clean)["psnr"])
        print(f"ratio ours ({dev}) / non-local means: speed x{ratio:.2f}, PSNR {gain:+.2f} dB")

    big = report.photo("astronaut", 256)
    big_noisy = big + data.fixed_noise(big[None].shape, sigma, 5)[0]
    (_, t_ours) = timed(denoise, model.to("cpu"), big_noisy, sigma)
    (_, t_nlm) = timed(baselines.nl_means, big_noisy[None])
    print(f"256x256 photograph on the CPU: ours {t_ours:.2f}s, non-local means {t_nlm:.2f}s "
          f"(ratio x{t_nlm / t_ours:.2f})")


if __name__ == "__main__":
    main()
