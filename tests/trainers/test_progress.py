"""Off a terminal, progress is a plain line every N steps (readable in an uploaded log)."""

from __future__ import annotations

import io

from trainers.common.progress import Progress


def test_plain_lines_every_n_steps_with_eta():
    out = io.StringIO()
    p = Progress("toy", total_steps=20, every=5, stream=out)
    for step in range(1, 21):
        p.update(step, loss=0.5)
    p.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["5/20", "10/20", "15/20", "20/20"]
    assert all(line.startswith("[toy] step") and "loss 0.5" in line for line in lines)
    assert "eta" in lines[0] and "\r" not in out.getvalue()
