"""xr2text: chest X-ray report generation with a curriculum by report content, scored the way
R2Gen scores it. Resumable to the bit at any optimizer step of any stage.

Run ``python -m trainers.xr2text --help``. ``--synthetic`` writes a small data set in the same
CSV layout, whose grey images decide their reports, and trains on it through the same code
(CPU-sized defaults: 64-pixel images, ResNet-18, a two-layer decoder).

The story of a run: the studies are read and checked, a tokenizer is built from the training
reports (or taken from the checkpoint), each training report is given its category (normal,
single-region, multi-region, complex), and the stages are laid out over the epochs. An epoch
trains on its stage's studies in micro-batches of ``--batch-size``; every ``--accum-steps`` of
them make one optimizer step, and the last group of the epoch makes one too, whatever its size,
with its gradient the mean over the micro-batches it has. Checkpoints fall between optimizer
steps, so no half-accumulated gradient ever needs saving. After each epoch the validation
studies are decoded and scored; the best BLEU-4 + ROUGE-L and every ``--save-every`` epochs
export the weights with their tokenizer.
"""

from __future__ import annotations

import argparse
import itertools
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import BatchSampler, SequentialSampler

from trainers.common import (Harness, HarnessError, add_harness_args, enable_determinism,
                             seed_everything)
from trainers.common.amp import autocast_for, optimizer_step, resolve_amp
from trainers.common.checkpoint import peek_extra
from trainers.common.loading import EpochBatches, epoch_plan, make_loader
from trainers.common.metrics import write_history
from trainers.common.resume import better
from trainers.xr2text import report
from trainers.xr2text.data import (FIELDS, REPORTS, CurriculumSampler, DataError, StudyImages,
                                   category_counts, default_stage_ends, load_split, read_studies,
                                   schedule, stage_members)
from trainers.xr2text.model import ReportGenerator, param_count
from trainers.xr2text.scoring import score
from trainers.xr2text.synthetic import write_synthetic
from trainers.xr2text.text import Tokenizer

NAME = "xr2text"
DEFAULT_DATA = "data/iu_xray"
DEFAULT_SYNTHETIC_DATA = "data/xr2text-synthetic"
BEST_KEY = "val_bleu4_rouge_l"
HISTORY = "training_history.csv"
_D = " (default: %(default)s)"
# Flags whose default depends on the data: (real data, --synthetic). The real-data values are
# R2Gen's (ResNet-101 trunk, 224 pixels, a 3-layer 512-wide decoder, lr 1e-4 / 5e-5).
MODE_DEFAULTS = {"image_size": (224, 64), "encoder": ("resnet101", "resnet18"),
                 "encoder_norm": ("batch", "group"),
                 "d_model": (512, 128), "layers": (3, 2), "heads": (8, 4), "ff": (512, 256),
                 "lr": (1e-4, 1e-3), "encoder_lr": (5e-5, 1e-4)}


EPILOG = f"""data layout:
  DIR/{REPORTS}: study_id, image_path (views joined by ';', relative to DIR), findings,
  impression, optional split (train/val/test; without it --val-fraction of the studies is val)

examples:
  python -m trainers.xr2text --synthetic --epochs 12 --output-dir out --checkpoint-dir ckpt
  python -m trainers.xr2text --data-dir data/iu_xray --pretrained --epochs 50
  python -m trainers.xr2text --data-dir data/mimic --max-len 100 --min-count 10 --stage-ends 5,10,15

outputs (in --output-dir): predictions.csv, results.json, training_history.csv, curves.png,
examples.png, model_best.pt and model_epoch_N.pt (weights with their tokenizer)"""


