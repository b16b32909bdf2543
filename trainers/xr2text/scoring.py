"""Corpus-level BLEU-1..4, ROUGE-L and (where Java runs) METEOR, computed as R2Gen's evaluation
computes them: pycocoevalcap's scorers on lowercased text split at whitespace, one reference
per study, no further tokenization. METEOR needs a Java runtime for its jar; without one it is
reported as missing, never estimated."""

from __future__ import annotations

import contextlib
import io
import shutil
from typing import Any, Sequence

BLEU_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4")


def _pairs(references: Sequence[str], hypotheses: Sequence[str]):
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    return gts, res


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """``bleu1``..``bleu4`` and ``rouge_l`` of the hypotheses against their references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _pairs(references, hypotheses)
    with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its counts
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return {**{k: float(v) for k, v in zip(BLEU_KEYS, bleu)}, "rouge_l": float(rouge)}


def meteor(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """``{"meteor": value}``, or ``{"meteor": None, "meteor_missing": why}`` where the METEOR
    jar cannot run (no ``java`` on the PATH, or it fails)."""
    if shutil.which("java") is None:
        return {"meteor": None, "meteor_missing": "no java on the PATH (METEOR 1.5 is a jar)"}
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _pairs(references, hypotheses)
    try:
        scorer = Meteor()
        try:
            value, _ = scorer.compute_score(gts, res)
        finally:
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
            scorer.meteor_p = _Closed()
    except (OSError, ValueError) as e:
        return {"meteor": None, "meteor_missing": f"the METEOR jar failed ({type(e).__name__})"}
    return {"meteor": float(value)}


class _Closed:
    """Stands in for the jar's process once closed, so the scorer's ``__del__`` is a no-op."""

    stdin = io.BytesIO()

    def kill(self) -> None: ...

    def wait(self) -> None: ...
