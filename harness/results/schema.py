"""The results file, declared: pydantic models of every block an lrl-harness results file holds.

``Results`` is the whole file (``lrl schema`` prints its JSON Schema); its stages, records and score
blocks come from ``score_schema``. Every model accepts keys it does not declare (a plugin or a later
stage may add its own) and checks every declared field strictly: counts are non-negative integers,
rates numbers from 0 to 1, texts strings, flags true or false. ``results.read_results`` reads a file
into ``Results`` and names the first wrong field in one line.

Schema version 2 declares ``truncated`` (answers cut off at the token limit) in every score block: a
count, or null where the records cannot tell. ``results.upgrade_v1`` reads version-1 files into it.
"""

from __future__ import annotations

from typing import Any, Literal

from lrl_harness.results.format import SCHEMA, SCHEMA_VERSION
from lrl_harness.results.records import (
    AnyRecord,
    Count,
    Figures,
    Identity,
    Interval,
    LossCurve,
    Model,
    Number,
    ProblemId,
    Rate,
    Record,
    Recorded,
    ScoreBlock,
    StageBlock,
    Usage,
    Who,
)
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["Results", "Benchmarks", "BenchEntry", "LevelBlock", "Load", "Latency", "Throughput", "Memory",
           "Paired", "Ratio", "Machine", "Provenance", "Transfer", "Training", "Cost", "Export", "Parity",
           "ParityEntry", "OriginalStage", "AnyRecord", "Record", "Recorded", "ScoreBlock", "StageBlock",
           "Identity", "Usage", "Who", "Comparison", "ComparedBlock", "ComparedPair", "ComparedSide",
           "Difference", "Discordant", "COMPARISON_SCHEMA"]


# --- benchmarks -------------------------------------------------------------------------------


class Latency(Figures):
    """Seconds per request: mean and percentiles."""

    mean_s: Number | None = None
    p50_s: Number | None = None
    p90_s: Number | None = None
    p95_s: Number | None = None
    p99_s: Number | None = None
    min_s: Number | None = None
    max_s: Number | None = None


class Throughput(Figures):
    prefill_tokens_per_s: Number | None = None
    decode_tokens_per_s: Number | None = None
    output_tokens_per_s: Number | None = None
    problems_per_s: Number | None = None


class Memory(Figures):
    peak_rss_mib: Number | None = None
    rss_growth_mib: Number | None = None
    gpu_max_allocated_mib: Number | None = None
    gpu_max_reserved_mib: Number | None = None
    note: str | None = None


class Goodput(Model):
    slo: dict[str, Any] | None = None
    share_of_requests: Number | None = None
    share_correct_within_slo: Number | None = None
    requests_per_s: Number | None = None


class Load(Figures):
    """One load level's figures: latency distributions (end to end, to first token, between tokens,
    per output token), throughput, errors, retries, the measured peak in flight and goodput."""

    e2e: Latency
    ttft: Latency
    itl: Latency
    tpot: Latency
    requests_per_s: Number | None
    output_tokens_per_s: Number | None
    errors: Count
    retries: Count
    peak_in_flight: Count
    requests: Count | None = None
    level: dict[str, Any] | None = None
    error_examples: list[str] | None = None
    goodput: Goodput | None = None


class Paired(Model):
    """A paired comparison with a reference: problems right in one only, exact McNemar p."""

    paired: Count | None = None
    only_a_correct: Count = 0
    only_b_correct: Count = 0
    mcnemar_p: Number = 1.0
    reference: str | None = None


class LevelBlock(Model):
    """One load level of a benchmarked target: ``skipped`` (with why), or measured: the accuracy
    figures of its answers and ``load``."""

    level: dict[str, Any] | None = None
    skipped: str | None = None
    load: Load | None = None
    total: Count | None = None
    correct: Count | None = None
    unparsed: Count | None = None
    truncated: Count | None = None
    accuracy: Rate | None = None
    balanced_accuracy: Rate | None = None
    majority_baseline: Rate | None = None
    ci95: Interval | None = None
    paired_vs_reference: Paired | None = None
    results: list[Record] = []

    @model_validator(mode="after")
    def _measured_has_figures(self):
        if self.load is not None:
            missing = [k for k in ("total", "correct", "unparsed", "accuracy", "balanced_accuracy",
                                   "majority_baseline") if getattr(self, k) is None]
            if missing:
                raise PydanticCustomError("lacks", "lacks {fields}", {"fields": ", ".join(missing)})
        return self


class BenchModel(Model):
    path: str | None = None
    name: str | None = None
    adapter: str | None = None
    tokenizer: str | None = None
    dtype: str | None = None


