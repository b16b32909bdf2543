"""Scoring is R2Gen's: our BLEU-1..4 and ROUGE-L on fixed pairs are pycocoevalcap's, at corpus
level; METEOR is a number where Java runs and "missing" where it does not; beam search of width 1
is greedy decoding."""

from __future__ import annotations

import shutil

import pytest
import torch

from trainers.xr2text.model import ReportGenerator, beam_search, greedy
from trainers.xr2text.scoring import meteor, score
from trainers.xr2text.text import EOS

REFS = ["the heart size is normal . the lungs are clear . there is no pleural effusion .",
        "there is a small opacity in the right upper lung zone . no pneumothorax .",
        "a left sided cardiac pacemaker is present . the lungs are clear .",
        "degenerative changes of the thoracic spine .",
        "there is a moderate left pleural effusion . there is no pneumothorax ."]
HYPS = ["the heart size is normal . the lungs are clear . there is no pleural effusion .",
        "there is a large opacity in the left upper lung zone .",
        "the lungs are clear . a cardiac pacemaker is present .",
        "",
        "there is a small left pleural effusion . there is no pneumothorax . no pneumothorax ."]


def test_bleu_and_rouge_equal_pycocoevalcap_on_fixed_pairs():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [r] for i, r in enumerate(REFS)}
    res = {i: [h] for i, h in enumerate(HYPS)}
    bleu, per_sentence = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    ours = score(REFS, HYPS)
    assert [ours[f"bleu{n}"] for n in range(1, 5)] == bleu
    assert ours["rouge_l"] == rouge
    assert 0.2 < ours["bleu4"] < ours["bleu1"] < 1 and 0.3 < ours["rouge_l"] < 1
    # Corpus level, as the papers report it: not the mean of per-report BLEU-4.
    assert ours["bleu4"] != pytest.approx(sum(per_sentence[3]) / len(REFS), abs=1e-3)
    assert score(REFS, REFS)["bleu4"] == pytest.approx(1.0) and score(REFS, REFS)["rouge_l"] == 1


def test_meteor_is_a_number_where_java_runs_else_missing():
    got = meteor(REFS, HYPS)
    if shutil.which("java"):
        assert 0 < got["meteor"] < 1, got
    else:
        assert got["meteor"] is None and "java" in got["meteor_missing"]


def test_beam_of_one_is_greedy_and_beams_end_with_valid_words():
    torch.manual_seed(0)
    model = ReportGenerator(30, encoder="resnet18", pretrained=False, image_size=32, views=2,
                            d_model=32, layers=1, heads=2, ff=64, dropout=0.0, max_len=12).eval()
    images = torch.randn(3, 2, 3, 32, 32)
    with torch.no_grad():
        memory = model.encode(images)
        g = greedy(model, memory, 12)
        assert beam_search(model, memory, 1, 12) == g
        beams = beam_search(model, memory, 3, 12)
    assert len(beams) == 3 and all(len(b) <= 12 for b in beams)
    assert all(4 <= t < 30 or t == 3 for b in beams + g for t in b) and EOS not in sum(beams, [])
    assert model.generate(images, 1) == g
