"""Progress where nobody watches a terminal (a file, a CI log): plain lines, every so often."""

from __future__ import annotations

import io

from lrl_harness.util.progress import UI
from rich.console import Console


def test_a_log_gets_a_line_at_the_start_every_so_often_and_at_the_end(monkeypatch):
    out = io.StringIO()
    ui = UI(console=Console(file=out, width=120))
    clock = iter(range(0, 1000, 10))  # every call to the clock is 10 s later
    monkeypatch.setattr("lrl_harness.util.progress.time.monotonic", lambda: next(clock))
    ui.LINE_EVERY_S = 25
    with ui.task("lora training", 6) as advance:
        for step in range(6):
            advance(1, note=f"loss {step}")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("lora training: 0/6 started")
    assert lines[-1].startswith("lora training: 6/6 done") and lines[-1].endswith("loss 5")
    assert 1 <= len(lines) - 2 < 6  # some lines between, not one per step
    assert "\x1b[" not in out.getvalue()  # no live bar, no control codes


def test_quiet_prints_nothing():
    out = io.StringIO()
    ui = UI(quiet=True, console=Console(file=out))
    with ui.task("x", 2) as advance:
        advance(2)
    assert out.getvalue() == ""