class BenchEntry(ScoreBlock):
    """One benchmarked target: its accuracy figures, then latency, time to first token, throughput,
    memory and load time; under load, one block per level (the top-level figures are the reference
    level's)."""

    label: str | None = None
    backend: str | None = None
    model: BenchModel | None = None
    options: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    load_s: Number | None = None
    warmup: Count | None = None
    repeats: Count | None = None
    batch: Count | None = None
    threads: Count | None = None
    latency: Latency | None = None
    ttft: Latency | None = None
    throughput: Throughput | None = None
    memory: Memory | None = None
    tokens: dict[str, Any] | None = None
    spread: dict[str, Any] | None = None
    reference_level: str | None = None
    levels: dict[str, LevelBlock] | None = None


class Ratio(Figures):
    """``A/B`` of two targets measured together: above 1, A is slower (latency) or faster (problems/s)."""

    latency_mean: Number | None = None
    latency_p50: Number | None = None
    problems_per_s: Number | None = None
    latency_mean_ci95: Interval | None = None


class Gpu(Model):
    name: str | None = None
    compute_capability: str | None = None
    memory_gib: Number | None = None


class Machine(Model):
    """Where it ran: CPU, cores, GPU, Python and package versions."""

    cpu: str | None = None
    cores: Count | None = None
    gpu: Gpu | None = None
    packages: dict[str, Any] | None = None


class Comparability(Model):
    """A key over the hardware and software that timings depend on, and what went into it."""

    key: str | None = None
    fields: dict[str, Any] | None = None


class Benchmarks(Identity):
    """``lrl bench``: every target measured on the same problems, and the ratios between them."""

    n: Count | None = None
    created: str | None = None
    settings: dict[str, Any] | None = None
    machine: Machine | None = None
    comparability: Comparability | None = None
    backends: dict[str, BenchEntry] | None = None
    ratios: dict[str, Ratio] | None = None
    run: str | None = None


# --- the rest of a run ------------------------------------------------------------------------


class Provenance(Model):
    """What a run depended on: machine, seeds, prompt version and hashes, strategy, transfer data and
    adapter hashes, and (for ``lrl rescore``) the source file's own metadata."""

    created: str | None = None
    machine: Machine | None = None
    seeds: dict[str, Any] | None = None
    prompt_version: str | None = None
    prompt_hashes: dict[str, str] | None = None
    generation_budget: dict[str, Any] | None = None
    strategy: str | None = None
    strategy_sha256: str | None = None
    transfer_sha256: str | None = None
    adapter_sha256: str | None = None
    source_metadata: dict[str, Any] | None = None


class Transfer(Model):
    """The student's training examples: format, source (code or teacher), which problems (``draw``:
    balanced, or the preset's original draw) and how many equal a test problem, counts, hash."""

    format: str | None = None
    source: str | None = None
    draw: str | None = None
    test_overlap: Count | None = None
    examples: Count | None = None
    yes: Count | None = None
    no: Count | None = None
    dropped_by_solver: Count | None = None
    seed: int | None = None
    strategy_in_prompt: bool | None = None
    sha256: str | None = None
    usage: Usage | None = None


class Training(Model):
    """The LoRA training: settings, steps, examples, loss curve (``[step, loss]`` pairs), adapter hash."""

    settings: dict[str, Any] | None = None
    steps: Count | None = None
    examples: Count | None = None
    elapsed_s: Number | None = None
    loss_curve: LossCurve | None = None
    final_loss: Number | None = None
    adapter_sha256: str | None = None


class ExportFile(Model):
    path: str
    sha256: str | None = None
    bytes: Count | None = None
    quant: str | None = None
    kind: str | None = None


class Export(Model):
    """The GGUF files written after training (paths relative to the run folder)."""

    converter_version: str | None = None
    source: dict[str, Any] | None = None
    files: dict[str, ExportFile] = {}
    elapsed_s: Number | None = None
    merged_dir: str | None = None
    merged_sha256: str | None = None


class ParityEntry(ScoreBlock):
    """One engine of the parity check, on the same prompts as the reference."""

    mean_latency_s: Number | None = None
    prompt_tokens_checked: bool | None = None
    info: dict[str, Any] | None = None
    answers_from: str | None = None


class Parity(Model):
    """The exported engines answering the run's prompts beside the reference engine."""

    reference: str | None = None
    problems: Count | None = None
    prompts_sha256: str | None = None
    backends: dict[str, ParityEntry] = {}
    comparisons: dict[str, dict[str, Any]] = {}
    not_checked: list[str] = []
    """Exported GGUF types parity left out (the run's or its recipe's ``parity`` choice)."""


