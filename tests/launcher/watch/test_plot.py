"""`launch plot` from a store folder alone: attempts split, how each ended, recomputed work, GPU
series and cost; a PNG is drawn; the state is not needed."""

from __future__ import annotations

import json

from click.testing import CliRunner

from launcher.cli import _register_optional_groups, cli
from launcher.store import open_store
from launcher.watch.plot import gather, how_it_ended, panels

T0 = 1_700_000_000.0


def put_jsonl(store, key, recs):
    store.put_bytes(key, "".join(json.dumps(r) + "\n" for r in recs).encode())


def three_attempts(tmp_path):
    """Attempt 1 preempted at step 30 (checkpoint 30), attempt 2 killed at step 64 after the
    checkpoint at 60, attempt 3 finished at 100; the trainer wrote the recomputed steps again."""
    store = open_store((tmp_path / "store" / "qs-1a2b3c4d").as_uri())
    lines = [{"step": s, "loss": 2.0 - s / 100} for s in range(1, 31)]
    lines += [{"step": s, "loss": 2.0 - s / 100} for s in range(31, 65)]
    lines += [{"step": s, "loss": 2.0 - s / 100 + 0.001} for s in range(61, 101)]
    put_jsonl(store, "metrics.jsonl", lines)
    logs = store.child("logs/")
    starts = [(1, None, 0, None), (2, 30, 30, 30), (3, 60, 62, 62)]  # uploads lag: 62 of the 64 steps
    for n, resumed, nlines, top in starts:
        logs.put_bytes(f"attempt-{n}.json", json.dumps({"attempt": n, "resumed_step": resumed, "host": "localhost",
                                                       "metrics_lines": nlines, "metrics_top_step": top,
                                                       "started": T0 + 100 * n}).encode())
    ends = [(1, "PREEMPTED", "fire drill term@30%: preemption notice: the run saved and stopped", 30),
            (2, "PREEMPTED", "fire drill kill@60%: machine lost: the agent vanished without an exit code", 64),
            (3, "SUCCEEDED", "run exited 0", 100)]
    for n, state, reason, last in ends:
        logs.put_bytes(f"attempt-{n}.end.json", json.dumps({
            "attempt": n, "state": state, "reason": reason, "host": "localhost", "started": T0 + 100 * n,
            "run_started": T0 + 100 * n + 2, "ended": T0 + 100 * n + 90, "price_per_hour": 0.5,
            "cost": 0.0125, "last_step": last}).encode())
    samples = [{"ts": T0 + 100 * n + 10 * i, "attempt": n, "cpu_percent": 95.0,
                "gpus": [{"index": 0, "name": "Tesla V100", "util": 90, "temp_c": 60, "mem_used_mb": 8000.0,
                          "mem_total_mb": 16000.0}]} for n in (1, 2, 3) for i in range(9)]
    put_jsonl(store, "gpu.jsonl", samples)
    store.put_bytes("DONE", b"1")
    return store


def test_gather_splits_attempts_and_counts_recomputed_work(tmp_path):
    data = gather(three_attempts(tmp_path))
    assert [a["ended_as"] for a in data["attempts"]] == ["preempted", "killed", "succeeded"]
    assert [a["resumed_step"] for a in data["attempts"]] == [None, 30, 60]
    assert [a["recomputed_steps"] for a in data["attempts"]] == [0.0, 4.0, None]
    assert data["recomputed_steps"] == 4.0 and data["steps"] == 100 and data["metric_lines"] == 104
    assert data["metrics"] == ["loss"] and data["gpus"] == ["Tesla V100"]
    assert data["cost"] == 0.0375 and data["done"] is True
    assert data["last"]["loss"] == 1.001  # the step written last wins


def test_labels_for_how_an_attempt_ended():
    assert how_it_ended("PREEMPTED", "outbid by a higher bid") == "outbid"
    assert how_it_ended("PREEMPTED", "session ended (12 h limit)") == "session ended"
    assert how_it_ended("STALLED", "no training progress for 300 s") == "stalled"
    assert how_it_ended("SETUP_FAILED", "preflight: no GPU") == "setup failed"
    assert how_it_ended(None, None) == "running"


def test_plot_draws_a_png_and_prints_json_from_the_store_uri_alone(tmp_path):
    store = three_attempts(tmp_path)
    _register_optional_groups()
    uri = (tmp_path / "store" / "qs-1a2b3c4d").as_uri()
    out = tmp_path / "qs.png"
    r = CliRunner().invoke(cli, ["plot", uri, "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    r = CliRunner().invoke(cli, ["plot", uri, "--json"], catch_exceptions=False)
    assert json.loads(r.stdout)["attempts"][1]["ended_as"] == "killed"
    assert store.exists("DONE")


def test_plot_of_an_empty_store_is_a_one_line_error(tmp_path):
    _register_optional_groups()
    r = CliRunner().invoke(cli, ["plot", (tmp_path / "nothing").as_uri()])
    assert r.exit_code == 1 and "no metrics.jsonl and no attempt records" in r.output
    r = CliRunner().invoke(cli, ["plot", "42"])
    assert r.exit_code == 1 and "No job '42'" in r.output


def test_related_metrics_share_a_panel():
    assert panels(["loss", "val_loss", "val_acc", "train_loss", "psnr", "lr_scale"]) == [
        ["loss", "val_loss", "train_loss"], ["val_acc"], ["psnr"]]
