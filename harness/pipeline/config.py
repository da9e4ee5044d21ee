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


def setting(default=None, *, help: str, flag: str | None = None, cli: str = "value", choices: tuple = (),
            default_factory=None):
    """A run setting, declared once: its default, what it means, and how the command line gives it.

    ``flag``: the ``lrl run`` option (None: only in a config file). ``cli``: ``"value"`` (one value of
    the setting's type), ``"options"`` (``KEY=VALUE``, repeatable, into a table), ``"list"``
    (comma-separated), ``"quants"`` (comma-separated, ``none`` for an empty list). The command's options,
    their help and the parsing of what they give all come from these declarations."""
    metadata = {"help": help, "flag": flag, "cli": cli, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    task: str = setting("meeting-rooms", flag="--task", help="Task plugin (default: meeting-rooms).")
    preset: str = setting("balanced", flag="--preset",
                          help="Problem preset: balanced (default) or seed (the original splits).")
    teacher: str = setting("solver", flag="--teacher",
                           help="Teacher plugin (default: solver, which is not a language model).")
    teacher_options: dict = setting(default_factory=dict, flag="--teacher-opt", cli="options",
                                    help="Teacher option (repeatable).")
    student: str = setting("tiny", flag="--student",
                           help="Student plugin (default: tiny), or a Hugging Face model id or path.")
    student_options: dict = setting(default_factory=dict, flag="--student-opt", cli="options",
                                    help="Student option (repeatable).")
    backend: str = setting("transformers", flag="--backend",
                           help="Inference backend for the student stages (default: transformers).")
    backend_options: dict = setting(default_factory=dict, flag="--backend-opt", cli="options",
                                    help="Backend option (repeatable).")
    gguf_backend: str | None = setting(flag="--gguf-backend", help="Backend that parity runs the GGUF exports on "
                                       "(default: one that loads GGUF files, this project's own first).")
    seed: int = setting(0, flag="--seed", help="Seed for model building and training (default 0).")
    train_n: int | None = setting(flag="--train-n", help="Problems in the train split (bootstrap).")
    test_n: int | None = setting(flag="--test-n", help="Problems in the test split.")
    train_seed: int | None = setting(help="Seed of the train split (default: the preset's).")
    test_seed: int | None = setting(help="Seed of the test split (default: the preset's).")
    recipe: str | None = setting(flag="--recipe", help="Transfer recipe: seed (the original experiment's) or small "
                                 "(for small pretrained students); default: the student's. Single choices below "
                                 "override it.")
    transfer_format: str | None = setting(flag="--transfer-format", cli="format",
                                          help="One of the task's transfer formats (checked against it); "
                                          "default: the recipe's.")
    transfer_n: int | None = setting(flag="--transfer-n", help="Transfer (training) examples for the student.")
    transfer_seed: int = setting(999, help="Seed of the transfer examples' draw.")
    transfer_source: str = setting("code", flag="--transfer-source", choices=("code", "teacher"),
                                   help="Transfer targets written by code (default) or by the teacher (checked by "
                                   "the solver).")
    transfer_draw: str | None = setting(flag="--transfer-draw", choices=("balanced", "original"),
                                        help="Transfer problems drawn balanced (default: as many YES as NO per "
                                        "difficulty, half of them tight, never a test problem) or as the preset's "
                                        "source drew them (seed: the original experiment's generator, 90% YES, "
                                        "test problems not excluded).")
    batch_size: int = setting(10, flag="--batch-size", help="LRL batch size (default 10).")
    journal_every: int = setting(1, flag="--journal-every", help="Journal entry every N batches (default 1).")
    distill_every: int = setting(5, flag="--distill-every", help="New strategy every N batches (default 5).")
    journal_chars: int = setting(5000, flag="--journal-chars",
                                 help="Journal characters given to distillation (default 5000).")
    lora: dict = setting(default_factory=dict, flag="--lora-opt", cli="options",
                         help="Override a LoRA training setting, e.g. r=8 or max_steps=200 (repeatable).")
    max_new_tokens: int | None = setting(help="Student generation budget (default: the student's).")
    baseline_max_new_tokens: int | None = setting(
        help="The untrained student's budget (student_baseline; default: the budget above, at most 256).")
    teacher_max_tokens: int = setting(1024, help="Teacher generation budget.")
    stages: list = setting(default_factory=lambda: list(STAGES), flag="--stages", cli="list",
                           help="Comma-separated stages to run (default: all).")
    export: list | None = setting(flag="--export", cli="quants", help="GGUF files to write after training, "
                                  "comma-separated (default: the student's recipe's, else f32,q8_0,q4_k_m; "
                                  "'none' to skip).")
    parity: list | None = setting(flag="--parity", cli="list", help="Exported GGUF files parity compares with "
                                  "the merged model, comma-separated (default: the recipe's, else every exported "
                                  "file; 'all': every exported file).")
    prices: str | None = setting(flag="--prices", cli="path", help="JSON/TOML price table for teacher cost.")

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


def command_line_settings() -> list[dataclasses.Field]:
    """The settings ``lrl run`` takes as options, in declaration order."""
    return [f for f in dataclasses.fields(RunConfig) if f.metadata.get("flag")]


def from_command_line(given: dict) -> dict:
    """What the command line gave (option values by setting name; None: not given), parsed as each
    setting declares, ready to override a config file's values."""
    out = {}
    for f in command_line_settings():
        value = given.get(f.name)
        kind = f.metadata["cli"]
        if kind == "options":
            value = parse_options(value or ()) or None
        elif kind == "quants" and value:
            value = [] if value.strip() == "none" else [q.strip() for q in value.split(",")]
        elif kind == "list" and value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[f.name] = value
    return out


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