class Cost(Model):
    """Teacher usage per stage, what was paid, and when the student pays back its one-off cost."""

    per_stage: dict[str, Usage] | None = None
    paid_usd: Number | None = None
    break_even: dict[str, Any] | None = None
    note: str | None = None


class Results(Identity):
    """An lrl-harness results file (``results.json`` of a run, or the output of ``lrl bench`` and
    ``lrl rescore``)."""

    schema_id: Literal[SCHEMA] = Field(alias="schema")
    schema_version: Literal[SCHEMA_VERSION]
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    provenance: Provenance | None = None
    stages: dict[str, StageBlock]
    teacher: Who | None = None
    transfer: Transfer | None = None
    training: Training | None = None
    export: Export | None = None
    parity: Parity | None = None
    cost: Cost | None = None
    benchmarks: Benchmarks | None = None
    elapsed_s: Number | None = None
    # the run's peak resident memory so far (MiB), noted after each step: the first step whose
    # figure reaches the last holds the run's peak
    peak_rss_mib: dict[str, Number] | None = None

    @property
    def backends(self) -> dict[str, BenchEntry]:
        """The benchmarked targets by label (none without a ``benchmarks`` section)."""
        return (self.benchmarks.backends if self.benchmarks else None) or {}


class OriginalStage(Model):
    """A stage of the original experiment's published file: figures, and its records."""

    total: Number | None = None
    correct: Number | None = None
    accuracy: Number | None = None
    results: list[AnyRecord]


# --- lrl compare --------------------------------------------------------------------------------

COMPARISON_SCHEMA = "lrl-harness/comparison"


class ComparedBlock(Model):
    """One compared block: a stage or a bench target of a file, re-graded on read, with its figures
    over all its problems and where it was measured."""

    label: str
    file: str
    name: str
    kind: Literal["stage", "target"]
    source: str | None = Field(None, description="'lrl-harness' or 'original experiment'")
    task: str | None = None
    preset: str | None = None
    split: str | None = None
    who: str | None = None
    total: Count
    correct: Count
    unparsed: Count
    truncated: Count | None = None
    accuracy: Rate
    balanced_accuracy: Rate
    majority_baseline: Rate
    majority_label: str | None = None
    ci95: Interval
    recorded_accuracy: Number | None = None
    grade_changes: dict[str, Count] | None = None
    machine: dict[str, Any] | None = None


class ComparedSide(Model):
    """One side of a pair, on the paired problems only: accuracy with its Wilson 95% interval,
    balanced accuracy with its paired-bootstrap 95% interval."""

    block: str
    correct: Count
    unparsed: Count
    truncated: Count | None = None
    accuracy: Rate
    ci95: Interval
    balanced_accuracy: Rate
    balanced_ci95: Interval
    majority_baseline: Rate
    majority_label: str | None = None


class Difference(Model):
    """A minus B, and its 95% interval (paired bootstrap over problems, percentile)."""

    estimate: Number
    ci95: Interval


class Discordant(Model):
    """A paired problem that exactly one side got right: both answers and the text that decided each."""

    id_a: ProblemId
    id_b: ProblemId
    problem: str | None = None
    expected: str | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    evidence_a: str | None = None
    evidence_b: str | None = None
    right: Literal["a", "b"]


class ComparedPair(Model):
    """Two blocks on the problems they share (paired by the task's description of a problem, its
    content; a problem asked twice pairs occurrence by occurrence)."""

    a: str
    b: str
    paired: Count
    only_in_a: Count
    only_in_b: Count
    side_a: ComparedSide
    side_b: ComparedSide
    accuracy_difference: Difference
    balanced_accuracy_difference: Difference
    both_correct: Count
    only_a_correct: Count
    only_b_correct: Count
    neither_correct: Count
    answers_agree: Count
    mcnemar_p: Number = Field(description="exact two-sided McNemar p over the discordant pairs")
    discordant: list[Discordant] = []


class Comparison(Model):
    """``lrl compare --format json``: the blocks, then every pair of them."""

    schema_id: Literal[COMPARISON_SCHEMA] = Field(COMPARISON_SCHEMA, alias="schema")
    schema_version: Literal[1] = 1
    task: str | None = None
    grading: str | None = None
    interval: str | None = None
    resamples: Count | None = None
    seed: int | None = None
    blocks: list[ComparedBlock]
    pairs: list[ComparedPair]
    notes: list[str] = []
