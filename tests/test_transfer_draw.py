"""Which problems the student is trained on: balanced and never a test problem, whatever the evaluation
preset, unless the run asks for the preset's own draw (then the results say so)."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.pipeline.config import RunConfig
from lrl_harness.pipeline.stages.student import transfer_data
from lrl_harness.results.schema import Transfer


def _keys(task, problems):
    return {task.key(p) for p in problems}


def _example_key(e):
    return (tuple(tuple(m) for m in e["data"]["meetings"]), e["data"]["rooms"])


def test_seed_preset_draws_balanced_transfer_data_without_test_problems(task):
    test = task.problems("seed", "test")
    examples = task.transfer_examples(None, "count", 1040, 999, "seed", exclude=test)
    assert len(examples) == 1040
    for diff in ("EASY", "MEDIUM", "HARD"):
        sub = [e for e in examples if e["difficulty"] == diff]
        answers = Counter(e["expected"] for e in sub)
        assert answers["YES"] - answers["NO"] in (0, 1), (diff, answers)
        tight = [e for e in sub if e["data"]["max_simultaneous"] in (e["data"]["rooms"], e["data"]["rooms"] + 1)]
        assert len(tight) >= len(sub) // 2 - 1, diff
    assert not {_example_key(e) for e in examples} & _keys(task, test)
    # the same draw as the balanced preset's, for the same seed and exclusions
    assert examples == task.transfer_examples(None, "count", 1040, 999, "balanced", exclude=test)


def test_the_original_draw_is_the_originals_own_with_its_test_problems(task):
    test = task.problems("seed", "test")
    examples = task.transfer_examples(None, "count", 1040, 999, "seed", exclude=test, draw="original")
    answers = Counter(e["expected"] for e in examples)
    assert (answers["YES"], answers["NO"]) == (929, 111)  # as the original's generator draws them
    overlap = [e for e in examples if _example_key(e) in _keys(task, test)]
    assert len(overlap) == 21 and {e["difficulty"] for e in overlap} == {"EASY"}
    first100 = task.transfer_examples(None, "label", 100, 999, "seed", exclude=test, draw="original")
    assert sum(_example_key(e) in _keys(task, test) for e in first100) == 1
    with pytest.raises(LrlError, match="unknown transfer draw 'other'"):
        task.transfer_examples(None, "label", 10, 999, "seed", draw="other")


def test_config_takes_the_draw_and_keeps_old_identities():
    assert "transfer_draw" not in RunConfig().identity()  # runs recorded before keep their folder
    assert RunConfig(transfer_draw="original").identity()["transfer_draw"] == "original"
    with pytest.raises(ConfigError, match="transfer_draw must be 'balanced' or 'original'"):
        RunConfig(transfer_draw="seed").validate()


@pytest.mark.parametrize("draw, yes, no, overlap", [(None, 520, 520, 0), ("original", 929, 111, 21)])
def test_the_results_record_the_draw_and_its_test_overlap(task, tmp_path, draw, yes, no, overlap):
    config = RunConfig(preset="seed", transfer_draw=draw, transfer_format="count", transfer_n=1040)
    run = SimpleNamespace(
        student=SimpleNamespace(transfer_format="trace", transfer_examples=100), config=config, task=task,
        render=lambda: None, folder=SimpleNamespace(transfer_data=tmp_path / "transfer.jsonl"))
    examples, summary = transfer_data(run, None, task.problems("seed", "test"))
    assert (summary["draw"], summary["yes"], summary["no"], summary["test_overlap"]) == (
        draw or "balanced", yes, no, overlap)
    assert Transfer.model_validate(summary).draw == (draw or "balanced")
    lines = (tmp_path / "transfer.jsonl").read_text().splitlines()
    assert len(lines) == 1040 and json.loads(lines[0])["prompt"] == examples[0]["prompt"]
