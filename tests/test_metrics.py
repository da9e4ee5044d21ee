"""Metrics: Wilson intervals, balanced accuracy, majority baseline, unparsed, McNemar."""

import math

import pytest
from lrl_harness.evaluation.statistics import (
    mcnemar_exact,
    mcnemar_one_sided,
    paired_comparison,
    score_block,
    score_stage,
    wilson_interval,
    wilson_lower_one_sided,
)


def rec(pid, expected, answer, difficulty="EASY"):
    return {"problem_id": pid, "difficulty": difficulty, "expected": expected, "answer": answer,
            "correct": answer == expected}


def test_wilson_matches_known_values():
    lo, hi = wilson_interval(86, 100)
    assert lo == pytest.approx(0.7785, abs=1e-3) and hi == pytest.approx(0.9144, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo < 1.0
    assert wilson_interval(0, 200)[0] == 0.0
    assert wilson_lower_one_sided(86, 100) > wilson_interval(86, 100)[0]


def test_always_yes_on_a_skewed_split_is_exposed():
    records = [rec(i, "YES" if i < 132 else "NO", "YES") for i in range(150)]
    block = score_block(records)
    assert block["accuracy"] == pytest.approx(0.88)
    assert block["majority_baseline"] == pytest.approx(0.88)
    assert block["balanced_accuracy"] == pytest.approx(0.5)


def test_unparsed_is_counted_and_wrong():
    records = [rec(1, "YES", None), rec(2, "NO", "NO"), rec(3, "NO", None)]
    block = score_block(records)
    assert block["unparsed"] == 2 and block["correct"] == 1
    assert block["answer_counts"] == {"NO": 1, "UNPARSED": 2}
    assert block["balanced_accuracy"] == pytest.approx((0 + 0.5) / 2)


def test_score_stage_by_difficulty():
    records = [rec(1, "YES", "YES", "EASY"), rec(2, "NO", "YES", "HARD"), rec(3, "NO", "NO", "HARD")]
    block = score_stage(records)
    assert list(block["by_difficulty"]) == ["EASY", "HARD"]
    assert block["by_difficulty"]["HARD"]["accuracy"] == 0.5
    assert "ci95" in block["by_difficulty"]["HARD"]


def test_mcnemar():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_one_sided(20, 0) == pytest.approx(2**-20)
    assert mcnemar_one_sided(0, 20) == 1.0
    assert math.isclose(mcnemar_one_sided(3, 3), 0.65625)


def test_paired_comparison():
    a = [rec(i, "YES", "YES") for i in range(10)]
    b = [rec(i, "YES", "YES" if i < 7 else "NO") for i in range(10)]
    cmp = paired_comparison(a, b)
    assert cmp["paired"] == 10 and cmp["only_a_correct"] == 3 and cmp["only_b_correct"] == 0
    assert cmp["answer_agreement"] == 0.7
