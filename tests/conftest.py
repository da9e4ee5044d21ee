"""Shared fixtures. Tests build their models into one cache folder per machine (set
LRL_HARNESS_CACHE to choose it; tox does), never into the user's own cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

if not os.environ.get("LRL_HARNESS_CACHE"):
    os.environ["LRL_HARNESS_CACHE"] = str(Path(tempfile.gettempdir()) / "lrl-harness-test-cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def offline_run(tmp_path_factory):
    """The README's `lrl run` on its offline default, run once for the whole session (minutes).

    Several test files read its results, its adapter and its GGUF files.
    """
    from lrl_harness.cli import main
    from lrl_harness.results import load_results

    out = tmp_path_factory.mktemp("offline-run") / "run"
    code = main(["run", "--quiet", "--out", str(out)])
    assert code == 0, "lrl run failed"
    return out, load_results(out / "results.json")
