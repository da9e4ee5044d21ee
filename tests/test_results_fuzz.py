"""Random and mutated results files fed to ``lrl rescore``, ``lrl check`` and ``lrl report``: each
ends in exit 0 (or 1 for a check that finds a regression) or in a clean exit 2 with one line on
stderr, never in a traceback or an internal error. Mutations start from a real small run's file
(see conftest) and from a file in the original experiment's format."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lrl_harness.cli.app import main

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _paths(node, prefix=()):
    """Every path into a JSON tree (keys and list indexes)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw, base: dict):
    """``base`` with one to three places replaced by random JSON, deleted, or emptied."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "empty"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "empty":
            parent[path[-1]] = type(parent[path[-1]])() if isinstance(parent[path[-1]], (dict, list, str)) else None
        else:
            parent[path[-1]] = draw(VALUES)
    return data


def run_lrl(args: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def assert_clean(code: int, err: str, allowed=(0, 2)) -> None:
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert code in allowed, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def _write(data) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lrl-fuzz-"))
    path = folder / "results.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def good(small_run) -> dict:
    data = json.loads((small_run / "results.json").read_text())
    for block in data["stages"].values():  # a few records per stage keep each example fast
        block["results"] = block["results"][:4]
    return data


@pytest.fixture(scope="module")
def original(good) -> dict:
    records = [{k: r[k] for k in ("problem_id", "problem", "response", "answer", "correct", "expected")}
               for r in good["stages"]["lrl"]["results"]]
    return {"lrl": {"stage": "Stage 3", "total": len(records), "correct": 4, "accuracy": 1.0, "results": records}}


def test_rescore_survives_mutated_files(good, original):
    @FUZZ
    @given(st.one_of(mutated(good), mutated(original)))
    def check_one(data):
        code, err = run_lrl(["rescore", str(_write(data))])
        assert_clean(code, err)

    check_one()


def test_rescore_survives_random_json():
    @FUZZ
    @given(VALUES)
    def check_one(data):
        code, err = run_lrl(["rescore", str(_write(data))])
        assert_clean(code, err)

    check_one()


def test_check_survives_mutated_files(good):
    base = _write(good)

    @FUZZ
    @given(mutated(good), st.booleans())
    def check_one(data, as_baseline):
        path = _write(data)
        args = ["check", str(base), "--baseline", str(path)] if as_baseline else [
            "check", str(path), "--baseline", str(base)]
        code, err = run_lrl(args)
        assert_clean(code, err, allowed=(0, 1, 2))

    check_one()


@pytest.mark.slow
def test_report_survives_mutated_files(good):
    @settings(FUZZ, max_examples=15)
    @given(mutated(good))
    def check_one(data):
        path = _write(data)
        code, err = run_lrl(["report", str(path), "--out", str(path.parent / "report")])
        assert_clean(code, err)

    check_one()


def test_report_survives_mutated_tables(good):
    """The report's tables (not its plots, which take seconds) on mutated files."""
    from lrl_harness.api.errors import LrlError
    from lrl_harness.reporting.report import all_tables
    from lrl_harness.results.io import load_results

    @FUZZ
    @given(mutated(good))
    def check_one(data):
        path = _write(data)
        try:
            results = load_results(path)
        except LrlError as exc:
            assert "\n" not in str(exc)
            return
        for table in all_tables(results):
            table.rich()
            table.markdown()

    check_one()
