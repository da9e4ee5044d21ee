"""Asking a model a task's problems, and the record a results file keeps of each answer.

The steps, each in one place: render a problem into the prompt a model sees (:func:`student_prompts`,
through a chat template when the student has one), generate through any backend (:func:`generate`,
:func:`ask` for a list of problems in batches), grade the text with the task and keep the timings
(:func:`make_record`). Every per-problem record in a results file is made by :func:`record`: a fresh answer
(run stages, teacher answers, benchmarks, parity, the pytest fixtures) or a stored one graded again
(``lrl rescore``, :func:`regrade`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lrl_harness.api.contract import Completion, GenerationSettings, Problem, sha256_text

Render = Callable[[str], str]
"""Turns a task's prompt text into the exact string a model is given (a chat template)."""


# --- prompts ----------------------------------------------------------------------------------


def chat_template(tokenizer) -> Render:
    """Rendering through ``tokenizer``'s chat template, with the generation prompt (instruct students)."""
    from lrl_harness.api.prompting import render_prompt

    return lambda text: render_prompt(tokenizer, text, True)


def rendered(texts: Sequence[str], render: Render | None = None) -> list[str]:
    """``texts`` as a model is given them: through ``render`` when there is one, else unchanged."""
    return [render(text) for text in texts] if render else list(texts)


def student_prompts(task, problems: Sequence[Problem], strategy: str | None = None,
                    render: Render | None = None) -> list[str]:
    """The prompt a student is asked for each problem: the task's student prompt (with ``strategy``
    when it sees one), rendered."""
    return rendered([task.student_prompt(p, strategy) for p in problems], render)


# --- the record -------------------------------------------------------------------------------


def record(problem: Problem, description: str, expected: str | None, answer: str | None, response: str | None, *,
           finish_reason: str | None = None, truncated: bool = False, prompt_sha256: str | None = None,
           prompt_tokens: int | None = None, completion_tokens: int | None = None, latency_s: float | None = None,
           ttft_s: float | None = None, cached: bool = False, usage: dict | None = None, error: str | None = None,
           extra: dict | None = None) -> dict:
    """One problem's graded answer, in the form a results file and a checkpoint keep, checked against the
    declared :class:`~lrl_harness.results.records.Record` as it is made (a writer's mistake fails here,
    not at the next ``lrl report``).

    The generation fields (prompt hash, tokens, timings, finish reason) are None for a stored answer
    that did not record them; ``cached``, ``usage`` and ``error`` are written only when set, ``extra``
    last. ``answer`` None means unparsed, which counts as wrong."""
    from lrl_harness.results.records import Record

    made = {
        "problem_id": problem.id,
        "difficulty": problem.difficulty,
        "problem": description,
        **{k: v for k, v in problem.data.items() if k != "id"},
        "expected": expected,
        "answer": answer,
        "correct": answer == expected,
        "response": response,
        "finish_reason": finish_reason,
        # the generation hit its token limit: the verdict may have been cut off (not the same as unparsed)
        "truncated": truncated,
        "prompt_sha256": prompt_sha256,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": _round(latency_s),
        "ttft_s": _round(ttft_s),
    }
    if cached:
        made["cached"] = True
    if usage is not None:
        made["usage"] = usage
    if error is not None:
        made["error"] = error
    made.update(extra or {})
    Record.model_validate(made)
    return made


def describe(task, problem: Problem) -> str:
    """The problem as one line (the task's ``describe``, else its data)."""
    describe_ = getattr(task, "describe", None)
    return describe_(problem) if describe_ else str(problem.data)


def usage_of(completion: Completion) -> dict:
    """What a results file keeps of an answer's cost: tokens, retries, model, API, and whether it
    came from the cache."""
    meta = completion.meta or {}
    usage = {k: meta[k] for k in ("input_tokens", "output_tokens", "retries", "model", "api") if k in meta}
    if completion.cached:
        usage["cached"] = True
    return usage