def _mode(key: str) -> str:
    real, synthetic = MODE_DEFAULTS[key]
    return f" (default: {real}; {synthetic} with --synthetic)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.xr2text", allow_abbrev=False,
        description="Train a chest X-ray report generator (torchvision CNN + Transformer "
                    "decoder) with a curriculum by report content; BLEU-1..4, ROUGE-L and "
                    "METEOR as R2Gen computes them; resumable exactly.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", metavar="DIR",
                   help=f"folder with {REPORTS} and the images it names (default: "
                        f"{DEFAULT_DATA}, or {DEFAULT_SYNTHETIC_DATA} with --synthetic)")
    g.add_argument("--reports-csv", metavar="FILE",
                   help=f"the CSV of reports (default: DIR/{REPORTS})")
    g.add_argument("--synthetic", action="store_true",
                   help="write a small generated set in the same layout to --data-dir, train "
                        "on it (grey images whose content decides the report)")
    g.add_argument("--synthetic-studies", type=int, default=400,
                   help="studies in the synthetic set" + _D)
    g.add_argument("--report-field", choices=FIELDS, default="findings",
                   help="which report section to learn (R2Gen: findings)" + _D)
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of studies for validation when the CSV has no split column" + _D)
    g.add_argument("--min-count", type=int, default=3,
                   help="words seen fewer times in the training reports are <unk> (R2Gen: 3 "
                        "for IU X-ray, 10 for MIMIC-CXR)" + _D)
    g.add_argument("--max-len", type=int, default=60,
                   help="words per report, in training and generation (R2Gen: 60 IU X-ray, "
                        "100 MIMIC-CXR)" + _D)
    g.add_argument("--views", type=int, default=2,
                   help="images per study (fewer are repeated, more are cut)" + _D)
    g.add_argument("--image-size", type=int, help="image side" + _mode("image_size"))
    g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loader worker processes (0: the main process)" + _D)
    m = p.add_argument_group("model")
    m.add_argument("--encoder", help="torchvision CNN for visual tokens" + _mode("encoder"))
    m.add_argument("--pretrained", action="store_true",
                   help="start the encoder from torchvision's ImageNet weights (a download "
                        "where the machine can fetch it; by default nothing is downloaded)")
    m.add_argument("--encoder-norm", choices=["batch", "group"],
                   help="the trunk's normalisation; group (ResNets from scratch) does not "
                        "depend on the micro-batch" + _mode("encoder_norm"))
    m.add_argument("--d-model", type=int, help="decoder width" + _mode("d_model"))
    m.add_argument("--layers", type=int, help="decoder layers" + _mode("layers"))
    m.add_argument("--heads", type=int, help="attention heads" + _mode("heads"))
    m.add_argument("--ff", type=int, help="feed-forward width" + _mode("ff"))
    m.add_argument("--dropout", type=float, default=0.1, help="decoder dropout" + _D)
    m.add_argument("--beam-size", type=int, default=3,
                   help="beam width for validation reports; 1 = greedy (R2Gen: 3)" + _D)
    o = p.add_argument_group("optimisation and curriculum")
    o.add_argument("--epochs", type=int, default=50, help="epochs in all" + _D)
    o.add_argument("--stage-ends", metavar="E1,E2,E3",
                   help="epochs at which the normal, single-region and multi-region stages end; "
                        "the rest train on all studies (default: 20%%, 40%%, 60%% of --epochs)")
    o.add_argument("--batch-size", type=int, default=4, help="studies per micro-batch" + _D)
    o.add_argument("--accum-steps", type=int, default=8,
                   help="micro-batches per optimizer step; an epoch's last, shorter group "
                        "steps too" + _D)
    o.add_argument("--lr", type=float, help="AdamW learning rate of the decoder" + _mode("lr"))
    o.add_argument("--encoder-lr", type=float,
                   help="learning rate of the encoder" + _mode("encoder_lr"))
    o.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay" + _D)
    o.add_argument("--clip", type=float, default=1.0, help="gradient norm clip; 0 = off" + _D)
    o.add_argument("--amp", choices=["auto", "fp16", "bf16", "off"], default="auto",
                   help="mixed precision: auto = fp16 with a GradScaler on CUDA, off on CPU" + _D)
    o.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N" + _D)
    o.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    o.add_argument("--deterministic", choices=["auto", "on", "off"], default="auto",
                   help="deterministic kernels (exact resume); auto = on for CPU" + _D)
    o.add_argument("--seed", type=int, default=42, help="seed of init, order, augmentation" + _D)
    r = p.add_argument_group("outputs")
    r.add_argument("--save-every", type=int, default=5, metavar="EPOCHS",
                   help="export model_epoch_N.pt (weights + tokenizer) every N epochs; the best "
                        "by BLEU-4 + ROUGE-L goes to model_best.pt; 0 = best only" + _D)
    r.add_argument("--meteor", choices=["auto", "off"], default="auto",
                   help="METEOR of the final reports where Java runs (auto), else reported "
                        "missing" + _D)
    r.add_argument("--examples", type=int, default=4,
                   help="validation studies drawn with their reports in examples.png" + _D)
    add_harness_args(p, ckpt_every=50, log_every=5)
    args = p.parse_args(argv)
    if args.pretrained and args.encoder_norm is None:
        args.encoder_norm = "batch"  # the weights come with batch norm
    for key, (real, synthetic) in MODE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, synthetic if args.synthetic else real)
    if min(args.epochs, args.batch_size - 1, args.accum_steps, args.image_size, args.views,
           args.max_len, args.beam_size, args.min_count, args.layers, args.heads) < 1:
        p.error("--epochs, --accum-steps, --image-size, --views, --max-len, --beam-size, "
                "--min-count, --layers, --heads must be >= 1, --batch-size >= 2")
    if args.d_model % args.heads:
        p.error(f"--d-model {args.d_model} must be a multiple of --heads {args.heads}")
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    if args.stage_ends is None:
        args.stage_ends = default_stage_ends(args.epochs)
    else:
        try:
            args.stage_ends = [int(x) for x in args.stage_ends.split(",")]
        except ValueError:
            p.error(f"--stage-ends {args.stage_ends!r}: three whole numbers, e.g. 10,20,30")
        ends = args.stage_ends
        if len(ends) != 3 or ends != sorted(ends) or ends[0] < 0 or ends[-1] > args.epochs:
            p.error(f"--stage-ends {','.join(map(str, ends))}: three non-decreasing epochs "
                    f"between 0 and --epochs {args.epochs}")
    return args


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    args.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                               else "cpu" if args.device == "auto" else args.device)
    try:
        args.amp = resolve_amp(args.amp, args.device)
    except ValueError as e:
        raise HarnessError(str(e)) from e
    if args.deterministic == "auto":
        args.deterministic = "on" if args.device.type == "cpu" else "off"
    args.data_dir = Path(args.data_dir or (DEFAULT_SYNTHETIC_DATA if args.synthetic
                                           else DEFAULT_DATA))
    args.reports_csv = Path(args.reports_csv) if args.reports_csv else args.data_dir / REPORTS
    return args


