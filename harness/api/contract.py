"""The data that flows between the core and its plugins."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Problem:
    """One task instance. ``data`` is task-specific and JSON-serialisable; ``expected`` is the label."""

    id: str
    difficulty: str
    data: dict
    expected: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every backend and teacher. Greedy by default."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass
class Completion:
    """One generated response with what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    cached: bool = False
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """What a backend should load.

    ``path`` is a Hugging Face directory or hub id (transformers, vllm), or a GGUF file (llamacpp),
    or a model name on a server (openai). ``adapter`` is an optional LoRA adapter directory.
    ``tokenizer`` names where the tokenizer lives when ``path`` has none (a GGUF file).
    """

    path: str
    name: str = ""
    adapter: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"


@dataclass
class TeacherRequest:
    """One request to a teacher. ``purpose`` is "solve", "journal" or "distill".

    Language-model teachers only read ``prompt``; the solver teacher reads ``problem``/``context``.
    """

    purpose: str
    prompt: str
    problem: Problem | None = None
    context: dict = field(default_factory=dict)


@dataclass
class StudentModel:
    """A student: a causal LM in Hugging Face format plus how to train it."""

    name: str
    path: str
    chat_template: bool = False
    strategy_in_prompt: bool = True
    transfer_format: str = "label"
    transfer_examples: int = 100
    lora: dict = field(default_factory=dict)
    max_new_tokens: int | None = 64
    """None: the pipeline derives it from the transfer format and the student's tokenizer."""
    export: tuple[str, ...] | None = None
    """GGUF types written after training when the run names none; None: f32, q8_0, q4_k_m."""
    parity: tuple[str, ...] | None = None
    """The exported GGUF types parity compares with the merged model when the run names none; None:
    every exported file."""
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PluginContext:
    """What the core hands a plugin factory that declares a ``context`` parameter, in place of
    private keys in its options: the plugin registry (to load another plugin, e.g. a teacher that
    runs a model on a backend), the cache folder, and whether only cached answers may be used."""

    registry: Any = None
    cache_dir: Any = None
    cache_only: bool = False


def call_factory(factory, context: PluginContext, **kwargs):
    """``factory(**kwargs)``, with ``context=`` too when the factory takes it (older factories that
    take only their documented arguments keep working)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "context" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["context"] = context
    return factory(**kwargs)


@runtime_checkable
class Task(Protocol):
    """A task plugin: its problems, its prompts and how its answers are graded. These are all the
    members the core uses (``tasks/meeting_rooms`` is the reference implementation).

    Optional capability, used where present: ``max_problems(preset, split, exclude=(), draw=...) ->
    int``, the largest ``n`` that ``problems`` (for ``split="transfer"``: ``transfer_examples``) can
    draw, so that ``lrl run`` refuses a larger size before any work. A task without it gets the
    core's ceiling (``pipeline.runner.MAX_PROBLEMS``)."""

    name: str
    labels: tuple[str, ...]
    """The answers a problem can have (``YES``/``NO``): balanced accuracy is the mean recall over them."""
    prompt_version: str
    initial_strategy: str
    reference_strategy: str
    transfer_formats: tuple[str, ...]
    """The formats transfer examples can be written in; optionally ``transfer_format_help`` (a dict of
    format -> one line) describes each in ``lrl run --help``."""

    # problems
    def splits(self, preset: str) -> dict[str, tuple[int, int]]:
        """``{split: (size, seed)}`` of a preset."""

    def problems(self, preset: str, split: str, n: int | None = None, seed: int | None = None,
                 exclude: list[Problem] = ()) -> list[Problem]: ...

    def solve(self, problem: Problem) -> str:
        """The right answer, computed (never a model's)."""

    def describe(self, problem: Problem) -> str:
        """The problem as one line, as results files keep it."""

    def parse_description(self, text: str, **fields) -> Problem: ...

    def problem_from_dict(self, d: dict) -> Problem: ...

    def to_json(self, problem: Problem) -> dict: ...

    # prompts
    def student_prompt(self, problem: Problem, strategy: str | None = None) -> str: ...

    def teacher_prompt(self, problem: Problem, strategy: str | None = None) -> str: ...

    def journal_prompt(self, batch: int, records: list[dict]) -> str: ...

    def distill_prompt(self, journal_tail: str, strategy: str) -> str: ...

    def prompt_hashes(self) -> dict[str, str]: ...

    # grading
    def extract_answer(self, text: str | None) -> str | None:
        """The final answer in a model's text, or None when it gives none (counted as unparsed)."""

    def check_solution(self, problem: Problem, text: str) -> bool: ...

    # transfer data
    def worked_solution(self, problem: Problem, fmt: str) -> str: ...

    def transfer_examples(self, strategy: str | None, fmt: str, n: int, seed: int, preset: str,
                          exclude: list[Problem] = (), draw: str = "balanced") -> list[dict]:
        """Training pairs ``{"id", "difficulty", "expected", "data", "prompt", "target"}``. ``draw``:
        ``"balanced"`` (as many of each answer per difficulty, never a problem of ``exclude``) or
        ``"original"`` (the preset's own generator, as its source experiment drew them)."""


@runtime_checkable
class Backend(Protocol):
    """An inference engine holding one loaded model.

    Optional capabilities, used where present: ``tokenize(text) -> list[int]`` (parity checks the
    prompt token ids with it), ``agenerate``/``run`` (the openai backend: concurrent requests under
    load), and a ``progress(done)`` callback accepted by ``generate``."""

    name: str

    def generate(self, prompts: list[str], settings: GenerationSettings,
                 progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Complete each already-rendered prompt (no template is applied here)."""

    def info(self) -> dict[str, Any]:
        """What was loaded and how (device, dtype, threads, context, versions)."""

    def close(self) -> None: ...


@runtime_checkable
class Teacher(Protocol):
    name: str
    model: str
    is_language_model: bool

    def complete(self, requests: list[TeacherRequest]) -> list[Completion]: ...

    def info(self) -> dict[str, Any]: ...