def make_record(task, problem: Problem, prompt: str, completion: Completion, latency_s: float | None = None, *,
                error: str | None = None, extra: dict | None = None) -> dict:
    """The record of one answered problem, graded with ``task.extract_answer``.

    ``latency_s`` defaults to the backend's own figure (a benchmark passes the wall time it
    measured). A request that failed passes its ``error``: it has no answer and is not correct."""
    meta = completion.meta or {}
    return record(
        problem, describe(task, problem), problem.expected,
        None if error is not None else task.extract_answer(completion.text), completion.text,
        finish_reason=meta.get("finish_reason"),
        truncated=meta.get("finish_reason") == "length",
        prompt_sha256=sha256_text(prompt),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=completion.latency_s if latency_s is None else latency_s,
        ttft_s=completion.ttft_s,
        cached=completion.cached,
        usage=usage_of(completion) if meta else None,
        error=error,
        extra=extra,
    )


def make_records(task, problems: Sequence[Problem], prompts: Sequence[str],
                 completions: Sequence[Completion]) -> list[dict]:
    """The records of answers already given, one per problem, in order."""
    return [make_record(task, p, prompt, c) for p, prompt, c in zip(problems, prompts, completions, strict=True)]


GENERATION_FIELDS = ("finish_reason", "prompt_sha256", "prompt_tokens", "completion_tokens", "latency_s", "ttft_s")
"""What a re-graded record carries over from the stored one, as it was recorded."""


def regrade(task, problem: Problem, stored: dict, answer: str | None, expected: str | None, *,
            truncated: bool, extra: dict | None = None) -> dict:
    """The record of a stored answer graded again: ``answer`` and ``expected`` are the new ones, the
    generation fields are the stored record's (None where it has none), ``extra`` holds the evidence."""
    return record(problem, describe(task, problem), expected, answer, stored.get("response"), truncated=truncated,
                  **{name: stored.get(name) for name in GENERATION_FIELDS}, extra=extra)


# --- generating -------------------------------------------------------------------------------


def generate(backend, prompts: Sequence[str], settings: GenerationSettings,
             progress: Callable[[int], None] | None = None) -> list[Completion]:
    """``backend.generate`` on ``prompts``; ``progress(done)`` is handed on only when given (a backend
    need not accept it)."""
    if progress is None:
        return backend.generate(list(prompts), settings)
    return backend.generate(list(prompts), settings, progress=progress)


@dataclass
class Answers:
    """One generate call: the index of its first problem, its completions and their records, and
    the call's wall time."""

    start: int
    completions: list[Completion]
    records: list[dict]
    wall_s: float


def ask(backend, task, problems: Sequence[Problem], prompts: Sequence[str], settings: GenerationSettings, *,
        size: int | None = None, start: int = 0,
        progress: Callable[[int], None] | None = None) -> Iterator[Answers]:
    """Ask ``backend`` the problems from index ``start`` on, ``size`` prompts per generate call (all
    in one call by default), and yield each call's graded answers as it returns. ``progress(done)``
    counts the prompts answered so far from ``start``."""
    if len(prompts) != len(problems):
        raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
    size = size or max(len(problems) - start, 1)
    for first in range(start, len(problems), size):
        batch, chunk = problems[first:first + size], prompts[first:first + size]
        on_progress = None if progress is None else (lambda n, _before=first - start: progress(_before + n))
        started = time.perf_counter()
        completions = generate(backend, chunk, settings, on_progress)
        wall = time.perf_counter() - started
        yield Answers(first, completions, make_records(task, batch, chunk, completions), wall)


def evaluate(backend, task, problems: Sequence[Problem], prompts: Sequence[str], settings: GenerationSettings,
             progress: Callable[[int], None] | None = None) -> list[dict]:
    """Every problem in one generate call: one record per problem, in order."""
    return [r for call in ask(backend, task, problems, prompts, settings, progress=progress)
            for r in call.records]


def _round(value):
    """Seconds to the microsecond; anything but a number (None, or what a stored record holds) as it is."""
    return round(value, 6) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
