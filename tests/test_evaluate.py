"""The evaluator: prompts, asking a backend in batches, and the one record every results file keeps.

The backend is a stand-in that answers YES to every prompt."""

from lrl_harness import Completion, GenerationSettings, sha256_text
from lrl_harness.evaluation.ask import ask, evaluate, make_record, regrade, student_prompts

RECORD_KEYS = ["problem_id", "difficulty", "problem", "meetings", "rooms", "max_simultaneous", "expected", "answer",
               "correct", "response", "finish_reason", "truncated", "prompt_sha256", "prompt_tokens",
               "completion_tokens", "latency_s", "ttft_s"]


class YesBackend:
    """Answers YES to every prompt and remembers each call's prompts."""

    name = "yes"

    def __init__(self, finish_reason="stop"):
        self.calls, self.finish_reason = [], finish_reason

    def generate(self, prompts, settings, progress=None):
        self.calls.append(list(prompts))
        out = [Completion("Answer: YES", prompt_tokens=7, completion_tokens=3, latency_s=0.1234567, ttft_s=0.01,
                          meta={"finish_reason": self.finish_reason}) for _ in prompts]
        if progress is not None:
            progress(len(prompts))
        return out


def test_a_record_has_every_key_in_order(task):
    [problem] = task.problems("balanced", "test", n=1)
    completion = Completion("Answer: NO", prompt_tokens=5, completion_tokens=2, latency_s=0.5, cached=True,
                            meta={"finish_reason": "length", "input_tokens": 5, "model": "m"})
    record = make_record(task, problem, "the prompt", completion)
    assert list(record) == [*RECORD_KEYS, "cached", "usage"]
    assert record["problem"] == task.describe(problem) and record["prompt_sha256"] == sha256_text("the prompt")
    assert record["answer"] == "NO" and record["correct"] == (problem.expected == "NO")
    assert record["truncated"] is True and record["usage"] == {"input_tokens": 5, "model": "m", "cached": True}
    timed = make_record(task, problem, "p", Completion("x"), 1.23456789)
    assert timed["latency_s"] == 1.234568 and "usage" not in timed and "cached" not in timed
    failed = make_record(task, problem, "p", Completion("YES"), error="timeout", extra={"retries": 2})
    assert failed["answer"] is None and failed["correct"] is False
    assert (failed["error"], failed["retries"]) == ("timeout", 2)


def test_ask_in_batches_from_a_start(task):
    problems = task.problems("balanced", "test", n=7)
    prompts = student_prompts(task, problems, None, render=lambda text: f"<{text}>")
    assert prompts[0] == f"<{task.student_prompt(problems[0])}>"
    backend, seen = YesBackend(), []
    calls = list(ask(backend, task, problems, prompts, GenerationSettings(), size=3, start=1, progress=seen.append))
    assert [c.start for c in calls] == [1, 4] and [len(c) for c in backend.calls] == [3, 3]
    assert seen == [3, 6]  # prompts answered so far, from the start
    records = [r for c in calls for r in c.records]
    assert [r["problem_id"] for r in records] == [p.id for p in problems[1:]]
    assert all(r["latency_s"] == 0.123457 and r["ttft_s"] == 0.01 for r in records)
    assert all(c.wall_s >= 0 for c in calls)
    whole = evaluate(YesBackend(), task, problems, prompts, GenerationSettings())
    assert len(whole) == 7 and [list(r) for r in whole] == [RECORD_KEYS + ["usage"]] * 7


def test_regrade_keeps_what_was_recorded(task):
    [problem] = task.problems("balanced", "test", n=1)
    stored = {"response": "Answer: YES", "latency_s": 0.25, "prompt_tokens": 9, "answer": "NO"}
    record = regrade(task, problem, stored, "YES", "YES", truncated=False, extra={"rule": "r"})
    assert record["answer"] == "YES" and record["correct"] is True and record["rule"] == "r"
    assert (record["latency_s"], record["prompt_tokens"], record["ttft_s"]) == (0.25, 9, None)
