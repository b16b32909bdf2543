"""The run's files besides the harness's: ``predictions.csv`` (id, reference, generated: anyone
can recompute the scores from it), the scores in ``results.json`` (ours, the most-common-report
baseline, R2Gen's published figures labelled as such), exported weights with their tokenizer,
and the figures ``curves.png`` (loss, BLEU-4, ROUGE-L with the stage boundaries) and
``examples.png`` (a few validation images with both reports).

matplotlib's object API with the Agg canvas only (no display, no global backend change).
"""

from __future__ import annotations

import csv
import io
import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

import torch

from trainers.common.metrics import write_atomic
from trainers.xr2text.data import most_common_report
from trainers.xr2text.scoring import meteor, score

PREDICTIONS = "predictions.csv"
PANELS = [("loss", ["train_loss", "val_loss"]),
          ("BLEU", ["val_bleu1", "val_bleu4"]),
          ("ROUGE-L", ["val_rouge_l"])]
# R2Gen (Chen et al., "Generating Radiology Reports via Memory-driven Transformer", EMNLP 2020),
# Table 1, test splits. Quoted for reference, not measured here.
PUBLISHED = {
    "source": "R2Gen (Chen et al., EMNLP 2020), published test-set figures; for reference, "
              "not measured by this run",
    "iu_xray": {"bleu1": 0.470, "bleu2": 0.304, "bleu3": 0.219, "bleu4": 0.165,
                "rouge_l": 0.371},
    "mimic_cxr": {"bleu4": 0.103, "rouge_l": 0.277},
}


def write_predictions(path: Path, ids: Sequence[str], refs: Sequence[str],
                      hyps: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "reference", "generated"])
    w.writerows(zip(ids, refs, hyps))
    write_atomic(path, buf.getvalue())


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Outputs:
    def __init__(self, out_dir: Path, data, args):
        self.out, self.data, self.args = Path(out_dir), data, args

    def export(self, model: torch.nn.Module, name: str, epoch: int,
               metrics: dict[str, Any]) -> None:
        """The weights with the tokenizer and the config, enough to generate reports later."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / (name + ".tmp")
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "tokenizer": self.data.tokenizer.state_dict(), "epoch": epoch,
                    "metrics": {k: v for k, v in metrics.items() if not isinstance(v, str)},
                    "config": {k: v for k, v in vars(self.args).items()
                               if isinstance(v, (int, float, str, bool, list))}}, tmp)
        os.replace(tmp, self.out / name)

    def write(self, history: list[dict[str, Any]], generated: list[str] | None,
              with_meteor: bool) -> dict[str, Any]:
        """predictions.csv, the scores and the figures, from the last epoch's reports."""
        val = self.data.val
        refs = [val.reference(i) for i in range(len(val))]
        ids = [s.study_id for s in val.studies]
        if generated is None:
            return {}
        write_predictions(self.out / PREDICTIONS, ids, refs, generated)
        baseline_text = most_common_report(self.data.train)
        baseline = [baseline_text] * len(refs)
        ours = score(refs, generated)
        base = score(refs, baseline)
        if with_meteor:
            ours |= meteor(refs, generated)
            base |= meteor(refs, baseline)
        else:
            ours |= {"meteor": None, "meteor_missing": "not computed (--meteor off)"}
            base |= {"meteor": None, "meteor_missing": "not computed (--meteor off)"}
        last = history[-1] if history else {}
        scores = {"ours": ours | {"epoch": last.get("epoch"), "decoding":
                                  f"beam {self.args.beam_size}" if self.args.beam_size > 1
                                  else "greedy"},
                  "most_common_report": base | {"report": baseline_text},
                  "published": PUBLISHED,
                  "scored_on": f"{len(refs)} validation studies ({PREDICTIONS}); references "
                               f"cleaned, tokenized and cut at {self.args.max_len} words as "
                               f"R2Gen scores them"}
        if not self.args.no_plot:
            from trainers.xr2text import figures

            figures.curves(self.out / "curves.png", history)
            n = min(self.args.examples, len(val))
            figures.examples(self.out / "examples.png",
                             [(val.studies[i], refs[i], generated[i]) for i in range(n)],
                             self.args.image_size)
        return {"scores": scores}


def wrap(text: str, width: int = 46) -> str:
    return "\n".join(textwrap.wrap(text, width)) or "(empty)"
