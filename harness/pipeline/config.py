"""The run configuration: defaults, a TOML file, then command-line options, in that order.

Every option ends up in the results file; ``identity()`` is what an output folder belongs to, so a
re-run with the same ``--out`` resumes only when the configuration is the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lrl_harness.api.errors import ConfigError
from lrl_harness.results.format import STAGES

MAX_SEED = 2**32 - 1
MAX_TOKENS = 2**31 - 1


@dataclass
class RunConfig:
    task: str = "meeting-rooms"
    preset: str = "balanced"
    teacher: str = "solver"
    teacher_options: dict = field(default_factory=dict)
    student: str = "tiny"
    student_options: dict = field(default_factory=dict)
    backend: str = "transformers"
    backend_options: dict = field(default_factory=dict)
    gguf_backend: str | None = None  # the engine parity runs the GGUF exports on; None: any that loads GGUF
    seed: int = 0
    train_n: int | None = None
    test_n: int | None = None
    train_seed: int | None = None
    test_seed: int | None = None
    recipe: str | None = None  # a named transfer recipe (pipeline/recipes.py); None: the student's default
    transfer_format: str | None = None  # None: the recipe's
    transfer_n: int | None = None
    transfer_seed: int = 999
    transfer_source: str = "code"  # "code": built from the solver; "teacher": teacher-written, solver-checked
    # which problems: None/"balanced": balanced, never a test problem; "original": the preset's own draw
    transfer_draw: str | None = None
    batch_size: int = 10
    journal_every: int = 1
    distill_every: int = 5
    journal_chars: int = 5000
    lora: dict = field(default_factory=dict)  # overrides of the student's LoRA defaults
    max_new_tokens: int | None = None  # student generation; None: the student's default
    # the untrained student's answers (student_baseline); None: the budget above, at most 256
    baseline_max_new_tokens: int | None = None
    teacher_max_tokens: int = 1024
    stages: list = field(default_factory=lambda: list(STAGES))
    export: list | None = None  # GGUF types after training; None: the student's (f32, q8_0, q4_k_m); [] to skip
    parity: list | None = None  # exported GGUF types that parity checks; None: the student's, else every one
    prices: str | None = None

    # Not part of a run's identity: how it runs, not what it computes.
    NON_IDENTITY = ("prices",)
    # Added after runs were recorded: part of a run's identity only when set, so those runs keep theirs.
    IDENTITY_WHEN_SET = ("gguf_backend", "baseline_max_new_tokens", "export", "parity", "transfer_draw")

    def identity(self) -> dict:
        data = dataclasses.asdict(self)
        for key in self.NON_IDENTITY:
            data.pop(key, None)
        for key in self.IDENTITY_WHEN_SET:
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> RunConfig:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r}; stages are: {', '.join(STAGES)}")
        for name in ("batch_size", "journal_every", "distill_every", "journal_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.transfer_format is not None and not (isinstance(self.transfer_format, str) and self.transfer_format):
            raise ConfigError(f"transfer_format must be a format name, got {self.transfer_format!r}")
        if self.transfer_source not in ("code", "teacher"):
            raise ConfigError(f"transfer_source must be 'code' or 'teacher', got {self.transfer_source!r}")
        if self.transfer_draw not in (None, "balanced", "original"):
            raise ConfigError(f"transfer_draw must be 'balanced' or 'original', got {self.transfer_draw!r}")
        for name in ("train_n", "test_n", "transfer_n", "max_new_tokens", "baseline_max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("seed", "transfer_seed", "train_seed", "test_seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.teacher_max_tokens, int) or self.teacher_max_tokens < 1:
            raise ConfigError(f"teacher_max_tokens must be a positive integer, got {self.teacher_max_tokens!r}")
        # numbers that reach torch, numpy or an engine's C code: within what those take, not an overflow there
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be at most {MAX_SEED} (the largest seed numpy takes), got {self.seed}")
        for name in ("max_new_tokens", "baseline_max_new_tokens", "teacher_max_tokens"):
            value = getattr(self, name)
            if value is not None and value > MAX_TOKENS:
                raise ConfigError(f"{name} must be at most {MAX_TOKENS}, got {value}")
        if self.recipe is not None:
            from lrl_harness.pipeline.recipes import get_recipe

            get_recipe(self.recipe)
        if not self.stages:
            raise ConfigError(f"no stage to run; stages are: {', '.join(STAGES)}")
        from lrl_harness.pipeline.export import QUANT_FTYPES

        unknown = [q for q in self.export or () if not isinstance(q, str) or q.lower() not in QUANT_FTYPES]
        if unknown:
            raise ConfigError(f"unknown export quantisation {unknown[0]!r}; available: "
                              f"{', '.join(QUANT_FTYPES)} (or 'none' to skip export)")
        if self.parity is not None and not (isinstance(self.parity, list) and self.parity):
            raise ConfigError(f"parity must be a list of exported GGUF types, got {self.parity!r}")
        unknown = [q for q in self.parity or () if not isinstance(q, str) or q.lower() not in (*QUANT_FTYPES, "all")]
        if unknown:
            raise ConfigError(f"unknown parity quantisation {unknown[0]!r}; available: "
                              f"{', '.join(QUANT_FTYPES)} (or 'all': every exported file)")
        if self.prices is not None:
            from lrl_harness.pipeline.cost import load_prices

            try:
                load_prices(self.prices)
            except UnicodeDecodeError:
                raise ConfigError(f"{self.prices}: not a JSON or TOML price file (binary content)") from None
            except OSError as exc:
                raise ConfigError(f"{self.prices}: cannot read the price file ({exc.strerror})") from None
        return self


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def load_toml(path: Path) -> dict:
    """Read a TOML config; keys are RunConfig fields (``[lora]``, ``[teacher_options]`` ... as tables)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc})") from None
    data = data.get("run", data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [run] must be a table of settings")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(FIELDS))}")
    try:
        _check_types(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data


def make_config(file_values: dict, overrides: dict) -> RunConfig:
    _check_types(file_values)
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("teacher_options", "student_options", "backend_options", "lora"):
        if key in file_values and key in overrides and overrides[key]:
            values[key] = {**file_values[key], **overrides[key]}
    _check_types(values)
    return RunConfig(**values).validate()


def _check_types(values: dict) -> None:
    for key, value in values.items():
        expected = FIELDS[key].type
        if "dict" in str(expected) and not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table of options, got {value!r}")
        if "list" in str(expected) and not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if expected in ("int", "int | None") and value is not None and (
                not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if expected in ("str", "str | None") and value is not None and not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they can be)."""
    out = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise ConfigError(f"option {pair!r} must look like key=value")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


