"""The pytest plugin, run inside pytest's own ``pytester``: accuracy gates with their interval, latency
gates through pytest-benchmark, and the regression check as a fixture.

The backend in the inner test runs is a stand-in registered through ``lrl_plugins`` (real models are
gated elsewhere): it reads the meetings from the prompt and answers with the task's exact solver,
wrong on every k-th prompt of a call when asked to be, after an optional sleep.
"""

import json

pytest_plugins = ["pytester"]

CONFTEST = '''
import re
import time

import pytest

from lrl_harness import hookimpl
from lrl_harness import Completion
from lrl_harness_tasks.meeting_rooms.solver import max_simultaneous

LOADS = []


class StandInBackend:
    name = "standin"

    def __init__(self, model, options):
        self.options = options
        LOADS.append(model.path)

    def generate(self, prompts, settings, progress=None):
        time.sleep(self.options.get("delay_s", 0.0))
        out = []
        for i, prompt in enumerate(prompts, start=1):
            meetings = [(int(a), int(b)) for a, b in re.findall(r"\\[(\\d+)-(\\d+)\\]", prompt)]
            rooms = int(re.search(r"Available rooms: (\\d+)", prompt).group(1))
            answer = "YES" if max_simultaneous(meetings) <= rooms else "NO"
            every = self.options.get("wrong_every")
            if every and i % every == 0:
                answer = {"YES": "NO", "NO": "YES"}[answer]
            out.append(Completion(f"Answer: {answer}", prompt_tokens=10, completion_tokens=2))
        return out

    def info(self):
        return {"backend": "standin"}

    def close(self):
        pass


class StandIns:
    @staticmethod
    @hookimpl
    def register_backends(register):
        register("standin", StandInBackend, description="stand-in for tests")


@pytest.fixture(scope="session")
def lrl_plugins():
    return [StandIns]


@pytest.fixture
def loads():
    return LOADS
'''


def test_accuracy_gate_uses_the_lower_bound_by_default(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gate='''
        import pytest

        def test_solver_quality_passes(lrl_accuracy):
            result = lrl_accuracy(backend="standin", model="m", n=120)
            assert (result.accuracy, result.balanced_accuracy, result.n, result.unparsed) == (1.0, 1.0, 120, 0)
            result.assert_at_least(accuracy=0.9, balanced_accuracy=0.9).assert_unparsed_at_most(0)

        def test_point_estimate_versus_lower_bound(lrl_accuracy):
            result = lrl_accuracy(backend="standin", model="m", n=30, options={"wrong_every": 10})
            assert result.accuracy == 0.9
            result.assert_at_least(accuracy=0.85, by="point")
            assert result.lower_bound("accuracy") < 0.85
            with pytest.raises(pytest.fail.Exception, match="lower bound"):
                result.assert_at_least(accuracy=0.85)

        def test_a_weak_model_fails(lrl_accuracy):
            lrl_accuracy(backend="standin", model="m", n=40, options={"wrong_every": 2}).assert_at_least(
                balanced_accuracy=0.8)

        def test_answers_and_models_are_reused(lrl_accuracy, loads):
            lrl_accuracy(backend="standin", model="m", n=120)
            assert loads == ["m", "m", "m"]  # one load per (model, options), kept for the session
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*standin m: balanced accuracy: one-sided 95% lower bound 0.* (point 0.*, n=40) is below 0.8 "
        "(unparsed 0, majority baseline 0.*)*"])


def test_latency_gate_through_pytest_benchmark(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_speed='''
        import os

        def test_latency(lrl_latency):
            delay = float(os.environ.get("STANDIN_DELAY", "0"))
            lrl_latency(backend="standin", model="m", n=4, warmup_rounds=1, options={"delay_s": delay})
    ''')
    storage = pytester.path / "bench-store"
    common = ["-p", "no:cacheprovider", f"--benchmark-storage=file://{storage}"]
    first = pytester.runpytest(*common, "--benchmark-autosave")
    first.assert_outcomes(passed=1)
    [saved] = list(storage.rglob("*.json"))
    [bench] = json.loads(saved.read_text())["benchmarks"]
    assert bench["name"] == "test_latency"
    assert bench["stats"]["rounds"] == 4  # one problem per round: latency per problem
    assert bench["extra_info"] == {"backend": "standin", "model": "m", "task": "meeting-rooms",
                                   "preset": "balanced", "split": "test", "n": 4, "max_new_tokens": 128}

    # 50 ms per call against a baseline of microseconds: the comparison must fail the run.
    monkeypatch.setenv("STANDIN_DELAY", "0.05")
    slower = pytester.runpytest_subprocess(*common, "--benchmark-compare=0001",
                                           "--benchmark-compare-fail=mean:100%")
    assert slower.ret != 0
    slower.stdout.fnmatch_lines(["*test_latency (0001*", "*test_latency (NOW)*"])
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()


def test_check_fixture_fails_a_regressed_run(pytester):
    pytester.makepyfile(test_regression='''
        from lrl_harness.evaluation.statistics import score_stage
        from lrl_harness.results.io import new_results
        from lrl_harness.results.files import write_json


        def results(wrong):
            recs = [{"problem_id": f"p{i}", "difficulty": "EASY", "problem": f"problem {i}",
                     "expected": "YES" if i % 2 else "NO", "correct": i not in wrong,
                     "answer": ("YES" if i % 2 else "NO") if i not in wrong else ("NO" if i % 2 else "YES")}
                    for i in range(100)]
            data = new_results(task="meeting-rooms", preset="balanced", split="test")
            data["stages"]["lora"] = {**score_stage(recs), "results": recs}
            return data


        def test_same_passes(lrl_check, tmp_path):
            write_json(tmp_path / "a.json", results(set()))
            write_json(tmp_path / "b.json", results(set()))
            assert lrl_check(tmp_path / "a.json", tmp_path / "b.json").passed


        def test_regressed_fails(lrl_check):
            lrl_check(results(set(range(0, 100, 5))), results(set()))
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*regression against the baseline:*",
                                 "*FAIL lora: *accuracy 1.000 -> 0.800 (*20 of 100 problems flipped*"])
