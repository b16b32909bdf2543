"""The curriculum: each stage trains on exactly the studies its filter picks (normal, then
single-region, then multi-region, then all), re-filtered from the whole training set, never on
nothing; an empty stage is skipped with a warning; the stage is part of the resume state, and a
run resumed in the middle of a stage ends bit-exact with an uninterrupted one. The reference
run's predictions.csv recomputes its results.json, beside the baseline and R2Gen's figures."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from launcher import contract
from trainers.common import load_state
from trainers.common import state as S
from trainers.common.loading import epoch_plan
from trainers.common.testing import assert_states_equal
from trainers.xr2text.data import (STAGES, CurriculumSampler, Stage, read_studies, schedule,
                                   stage_members)
from trainers.xr2text.report import PREDICTIONS, read_predictions
from trainers.xr2text.scoring import score
from trainers.xr2text.synthetic import REPORTS
from trainers.xr2text.text import report_category
from trainers.xr2text.train import main

CATEGORIES = ["normal", "single", "complex", "normal", "multi", "single", "normal", "multi"]


def test_each_stage_is_its_category_filtered_from_the_whole_set():
    members = stage_members(CATEGORIES)
    assert members == {"normal": [0, 3, 6], "single": [1, 5], "multi": [4, 7],
                       "all": list(range(8))}
    stages = schedule(8, [2, 4, 6], members, warn=pytest.fail)
    assert [(s.name, s.start, s.end) for s in stages] == [
        ("normal", 0, 2), ("single", 2, 4), ("multi", 4, 6), ("all", 6, 8)]


def test_an_empty_stage_is_skipped_with_a_warning_and_its_epochs_go_to_the_next():
    warnings: list[str] = []
    members = stage_members([c for c in CATEGORIES if c != "single"])
    stages = schedule(8, [2, 4, 6], members, warn=warnings.append)
    assert [(s.name, s.start, s.end) for s in stages] == [
        ("normal", 0, 2), ("multi", 2, 6), ("all", 6, 8)]
    assert len(warnings) == 1 and "'single'" in warnings[0] and "3-4" in warnings[0]
    assert all(s.indices for s in stages)
    # Stages of no epochs are simply absent (a short run goes straight to "all").
    assert [s.name for s in schedule(3, [0, 0, 1], stage_members(CATEGORIES))] == ["multi",
                                                                                 "all"]


def test_the_sampler_follows_the_epochs_stage_and_refuses_another_stage():
    stages = [Stage("normal", 0, 2, (0, 3, 6)), Stage("all", 2, 4, tuple(range(8)))]
    sampler = CurriculumSampler(stages, seed=3)
    seen = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        seen.append(sorted(sampler.order().tolist()))
        assert sampler.num_samples == len(sampler.stage.indices)
    assert seen == [[0, 3, 6], [0, 3, 6], list(range(8)), list(range(8))]
    sampler.set_epoch(2, 4)
    state = sampler.state_dict()
    assert state["stage"] == "all" and state["position"] == 4
    fresh = CurriculumSampler(stages, seed=3)
    fresh.load_state_dict(state)
    assert (fresh.stage.name, fresh.position, fresh.order().tolist()) == \
           ("all", 4, sampler.order().tolist())
    other = CurriculumSampler([Stage("all", 0, 4, tuple(range(8)))], seed=3)
    with pytest.raises(ValueError, match="stage 'all'"):
        other.load_state_dict(CurriculumSampler(stages, seed=3).state_dict())


def run(root, data, tiny, *extra):
    return main(["--synthetic", "--synthetic-studies", "60", "--data-dir", str(data),
                 "--epochs", "4", "--stage-ends", "1,2,3", "--accum-steps", "2",
                 "--ckpt-every", "1", "--keep-last", "100", "--save-every", "2",
                 "--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"),
                 *tiny, *extra])


def test_stages_train_on_their_sets_and_a_mid_stage_resume_is_bit_exact(
        tmp_path, tiny, restore_torch_determinism):
    data = tmp_path / "data"
    ref = run(tmp_path / "ref", data, tiny)

    studies, _ = read_studies(data / REPORTS, data, "findings", 0.2, 42)
    train = [s for s in studies if s.split == "train"]
    wanted = {name: [s for s in train if report_category(s.report) == name]
              for name in STAGES[:3]} | {"all": train}
    rows = ref["history"]
    assert [r["stage"] for r in rows] == list(STAGES)
    assert [r["stage_studies"] for r in rows] == [len(wanted[n]) for n in STAGES]
    assert all(r["stage_studies"] > 0 for r in rows)
    assert [c["stage"] for c in ref["curriculum"]] == list(STAGES)
    # Optimizer steps: ceil(micro-batches / 2) per epoch, the remainder flushed.
    micro = [len(epoch_plan(len(wanted[n]), 4)) for n in STAGES]
    assert ref["steps"] == sum(-(-m // 2) for m in micro) and any(m % 2 for m in micro)

    # A checkpoint inside an epoch of the multi-region stage, resumed from in a fresh folder.
    committed = [(step, path, contract.read_manifest(path))
                 for step, path in contract.local_checkpoints(tmp_path / "ref" / "ckpt")]
    mid = [(step, path) for step, path, m in committed if m and m["reason"] == "periodic"
           and load_state(path)[S.KEY_SAMPLER]["stage"] == "multi"]
    assert mid, [(s, m["reason"], m["epoch"]) for s, _, m in committed]
    step, folder = mid[0]
    assert 0 < load_state(folder)[S.KEY_SAMPLER]["position"]
    resumed = tmp_path / "resumed"
    shutil.copytree(folder, resumed / "ckpt" / folder.name)
    again = run(resumed, data, tiny)
    assert again["steps"] == ref["steps"] and again["attempts"] == 2

    a = load_state(contract.latest_checkpoint(tmp_path / "ref" / "ckpt")[1])
    b = load_state(contract.latest_checkpoint(resumed / "ckpt")[1])
    assert_states_equal(a, b)
    assert a[S.KEY_EXTRA]["tokenizer"]["itos"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (tmp_path / "ref" / "out" / PREDICTIONS).read_text() == \
           (resumed / "out" / PREDICTIONS).read_text()
    check_outputs(tmp_path / "ref" / "out")


def check_outputs(out):
    """predictions.csv recomputes the scores in results.json; the baseline and R2Gen's figures
    sit beside them, labelled; the exports carry the tokenizer."""
    results = json.loads((out / "results.json").read_text())
    rows = read_predictions(out / PREDICTIONS)
    assert list(rows[0]) == ["id", "reference", "generated"] and len(rows) == 12
    ours = results["scores"]["ours"]
    recomputed = score([r["reference"] for r in rows], [r["generated"] for r in rows])
    for key, value in recomputed.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    base = results["scores"]["most_common_report"]
    assert base["report"] and base["bleu4"] >= 0 and base["meteor"] is None
    published = results["scores"]["published"]
    assert "published" in published["source"] and published["iu_xray"]["bleu4"] == 0.165
    assert published["mimic_cxr"] == {"bleu4": 0.103, "rouge_l": 0.277}
    history = (out / "training_history.csv").read_text().splitlines()
    assert len(history) == 5 and "val_bleu4" in history[0] and "stage" in history[0]
    for name in ("model_best.pt", "model_epoch_2.pt", "model_epoch_4.pt"):
        saved = torch.load(out / name, map_location="cpu", weights_only=True)
        assert saved["tokenizer"]["itos"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
        assert "decoder.layers.0.self_attn.in_proj_weight" in saved["model"]
