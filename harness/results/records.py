"""The parts every results file is made of: strict field types, one answered problem (``Record``),
the accuracy figures of a set of answers (``ScoreBlock``) and a pipeline stage (``StageBlock``).
``schema`` builds the whole file from them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, model_validator
from pydantic_core import PydanticCustomError


def _must_be(want: str) -> WrapValidator:
    """Any failure of the wrapped type reads ``must be <want>``."""
    def check(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("must_be", "must be {want}", {"want": want}) from None
    return WrapValidator(check)


Count = Annotated[int, Field(ge=0), _must_be("a non-negative integer")]
Rate = Annotated[float, Field(ge=0, le=1), _must_be("a number from 0 to 1")]
Number = Annotated[float, _must_be("a number")]
Interval = Annotated[list[float], Field(min_length=2, max_length=2), _must_be("a list of two numbers")]
ProblemId = Annotated[str | int, _must_be("a string")]
LossCurve = Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]],
                      _must_be("a list of [step, loss] pairs")]


class Model(BaseModel):
    """Strict types (no coercion: ``"0.9"`` is not a number, ``1`` is not true); unknown keys kept."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    def __getitem__(self, key: str):
        """Read access as a mapping (``record["correct"]``), so code written for the JSON form reads the
        typed form too (observer hooks receive typed objects)."""
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default=None):
        return getattr(self, key, default)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Figures(Model):
    """Measured figures: a key that is not declared holds a number or null, or a note (a string, a list,
    an object); a key named like a figure (``_s``, ``_per_s``, ``_mib``) holds a number or null."""

    @model_validator(mode="after")
    def _undeclared_figures(self):
        for name, value in (self.__pydantic_extra__ or {}).items():
            if value is None or _is_number(value) or isinstance(value, (dict, list)):
                continue
            if isinstance(value, str) and not name.endswith(("_s", "_per_s", "_mib")):
                continue
            raise PydanticCustomError("must_be", "must be {want}",
                                      {"want": "a number", "field": name, "value": value})
        return self


# --- one answered problem ---------------------------------------------------------------------


class AnyRecord(Model):
    """One answered problem, as any results file may hold it (the original experiment's records carry
    only some of these)."""

    problem_id: ProblemId | None = None
    difficulty: str | None = None
    problem: str | None = None
    expected: str | None = None
    answer: str | None = None
    correct: bool | None = None
    response: str | None = None
    prompt_tokens: Number | None = None
    completion_tokens: Number | None = None
    latency_s: Number | None = None


class Record(AnyRecord):
    """One answered problem of an lrl-harness file: ``answer`` null means unparsed (counted wrong)."""

    problem_id: ProblemId
    expected: str | None
    answer: str | None
    correct: bool
    finish_reason: str | None = None
    truncated: bool | None = None
    prompt_sha256: str | None = None
    ttft_s: Number | None = None
    usage: dict[str, Any] | None = None


# --- score blocks -----------------------------------------------------------------------------


class Who(Model):
    """What produced a block, as its plugin reports it: a student (name, model path, backend, adapter)
    or a teacher (name, model)."""

    student: str | None = None
    teacher: str | None = None
    model: Any = None
    backend: Any = None
    name: Any = None
    path: str | None = None
    adapter: str | None = None
    settings: dict[str, Any] | None = None
    is_language_model: bool | None = None


class Usage(Model):
    """Teacher requests, cache hits, tokens, retries and cost (USD) of one stage."""

    requests: Count | None = None
    cached: Count | None = None
    made: Count | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    retries: Count | None = None
    cost_usd: Number | None = None
    list_cost_usd: Number | None = None
    cost_per_problem_usd: Number | None = None
    models: list[Any] | None = None
    unpriced_models: list[Any] | None = None


class ScoreBlock(Model):
    """The accuracy figures of one set of answered problems (a stage, a difficulty, a benchmarked
    backend): accuracy beside balanced accuracy, the majority baseline, the unparsed and truncated
    counts and the Wilson 95% interval."""

    total: Count
    correct: Count
    unparsed: Count
    truncated: Count | None = Field(description="answers cut off at the token limit; null: not known")
    accuracy: Rate
    balanced_accuracy: Rate
    majority_baseline: Rate
    majority_label: str | None = None
    ci95: Interval | None = None
    recall: dict[str, Number] | None = None
    answer_counts: dict[str, Count] | None = None
    by_difficulty: dict[str, ScoreBlock] | None = None
    elapsed_s: Number | None = None
    who: Who | None = None
    usage: Usage | None = None
    results: list[Record] = []


class Recorded(Model):
    """A re-graded stage's figures as the file recorded them."""

    total: Number | None = None
    correct: Number | None = None
    accuracy: Number | None = None


class StageBlock(ScoreBlock):
    """One pipeline stage (``student_baseline``, ``teacher_baseline``, ``bootstrap``, ``lrl``, ``lora``),
    or a stage re-graded by ``lrl rescore`` (``recorded``, ``grade_changes``)."""

    stage: str | None = None
    label: str | None = None
    recipe: str | None = None
    split: str | None = None
    strategy_source: str | None = None
    strategy_sha256: str | None = None
    transfer_format: str | None = None
    student: dict[str, Any] | None = None
    recorded: Recorded | None = None
    recorded_label_mismatches: Count | None = None
    grade_changes: dict[str, Count] | None = None


class Identity(Model):
    """What was measured: task, problem preset and split."""

    task: str | None = None
    preset: str | None = None
    split: str | None = None
