"""`lrl run --teacher anthropic` end to end: the real anthropic SDK against a Messages API server on
127.0.0.1, all five stages (a short LoRA run), the logs, the cost block, replay from the cache."""

from __future__ import annotations

import json

import pytest
from lrl_harness.cli.app import main

pytestmark = pytest.mark.slow  # a whole run, LoRA training included

SMALL = ["--test-n", "12", "--train-n", "20", "--transfer-n", "64", "--lora-opt", "max_steps=3",
         "--export", "none", "--quiet"]


def results_usage(run_dir, stage):
    return json.loads((run_dir / "results.json").read_text())["stages"][stage]["usage"]


def test_five_stages_cost_and_replay(anthropic_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LRL_HARNESS_CACHE", str(tmp_path / "cache"))
    args = ["run", "--teacher", "anthropic", "--teacher-opt", f"base_url={anthropic_server.base_url}",
            "--teacher-opt", "model=claude-3-5-haiku-20241022", *SMALL]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    made = len(anthropic_server.requests)
    # 12 test + 20 train solve requests and a journal entry per batch of 10; no distillation (every 5
    # batches), so the lrl stage asks the teacher-baseline prompts again and is served from the cache
    assert made == 12 + 20 + 2
    assert results_usage(tmp_path / "first", "lrl")["cached"] == 12
    results = json.loads((tmp_path / "first" / "results.json").read_text())
    assert list(results["stages"]) == ["student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora"]
    assert results["stages"]["lrl"]["accuracy"] == 1.0
    usage = results["stages"]["teacher_baseline"]["usage"]
    assert usage["made"] == 12 and usage["input_tokens"] > 0 and usage["cost_usd"] > 0
    assert results["cost"]["break_even"]["teacher_cost_per_problem"] > 0
    for name in ("journal.log", "journal.txt", "strategy.txt"):
        assert (tmp_path / "first" / name).exists()
    # a second identical run, into another folder, makes zero requests
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    assert len(anthropic_server.requests) == made
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert second["stages"]["teacher_baseline"]["usage"]["made"] == 0
    assert second["stages"]["teacher_baseline"]["usage"]["cost_usd"] == 0
    capsys.readouterr()
    # --cache-only on a fresh cache fails in one line naming the first missing request
    monkeypatch.setenv("LRL_HARNESS_CACHE", str(tmp_path / "empty-cache"))
    code = main([*args, "--cache-only", "--out", str(tmp_path / "third")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cache" in err.lower()
