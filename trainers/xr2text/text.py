"""Report text: the tokenizer (built from the training reports as R2Gen builds its own) and the
content category a curriculum stage filters on.

Cleaning, as R2Gen does for IU X-ray: lowercase, split into sentences at full stops, strip
punctuation, quotes and slashes from each, drop empty sentences, and write the full stop back as
a token of its own (``"the heart is normal . no effusion ."``). Words seen fewer than
``min_count`` times in the training reports become ``<unk>``. Scores are computed on the
decoded ids, so references go through the same cleaning, vocabulary and length cut as the output.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_SENTENCE_END = re.compile(r"\.+")
_STRIP = re.compile(r"[.,?;*!%^&_+():\-\[\]{}\"'/\\#<>=|~`@$]")


def clean_report(text: str) -> str:
    """Lowercase, punctuation stripped, one ``.`` token closing every sentence."""
    sentences = []
    for raw in _SENTENCE_END.split(text.lower().replace("\n", " ")):
        words = _STRIP.sub("", raw).split()
        if words:
            sentences.append(" ".join(words))
    return " . ".join(sentences) + " ." if sentences else ""


class Tokenizer:
    """Words of the training reports seen at least ``min_count`` times, in sorted order after
    the four special tokens. Saved with the checkpoint (``state_dict``), so a resumed or later
    run decodes with exactly the vocabulary the model was trained on."""

    def __init__(self, words: Sequence[str], min_count: int):
        self.itos = list(SPECIALS) + list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.min_count = int(min_count)

    @classmethod
    def build(cls, reports: Iterable[str], min_count: int) -> "Tokenizer":
        counts = Counter(w for r in reports for w in clean_report(r).split())
        return cls(sorted(w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                   min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> list[int]:
        """``<bos>``, at most ``max_len`` word ids, ``<eos>``."""
        ids = [self.stoi.get(w, UNK) for w in clean_report(text).split()[:max_len]]
        return [BOS, *ids, EOS]

    def decode(self, ids: Iterable[int]) -> str:
        """The words up to the first ``<eos>``; padding and ``<bos>`` are skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return " ".join(words)

    def state_dict(self) -> dict[str, Any]:
        return {"itos": list(self.itos), "min_count": self.min_count}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Tokenizer":
        itos = list(state["itos"])
        if tuple(itos[:len(SPECIALS)]) != SPECIALS:
            raise ValueError("not a tokenizer state (special tokens differ)")
        return cls(itos[len(SPECIALS):], state["min_count"])


# --- content categories ---------------------------------------------------------------------
# The curriculum's stages, easiest first; "complex" reports are met only in the last ("all").
CATEGORIES = ("normal", "single", "multi", "complex")
_NEGATIONS = {"no", "not", "without", "negative", "clear", "normal", "unremarkable", "resolved"}
_LUNG_FINDINGS = {"opacity", "opacities", "consolidation", "consolidations", "nodule", "nodules",
                  "mass", "masses", "atelectasis", "infiltrate", "infiltrates", "granuloma",
                  "granulomas", "scarring", "airspace", "pneumonia", "density", "densities"}
_COMPLEX = {"effusion", "effusions", "pneumothorax", "pacemaker", "tube", "catheter", "wire",
            "wires", "device", "devices", "sternotomy", "cardiomegaly", "enlarged", "edema",
            "clips", "port"}
_SIDES = {"right", "left"}
_ZONES = {"upper", "middle", "lower", "apex", "apical", "base", "basilar", "lingula", "hilar",
          "perihilar", "mid"}


def report_category(text: str) -> str:
    """``normal``: no finding outside negated sentences; ``complex``: a device, an effusion, a
    pneumothorax or an enlarged heart; otherwise ``single`` or ``multi`` by the number of lung
    regions (side x zone) that the sentences naming a lung finding point at.

    A sentence counts as negated when it holds a negation word ("no", "clear", "normal", ...).
    "bilateral" is two regions. Findings without a place count as one region when no sentence
    places one (so an impression's "focal opacity" adds nothing to the findings' region).
    """
    regions: set[tuple[str, str]] = set()
    found = False
    for sentence in clean_report(text).split(" . "):
        words = set(sentence.replace(" .", "").split())
        if not words or words & _NEGATIONS:
            continue
        if words & _COMPLEX:
            return "complex"
        if not words & _LUNG_FINDINGS:
            continue
        found = True
        sides = sorted(words & _SIDES) or (["right", "left"] if "bilateral" in words else [])
        zones = sorted(words & _ZONES)
        if sides or zones:
            regions |= {(s, z) for s in sides or ["?"] for z in zones or ["?"]}
    if not found:
        return "normal"
    return "multi" if len(regions) >= 2 else "single"
