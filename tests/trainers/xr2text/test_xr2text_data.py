"""Data: the synthetic set's reports are what its images show, in realistic proportions, and
the report classifier gives each the category it was drawn as; the tokenizer cleans as R2Gen
does; bad data is one line naming the file and row, with nothing left behind."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from trainers.common import run_main
from trainers.xr2text.data import read_studies
from trainers.xr2text.synthetic import (MARKER, PROPORTIONS, REPORTS, case_kinds, sample_scene,
                                        write_report, write_synthetic)
from trainers.xr2text.text import UNK, Tokenizer, clean_report, report_category
from trainers.xr2text.train import main


def test_every_synthetic_report_gets_the_category_it_was_drawn_as():
    rng = np.random.default_rng(0)
    kinds = case_kinds(500, rng)
    counts = Counter(kinds)
    for kind, share in PROPORTIONS.items():
        assert counts[kind] == pytest.approx(500 * share, abs=1)
    for kind in kinds:
        findings, impression = write_report(sample_scene(rng, kind))
        assert report_category(findings) == kind, findings
        assert report_category(findings + " " + impression) == kind, (findings, impression)


def test_report_classifier_reads_negations_regions_and_devices():
    assert report_category("No acute cardiopulmonary abnormality. Lungs are clear.") == "normal"
    assert report_category("No focal consolidation, effusion or pneumothorax.") == "normal"
    assert report_category("Calcified granuloma in the right upper lobe.") == "single"
    assert report_category("Opacity at the left base. Heart size normal.") == "single"
    assert report_category("Bilateral lower lobe opacities.") == "multi"
    assert report_category("Right upper and left lower lobe nodules.") == "multi"
    assert report_category("Small left pleural effusion.") == "complex"
    assert report_category("Dual-chamber pacemaker in place.") == "complex"


def test_tokenizer_cleans_like_r2gen_and_keeps_rare_words_out():
    text = 'The heart is "normal" in size.. No effusion;  XXXX (stable)!\nLungs: clear/ok.'
    # Only full stops end sentences; slashes and quotes go without a space (as in R2Gen).
    assert clean_report(text) == "the heart is normal in size . no effusion xxxx stable " \
                                 "lungs clearok ."
    tok = Tokenizer.build(["the heart . the lungs .", "the heart .", "a rare word ."], 2)
    assert tok.itos[4:] == [".", "heart", "the"]
    ids = tok.encode("The heart, the spleen.", max_len=60)
    assert ids[1:-1] == [tok.stoi["the"], tok.stoi["heart"], tok.stoi["the"], UNK,
                         tok.stoi["."]]
    assert tok.decode(ids) == "the heart the <unk> ."
    assert tok.encode("the heart the heart .", max_len=2)[1:-1] == [tok.stoi["the"],
                                                                    tok.stoi["heart"]]
    again = Tokenizer.from_state(tok.state_dict())
    assert again.itos == tok.itos and again.min_count == 2


def test_synthetic_set_has_the_csv_layout_and_is_reused(tmp_path):
    root = write_synthetic(tmp_path / "data", studies=40, size=32, seed=1)
    with open(root / REPORTS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["study_id", "image_path", "findings", "impression", "split"]
    assert len(rows) == 40 and Counter(r["split"] for r in rows)["val"] == 8
    assert any(";" in r["image_path"] for r in rows)  # two views for most studies
    stamp = (root / MARKER).stat().st_mtime_ns
    write_synthetic(root, studies=40, size=32, seed=1)
    assert (root / MARKER).stat().st_mtime_ns == stamp  # reused, not rewritten
    studies, skipped = read_studies(root / REPORTS, root, "findings", 0.2, 0)
    assert len(studies) == 40 and skipped == 0 and studies[0].images[0].is_file()


# --- bad data -----------------------------------------------------------------------------------

def small_tree(root):
    """Three studies with real PNGs, one of them without findings (left out, not an error)."""
    (root / "images").mkdir(parents=True)
    rows = [["s1", "images/a.png;images/b.png", "The heart is normal.", "Normal.", "train"],
            ["s2", "images/c.png", "Small right upper lobe opacity.", "Opacity.", "train"],
            ["s3", "images/d.png", "", "No acute disease.", "val"],
            ["s4", "images/e.png", "Lungs are clear.", "Normal.", "val"]]
    for name in "abcde":
        Image.new("L", (16, 16), 90).save(root / "images" / f"{name}.png")
    write_rows(root, rows)
    return root


def write_rows(root, rows, header=("study_id", "image_path", "findings", "impression", "split")):
    with open(root / REPORTS, "w", newline="") as f:
        csv.writer(f).writerows([list(header)] + rows)


def bad_missing_image(root):
    (root / "images" / "b.png").unlink()
    return [REPORTS, "row 2", "images/b.png", "not found"]


def bad_empty_report_column(root):
    rows = list(csv.reader(open(root / REPORTS)))[1:]
    write_rows(root, [r[:2] + [""] + r[3:] for r in rows])
    return [REPORTS, "'findings'", "empty in every one of its 4 rows"]


def bad_unreadable_image(root):
    (root / "images" / "c.png").write_bytes(b"not a png at all")
    return ["c.png", "unreadable image", "row 3"]


def bad_no_training_reports(root):
    rows = list(csv.reader(open(root / REPORTS)))[1:]
    write_rows(root, [r[:4] + ["val"] for r in rows])
    return [REPORTS, "no training reports"]


def bad_missing_column(root):
    rows = list(csv.reader(open(root / REPORTS)))[1:]
    write_rows(root, rows, header=("study_id", "image", "findings", "impression", "split"))
    return [REPORTS, "'image_path'"]


@pytest.mark.parametrize("breaker", [bad_missing_image, bad_empty_report_column,
                                     bad_unreadable_image, bad_no_training_reports,
                                     bad_missing_column])
def test_bad_data_is_one_line_naming_the_file_and_nothing_is_left(tmp_path, capsys, breaker,
                                                                  tiny):
    root = small_tree(tmp_path / "data")
    expected = breaker(root)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    code = run_main(main, ["--data-dir", str(root), "--epochs", "1", "--output-dir", str(out),
                           "--checkpoint-dir", str(ckpt), *tiny], name="xr2text")
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("xr2text: error: ")
    for part in expected:
        assert part in err, (part, err)
    assert not out.exists() and not ckpt.exists()


def test_bad_data_exit_code_from_the_command_line(tmp_path, child_env):
    root = small_tree(tmp_path / "data")
    bad_missing_image(root)
    r = subprocess.run([sys.executable, "-m", "trainers.xr2text", "--data-dir", str(root),
                        "--output-dir", str(tmp_path / "out"),
                        "--checkpoint-dir", str(tmp_path / "ckpt")],
                       capture_output=True, text=True, env=child_env(), timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "row 2" in r.stderr, r.stderr