def fingerprinted_config(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes the numbers; paths, workers and output choices are left out."""
    keys = ["synthetic", "report_field", "val_fraction", "min_count", "max_len", "views",
            "image_size", "encoder", "encoder_norm", "pretrained", "d_model", "layers", "heads",
            "ff", "dropout", "beam_size", "epochs", "stage_ends", "batch_size", "accum_steps",
            "lr", "encoder_lr", "weight_decay", "clip", "amp", "seed"]
    if args.synthetic:
        keys.append("synthetic_studies")
    return {k: getattr(args, k) for k in keys}


def configure(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic == "on":
        enable_determinism(args.seed)
        if args.device.type == "cuda":  # some CUDA backward kernels have no deterministic form
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        seed_everything(args.seed)
        torch.backends.cudnn.benchmark = True


class Data:
    """The checked studies, the tokenizer, both datasets and the curriculum's stages."""

    def __init__(self, args: argparse.Namespace, tokenizer_state: dict[str, Any] | None, say):
        try:
            if args.synthetic:
                write_synthetic(args.data_dir, studies=args.synthetic_studies,
                                size=args.image_size, val_fraction=args.val_fraction,
                                seed=args.seed)
            studies, self.skipped = read_studies(args.reports_csv, args.data_dir,
                                                 args.report_field, args.val_fraction, args.seed)
            train, val = load_split(studies, args.reports_csv)
        except DataError as e:
            raise HarnessError(str(e)) from None
        self.tokenizer = (Tokenizer.from_state(tokenizer_state) if tokenizer_state else
                          Tokenizer.build((s.report for s in train), args.min_count))
        kw = dict(size=args.image_size, views=args.views, max_len=args.max_len)
        self.train = StudyImages(train, self.tokenizer, augment=True, **kw)
        self.val = StudyImages(val, self.tokenizer, augment=False, **kw)
        self.categories = [s.category for s in train]
        self.skipped_stages: list[str] = []

        def warn(text: str) -> None:
            self.skipped_stages.append(text)
            say(f"warning: {text}")

        self.stages = schedule(args.epochs, args.stage_ends, stage_members(self.categories),
                               warn=warn)

    def steps(self, args: argparse.Namespace) -> list[int]:
        """Optimizer steps of every epoch (each stage's epochs have their own)."""
        per_stage = {s.name: -(-len(epoch_plan(len(s.indices), args.batch_size))
                               // args.accum_steps) for s in self.stages}
        return [per_stage[s.name] for s in self.stages for _ in range(s.start, s.end)]


class Trainer:
    """The model, its optimizer and scaler, and one optimizer step over a group of
    micro-batches."""

    def __init__(self, args: argparse.Namespace, vocab_size: int):
        self.args = args
        try:
            self.model = ReportGenerator(
                vocab_size, encoder=args.encoder, pretrained=args.pretrained,
                encoder_norm=args.encoder_norm,
                image_size=args.image_size, views=args.views, d_model=args.d_model,
                layers=args.layers, heads=args.heads, ff=args.ff, dropout=args.dropout,
                max_len=args.max_len).to(args.device)
        except ValueError as e:
            raise HarnessError(str(e)) from None
        encoder = list(self.model.encoder.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        self.optimizer = torch.optim.AdamW(
            [{"params": rest, "lr": args.lr}, {"params": encoder, "lr": args.encoder_lr}],
            lr=args.lr, weight_decay=args.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.autocast = autocast_for(args.amp, args.device)

    def step(self, group: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Accumulate ``group``'s micro-batches, each loss weighted ``1 / len(group)`` (so the
        gradient is their mean), then clip and take one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        total, n = 0.0, 0
        for images, ids in group:
            images = images.to(self.args.device, non_blocking=True)
            ids = ids[:, :int((ids != 0).sum(1).max())].to(self.args.device, non_blocking=True)
            with self.autocast():
                loss = self.model(images, ids)
            scaled = loss / len(group)
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += float(loss.detach()) * len(ids)
            n += len(ids)
        optimizer_step(self.optimizer, self.model.parameters(), self.scaler, self.args.clip)
        return {"loss": total / n, "n": n}


def batches(loader):
    """The loader's batches; a bad image met by a worker becomes the one-line error it raised
    (a DataLoader re-raises a worker's error with the worker's traceback in its text)."""
    try:
        yield from loader
    except Exception as e:
        lines = str(e).strip().splitlines() or [""]
        if not (isinstance(e, DataError) or "DataError: " in lines[-1]):
            raise
        raise HarnessError(lines[-1].split("DataError: ", 1)[-1]) from None


def groups(loader, accum_steps: int):
    """The rest of the epoch's micro-batches in groups of ``accum_steps``; the last group holds
    what is left (1 to ``accum_steps`` micro-batches)."""
    micro = batches(loader)
    while group := list(itertools.islice(micro, accum_steps)):
        yield group


@torch.no_grad()
def evaluate(t: Trainer, data: Data, loader, beam_size: int) -> tuple[dict[str, float], list[str]]:
    """Validation: the teacher-forced loss, then every study's generated report, scored."""
    model, args = t.model, t.args
    model.eval()
    hyps, loss_sum, n = [], 0.0, 0
    for images, ids in batches(loader):
        images, ids = images.to(args.device), ids.to(args.device)
        ids = ids[:, :int((ids != 0).sum(1).max())]
        with t.autocast():
            loss_sum += float(model(images, ids)) * len(ids)
            out = model.generate(images, beam_size)
        n += len(ids)
        hyps += [data.tokenizer.decode(o) for o in out]
    model.train()
    refs = [data.val.reference(i) for i in range(len(data.val))]
    scores = score(refs, hyps)
    metrics = {"val_loss": loss_sum / n, **{f"val_{k}": v for k, v in scores.items()}}
    metrics[BEST_KEY] = scores["bleu4"] + scores["rouge_l"]
    return metrics, hyps


def main(argv: Sequence[str] | None = None) -> dict:
    args = resolve(parse_args(argv))
    configure(args)
    with warnings.catch_warnings():
        # nn.TransformerDecoder warns about its fast path; it has none for a decoder anyway.
        warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    messages: list[str] = []
    peeked = peek_extra(Harness.checkpoint_root(args.checkpoint_dir))
    data = Data(args, (peeked or {}).get("tokenizer"), messages.append)
    steps = data.steps(args)
    sampler = CurriculumSampler(data.stages, args.seed)
    pin = args.device.type == "cuda"
    train_loader = make_loader(data.train, EpochBatches(sampler, args.batch_size, args.seed),
                               args.workers, pin)
    val_loader = make_loader(data.val, BatchSampler(SequentialSampler(data.val),
                                                    max(args.batch_size, 16), drop_last=False),
                             args.workers, pin)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        t = Trainer(args, len(data.tokenizer))

    with Harness.from_args(args, name=NAME, config=fingerprinted_config(args),
                           total_epochs=args.epochs, steps_per_epoch=steps[0],
                           total_steps=sum(steps), best=(BEST_KEY, "max")) as h:
        for text in messages:
            h.say(text)
        h.track(model=t.model, optimizer=t.optimizer, scaler=t.scaler, sampler=sampler)
        h.extra = {"tokenizer": data.tokenizer.state_dict(), "generated": None}
        h.resume()
        outputs = report.Outputs(h.out_dir, data, args)
        h.say(f"{args.encoder} + {args.layers}-layer decoder ({param_count(t.model) / 1e6:.1f}M "
              f"parameters) on {args.device} ({args.amp} AMP, deterministic "
              f"{args.deterministic}); {len(data.train)} train / {len(data.val)} val studies, "
              f"vocabulary {len(data.tokenizer)}; stages "
              + ", ".join(f"{s.name} {s.start + 1}-{s.end} ({len(s.indices)})"
                          for s in data.stages))
        for epoch in h.epochs():
            stage = sampler.stage
            if epoch == stage.start and h.batch_in_epoch == 0:
                h.say(f"stage {stage.name}: epochs {stage.start + 1}-{stage.end}, "
                      f"{len(stage.indices)} studies")
            t.model.train()
            for group in groups(train_loader, args.accum_steps):
                scalars = t.step(group)
                sampler.position += scalars["n"]  # consumed (workers have read further ahead)
                h.step_done(**scalars)
            metrics, hyps = evaluate(t, data, val_loader, args.beam_size)
            metrics |= {"stage": stage.name, "stage_studies": len(stage.indices)}
            h.extra["generated"] = hyps
            if better(h.best, BEST_KEY, "max", metrics, h.step, epoch + 1) is not h.best:
                outputs.export(t.model, "model_best.pt", epoch + 1, metrics)
            if args.save_every and (epoch + 1) % args.save_every == 0:
                outputs.export(t.model, f"model_epoch_{epoch + 1}.pt", epoch + 1, metrics)
            h.epoch_done(metrics)
            write_history(h.out_dir / HISTORY, h.history)
        results = outputs.write(h.history, h.extra["generated"], args.meteor == "auto")
        results |= {"device": str(args.device), "params": param_count(t.model),
                    "train_studies": len(data.train), "val_studies": len(data.val),
                    "rows_without_report": data.skipped, "vocab_size": len(data.tokenizer),
                    "train_categories": category_counts(data.train.studies),
                    "curriculum": [{"stage": s.name, "epochs": [s.start + 1, s.end],
                                    "studies": len(s.indices)} for s in data.stages],
                    "skipped_stages": data.skipped_stages}
        out = h.finish(results, panels=report.PANELS)
        write_history(h.out_dir / HISTORY, h.history)
        return out
