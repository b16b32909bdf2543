"""RBM-epochs per second: how fast one conditional RBM of the dbn trainer trains, on the CPU and
on the GPU where there is one.

An RBM-epoch is one pass of PCD-k over the training codes of one class (5,000 for a real CIFAR-10
class), with AdamW and the linear decay, exactly as the trainer runs a timestep (``rbm.fit``);
the forward noise of the pairs is drawn once, outside the timing. A real job is 50 timesteps x
100 epochs = 5,000 RBM-epochs, so the rate says how long its RBM stage takes.

    python bench/dbn.py                      # 256-bit codes, 256 hidden units, 5,000 codes
    python bench/dbn.py --bits 64 --hidden 32 --codes 256 --batch-size 32   # the synthetic run

A benchmark, not a test: it prints numbers and exits 0 unless something fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--bits", type=int, default=256, help="code bits (visible units)" + d)
    p.add_argument("--hidden", type=int, default=256, help="hidden units" + d)
    p.add_argument("--codes", type=int, default=5000, help="training codes" + d)
    p.add_argument("--batch-size", type=int, default=64, help="codes per step" + d)
    p.add_argument("--gibbs-steps", type=int, default=1, help="k of PCD-k" + d)
    p.add_argument("--epochs", type=int, default=3, help="RBM-epochs timed per device" + d)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from trainers.dbn import diffusion
    from trainers.dbn.rbm import ConditionalRBM, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x0 = torch.bernoulli(torch.full((args.codes, args.bits), 0.3), generator=g)
    beta = diffusion.betas("cosine", 50)
    v, c = diffusion.pair(x0, 10, beta, diffusion.flip_probs(beta), g)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    steps = -(-args.codes // args.batch_size)
    print(f"conditional RBM: {args.bits} visible, {args.hidden} hidden, {args.codes} codes, "
          f"batch {args.batch_size}, PCD-{args.gibbs_steps} ({steps} steps an epoch); "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':<8}{'RBM-epochs/s':>14}{'steps/s':>10}{'5,000 RBM-epochs':>18}")
    for dev in devices:
        vd, cd = v.to(dev), c.to(dev)
        rbm = ConditionalRBM(args.bits, args.hidden).to(dev)
        rbm.init_from_kernel(float(beta[9]))
        fit(rbm, vd, cd, epochs=1, batch_size=args.batch_size, k=args.gibbs_steps)  # warm-up
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fit(rbm, vd, cd, epochs=args.epochs, batch_size=args.batch_size, k=args.gibbs_steps)
        if dev == "cuda":
            torch.cuda.synchronize()
        rate = args.epochs / (time.perf_counter() - t0)
        print(f"{dev:<8}{rate:14.2f}{rate * steps:10.0f}{5000 / rate / 60:15.1f} min")


if __name__ == "__main__":
    main()
