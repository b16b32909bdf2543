"""The watching flags of `launch up`: bad values are one line, exit 1, and leave no job behind."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from launcher.cli import cli

SECRET = "tok-77aa"


@pytest.fixture
def task(tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("name: t\nrun: echo hi\n")
    return t


@pytest.mark.parametrize("args, message", [
    (["--stall-after", "5x"], "Error: --stall-after '5x': expected a duration like 90s, 10m or 1.5h (0 turns it off)"),
    (["--notify", f"nope://{SECRET}"], "Error: --notify URL 1 (nope://): not a notification URL apprise knows"),
    (["--notify", "json://127.0.0.1:9/x", "--notify-on", "alert,done"],
     "Error: --notify-on: unknown event 'done' (choose from submitted, running, preempted, recovered, alert, "
     "succeeded, failed, cancelled)"),
])
def test_bad_watching_flags_are_one_line_and_leave_nothing(task, launch_home, args, message):
    r = CliRunner().invoke(cli, ["up", str(task), "-d", *args])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.output
    assert SECRET not in r.output
    assert not (launch_home / "state.db").exists()


def test_up_help_teaches_the_watching_flags():
    r = CliRunner().invoke(cli, ["up", "--help"])
    for flag in ("--stall-after", "--notify", "--notify-on", "--notify ntfy://my-topic"):
        assert flag in r.output
