"""Sample images from a finished dbn run.

    python -m trainers.dbn.sample --checkpoint CKPT --n 64 OUT.png

CKPT is the checkpoint folder the trainer wrote (its newest verified ``step-*`` is used) or one
``step-*`` folder. Codes start as coin flips at T; for t = T..1 a Gibbs chain in the RBM of
timestep t, conditioned on x_t, gives x_{t-1}; the autoencoder decodes x_0. Prints how far the
sampled codes are from the nearest training code, next to coin flips and the held-out codes
(``--json``: the same as a JSON object on stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from trainers.common import HarnessError
from trainers.common import state as S
from trainers.common.checkpoint import open_checkpoint
from trainers.dbn import diffusion, report
from trainers.dbn.model import build
from trainers.dbn.train import NAME


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.dbn.sample", allow_abbrev=False,
                                description="Sample images from a trained dbn checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="the trainer's checkpoint folder, or one step-* folder in it")
    p.add_argument("--n", type=int, default=64, help="images to sample (default: 64)")
    p.add_argument("--steps", type=int, default=20,
                   help="Gibbs sweeps per timestep (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the sample check as JSON")
    p.add_argument("output", help="PNG to write (a grid, 8 images a row)")
    args = p.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        p.error("--n and --steps must be >= 1")
    try:
        folder, state = open_checkpoint(args.checkpoint, NAME)
        extra = state[S.KEY_EXTRA]
        timesteps = extra["model"]["timesteps"]
        if not state[S.KEY_LOOP][S.LOOP_DONE]:
            raise HarnessError(f"{folder}: the run is at timestep {extra['timestep']} of "
                               f"{timesteps}, not finished; sample from a finished run")
        device = torch.device(args.device)
        model = build(extra["model"]).to(device)
        model.load_state_dict(state[S.KEY_MODEL])
        model.eval()
        codes, g = report.sample(model, args.n, args.steps, args.seed, device)
        train, heldout = (extra["codes"][k].to(device).float() for k in ("train", "heldout"))
        check = diffusion.sample_check(codes, train, heldout, g)
        report.save_grid(model.ae.decode(codes), Path(args.output))
    except (HarnessError, OSError, RuntimeError) as e:
        print(f"dbn.sample: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"checkpoint": str(folder), "output": args.output, **check}))
    print(f"{args.n} samples -> {args.output}; mean Hamming distance to the nearest training "
          f"code {check['sampled']:.2f} of {check['bits']} bits (coin flips {check['random']:.2f}"
          f", held-out codes {check['heldout']:.2f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
