"""Shared fixtures and helpers: test modules take what they share from here, never from each other.
Tests build their models into one cache folder per machine (set LRL_HARNESS_CACHE to choose it; tox
does), never into the user's own cache."""

from __future__ import annotations

import os
import re
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
    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results

    out = tmp_path_factory.mktemp("offline-run") / "run"
    code = main(["run", "--quiet", "--out", str(out)])
    assert code == 0, "lrl run failed"
    return out, load_results(out / "results.json")


# A whole `lrl run` small enough for a few seconds: a tiny student of one layer, 20 problems per
# split, 64 transfer examples, 20 LoRA steps, f32 export only.
SMALL_STUDENT = ("--student-opt", "hidden_size=32", "--student-opt", "num_layers=1", "--student-opt",
                 "num_heads=2", "--student-opt", "intermediate_size=64", "--student-opt", "bpe_vocab=300")


def _small_run_args(out, *extra, steps: int = 20) -> list[str]:
    return ["run", "--quiet", "--out", str(out), *SMALL_STUDENT, "--test-n", "20", "--train-n", "20",
            "--transfer-n", "64", "--lora-opt", f"max_steps={steps}", "--export", "f32", *extra]


@pytest.fixture(scope="session")
def small_run_args():
    """``small_run_args(out, *extra, steps=20)``: the arguments of a small `lrl run` into ``out``."""
    return _small_run_args


@pytest.fixture(scope="session")
def small_student():
    """The ``--student-opt`` arguments of the small tiny student."""
    return list(SMALL_STUDENT)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A complete small run (every stage, export and parity), made once per session."""
    from lrl_harness.cli.app import main

    out = tmp_path_factory.mktemp("small-run") / "run"
    assert main(_small_run_args(out)) == 0, "the small lrl run failed"
    return out


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create files in: a read-only folder, or (as root, whom
    permissions do not stop) a path under /sys, where nobody can create files."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except OSError:
        yield folder
    else:
        probe.unlink()
        yield Path("/sys/lrl-harness-unwritable")
    finally:
        folder.chmod(0o755)


@pytest.fixture(scope="session")
def task():
    """The meeting-rooms task."""
    from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

    return MeetingRoomsTask()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(tiny student directory, folder with its f32/q8_0/q4_k_m GGUFs), exported once per session."""
    from lrl_harness.pipeline.export import export_model
    from lrl_harness.util.paths import cache_dir
    from lrl_harness_plugins.tiny_student import build_tiny_student
    from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

    model = build_tiny_student(cache_dir(), MeetingRoomsTask(), seed=0)
    out = tmp_path_factory.getbasetemp() / "tiny-export"
    export_model(model, out)
    return model, out


_PROBLEM = re.compile(r"Meetings: (?P<meetings>.+)\nAvailable rooms: (?P<rooms>\d+)")


def solve_like_a_teacher(task, prompt: str) -> str:
    """Answers a solve prompt with the task's worked solution, anything else with a short note."""
    m = _PROBLEM.search(prompt)
    if not m:
        return "Journal: the sweep line with ends before starts settles every case."
    problem = task.parse_description(f"{m['meetings']} | {m['rooms']} rooms")
    return "Counting the overlaps.\n" + task.worked_solution(problem)


@pytest.fixture
def anthropic_server(monkeypatch, task):
    """``fake_anthropic.FakeAnthropic`` on 127.0.0.1, answering like a teacher (``solve_like_a_teacher``),
    with its key in ANTHROPIC_API_KEY and no ANTHROPIC_BASE_URL."""
    from fake_anthropic import FakeAnthropic

    key = "test-key"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with FakeAnthropic(lambda prompt: solve_like_a_teacher(task, prompt), api_key=key) as server:
        yield server
