"""The ``llamacpp`` backend: llama-cpp-python in-process on CPU, loading a GGUF file.

``ModelSpec.path`` is a GGUF file (``adapter``: an optional GGUF LoRA adapter), or a Hugging Face
directory (``adapter``: an optional peft adapter directory), which is exported once with
:func:`lrl_harness.pipeline.export.gguf_for` (option ``quant``, default f32) and cached, so that a pipeline
student runs on llama.cpp as it is.

One ``Llama`` object serves every prompt of a backend's life. llama-cpp-python keeps the KV cache
of the previous prompt and re-evaluates only what follows the longest shared prefix, so a stage
whose prompts share a long opening (the strategy) pays for that opening once.

Decoding is greedy for temperature 0 (llama.cpp's greedy sampler; no top-k/top-p/min-p cut). The
prompt is tokenised as llama.cpp would feed it: special tokens parsed, BOS added only when the
model's metadata asks for it, and never twice.

Options: ``n_threads`` (half the cores, llama-cpp-python's own default: its threads wait for each
other, so one busy core stalls them all), ``n_ctx`` (2048, or the model's training context when
shorter), ``n_batch`` (512), ``seed`` (0), ``lora_scale`` (1.0), ``prefix_cache`` (true; false
re-evaluates every prompt from scratch, for measuring what the cache saves), ``batch_size`` (1).

``batch_size=N`` (N > 1) completes greedy prompts N at a time: a second llama.cpp context holds a
sequence per prompt and every step decodes the next token of all unfinished ones together, so the
weights are read once per step for all of them (the throughput of a server's parallel slots,
without the server). A batch's latency is its wall time divided by its size, as for the
transformers backend; sampling, stop strings and GGUF adapters still go one at a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lrl_harness import (
    BackendUnavailableError,
    Completion,
    ConfigError,
    GenerationSettings,
    LrlError,
    ModelSpec,
    Option,
    check_options,
    hookimpl,
)

OPTIONS = {
    "n_threads": Option(int, None, "threads (default: half the cores)", min=1, nullable=True),
    "n_ctx": Option(int, None, "context length (default: 2048 or the model's)", min=16, nullable=True),
    "n_batch": Option(int, 512, "prompt batch size", min=1),
    "seed": Option(int, 0, "sampling seed", min=0),
    "lora_scale": Option(float, 1.0, "scale of a GGUF LoRA adapter", min=0),
    "prefix_cache": Option(bool, True, "reuse the KV cache of the previous prompt's shared prefix"),
    "batch_size": Option(int, 1, "greedy prompts decoded together (1: one at a time)", min=1, max=256),
    "quant": Option(str, "f32", "GGUF type when a Hugging Face directory is exported first",
                    choices=("f32", "f16", "q8_0", "q4_k_m")),
}
PENALTY_NOTE = ("llama.cpp applies the repetition penalty to generated tokens only; transformers "
                "also penalises the prompt's tokens")


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = check_options("backend llamacpp", OPTIONS, options, unknown_label="llamacpp")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendUnavailableError(
                "the llamacpp backend needs llama-cpp-python: pip install 'lrl-harness[llamacpp]'") from None
        from lrl_harness import gguf_for, validate_gguf

        path, adapter = Path(model.path), model.adapter
        self.quant = options["quant"]
        self.converted_from = None
        if path.is_dir():  # a Hugging Face directory (a pipeline student): export it once, then load
            peft_dir = Path(adapter) if adapter and Path(adapter).is_dir() else None
            self.converted_from = str(path)
            path = gguf_for(path, peft_dir, self.quant)
            adapter = None if peft_dir else adapter
        elif adapter and Path(adapter).is_dir():
            raise ConfigError(f"{adapter} is an adapter directory; with a GGUF model give a GGUF adapter "
                              "(`lrl export --adapter-mode gguf`)")
        header = validate_gguf(path, load=False)
        if adapter:
            validate_gguf(Path(adapter), load=False)
        self.model, self.path, self.adapter = model, path, adapter
        self.n_threads = options["n_threads"] or max(1, (os.cpu_count() or 2) // 2)
        self.gguf = {k: v for k, v in header["metadata"].items() if not isinstance(v, list)}
        self.n_ctx = options["n_ctx"] or min(2048, _trained_context(header) or 2048)
        self.n_batch = options["n_batch"]
        self.seed = options["seed"]
        self.prefix_cache = options["prefix_cache"]
        self.lora_scale = options["lora_scale"]
        self.batch_size = options["batch_size"]
        try:
            self.llm = Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_batch=self.n_batch, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, seed=self.seed, n_gpu_layers=0, verbose=False,
                last_n_tokens_size=self.n_ctx, lora_path=adapter, lora_scale=self.lora_scale)
        except (ValueError, RuntimeError) as exc:
            raise LrlError(f"{path}: llama.cpp cannot load this model ({exc})") from None
        self.bos = self.llm.token_bos()
        self.add_bos = bool(self.llm._model.add_bos_token())
        self.chat_renderer = self._chat_renderer()
        # SentencePiece-style vocabularies mark word starts with a space; Hugging Face's decoders for
        # them strip one leading space from a decoded text, and so does this backend.
        self.strip_space = (self.gguf.get("tokenizer.ggml.model") == "llama"
                            and self.gguf.get("tokenizer.ggml.add_space_prefix", True) is not False)

    def _chat_renderer(self):
        """The GGUF's own chat template (None when the file has none), for callers that render prompts
        for this backend (a model teacher on a GGUF file)."""
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from lrl_harness import ChatTemplate

        text = self.llm._model.token_get_text
        return ChatTemplate(template, bos_token=text(self.bos), eos_token=text(self.llm.token_eos()))

    # --- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The ids llama.cpp feeds for ``text``: special tokens parsed, BOS per the model, once."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos, special=True)
        if self.add_bos and len(ids) > 1 and ids[0] == ids[1] == self.bos:
            ids = ids[1:]  # the rendered prompt already starts with the BOS text
        return ids

    def _is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def _is_byte(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_get_attr(self.llm._model.vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_BYTE)

    def _text(self, tokens: list[int]) -> str:
        """Detokenise the way Hugging Face tokenizers do, so texts compare across engines: a run of
        byte-fallback tokens that is not valid UTF-8 becomes one U+FFFD per byte; other pieces are
        joined and decoded with U+FFFD for each invalid sequence; a SentencePiece-style vocabulary
        loses one leading space."""
        parts: list[str] = []
        pieces, byte_run = b"", b""
        for token in tokens:
            piece = self.llm.detokenize([token])
            if self._is_byte(token):
                if pieces:
                    parts.append(pieces.decode("utf-8", errors="replace"))
                    pieces = b""
                byte_run += piece
            else:
                if byte_run:
                    parts.append(_decode_byte_run(byte_run))
                    byte_run = b""
                pieces += piece
        parts.append(pieces.decode("utf-8", errors="replace") + _decode_byte_run(byte_run))
        text = "".join(parts)
        return text[1:] if self.strip_space and text.startswith(" ") else text

    # --- generation -----------------------------------------------------------------------------

    def generate(self, prompts: list[str], settings: GenerationSettings, progress=None) -> list[Completion]:
        """Complete the prompts one by one (or ``batch_size`` at a time); ``progress(done)`` after each
        prompt (each batch)."""
        if self.batch_size > 1 and len(prompts) > 1 and self._batchable(settings):
            return self._in_batches(prompts, settings, progress)
        completions = []
        for prompt in prompts:
            completions.append(self._one(prompt, settings))
            if progress is not None:
                progress(len(completions))
        return completions

    def _sampling(self, settings: GenerationSettings) -> dict:
        common = {"repeat_penalty": float(settings.repetition_penalty), "frequency_penalty": 0.0,
                  "presence_penalty": 0.0, "typical_p": 1.0, "min_p": 0.0, "top_p": 1.0}
        if settings.temperature == 0:
            return {**common, "temp": 0.0, "top_k": 1}
        return {**common, "temp": float(settings.temperature), "top_k": 0}

    def _batchable(self, settings: GenerationSettings) -> bool:
        return (settings.temperature == 0 and not settings.stop and not self.adapter
                and float(settings.repetition_penalty) == 1.0)

    def _in_batches(self, prompts: list[str], settings: GenerationSettings, progress) -> list[Completion]:
        """Greedy completions, ``batch_size`` prompts of like length at a time."""
        encoded = [self.tokenize(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            for i, completion in zip(rows, self._decode_together([encoded[i] for i in rows], settings)):
                results[i] = completion
            if progress is not None:
                progress(start + len(rows))
        return results  # type: ignore[return-value]

    def _decode_together(self, prompts: list[list[int]], settings: GenerationSettings) -> list[Completion]:
        """One context with a sequence per prompt: each prompt's tokens decoded on its own, then every
        step one decode of the next token of each unfinished sequence; the next token is the argmax
        of its logits (llama.cpp's greedy sampler takes the same)."""
        import ctypes

        import llama_cpp
        import numpy as np

        limit = settings.max_new_tokens
        for ids in prompts:
            self._check_fits(ids, limit)
        rows = len(prompts)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = sum(len(ids) + limit for ids in prompts)  # one KV buffer shared by the sequences
        params.n_batch = params.n_ubatch = max(rows, min(self.n_batch, max(len(ids) for ids in prompts)))
        params.n_seq_max, params.kv_unified = rows, True
        params.n_threads = params.n_threads_batch = self.n_threads
        # quiet, as llama-cpp-python loads its own context: llama.cpp warns on stderr that the shared
        # buffer is longer than the trained context, though no sequence's positions go past it
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):
            ctx = llama_cpp.llama_init_from_model(self.llm._model.model, params)
        if not ctx:
            raise LrlError(f"{self.path}: llama.cpp could not make a context for {rows} sequences")
        batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        n_vocab = llama_cpp.llama_vocab_n_tokens(self.llm._model.vocab)

        def decode(entries: list[tuple[int, int, int, bool]]) -> None:  # (token, position, sequence, logits)
            batch.n_tokens = len(entries)
            for i, (token, pos, seq, logits) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            code = llama_cpp.llama_decode(ctx, batch)
            if code != 0:
                raise LrlError(f"{self.path}: llama.cpp decode failed (code {code})")

        def argmax(i: int) -> int:
            pointer = llama_cpp.llama_get_logits_ith(ctx, i)
            return int(np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                             shape=(n_vocab,)).argmax())

        started = time.perf_counter()
        try:
            following = []
            for seq, ids in enumerate(prompts):
                for first in range(0, len(ids), params.n_batch):
                    chunk = ids[first:first + params.n_batch]
                    decode([(t, first + k, seq, first + k == len(ids) - 1) for k, t in enumerate(chunk)])
                following.append(argmax(len(chunk) - 1))
            outs: list[list[int]] = [[] for _ in prompts]
            finish = ["length"] * rows
            active = list(range(rows))
            while active:
                still = []
                for seq in active:
                    token = following[seq]
                    if self._is_end(token):
                        finish[seq] = "stop"
                        continue
                    outs[seq].append(token)
                    if len(outs[seq]) < limit:
                        still.append(seq)
                active = still
                if active:
                    decode([(outs[seq][-1], len(prompts[seq]) + len(outs[seq]) - 1, seq, True) for seq in active])
                    for i, seq in enumerate(active):
                        following[seq] = argmax(i)
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)
        latency = (time.perf_counter() - started) / rows
        return [Completion(text=self._text(out), prompt_tokens=len(ids), completion_tokens=len(out),
                           latency_s=latency, meta={"finish_reason": reason, "token_ids": out, "batch": rows})
                for ids, out, reason in zip(prompts, outs, finish)]

    def _check_fits(self, ids: list[int], limit: int) -> None:
        """A prompt and its new tokens must fit one sequence's context (``n_ctx``)."""
        if len(ids) + limit > self.n_ctx:
            raise ConfigError(f"a prompt of {len(ids)} tokens plus {limit} new tokens does not fit the "
                              f"llamacpp context of {self.n_ctx}; raise the n_ctx option")

    def _one(self, prompt: str, settings: GenerationSettings) -> Completion:
        if settings.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {settings.max_new_tokens}")
        ids = self.tokenize(prompt)
        self._check_fits(ids, settings.max_new_tokens)
        if not self.prefix_cache:
            self.llm.reset()
        reused = _common_prefix(list(self.llm._input_ids), ids) if self.prefix_cache else 0
        out: list[int] = []
        finish, ttft = "length", None
        started = time.perf_counter()
        tokens = self.llm.generate(ids, reset=True, **self._sampling(settings))
        try:
            for token in tokens:
                if ttft is None:
                    ttft = time.perf_counter() - started
                if self._is_end(token):
                    finish = "stop"
                    break
                out.append(token)
                if settings.stop and _cut_at_stop(self._text(out), settings.stop) is not None:
                    finish = "stop"
                    break
                if len(out) >= settings.max_new_tokens:
                    break
        finally:
            tokens.close()
        latency = time.perf_counter() - started
        text = self._text(out)
        if settings.stop:
            cut = _cut_at_stop(text, settings.stop)
            text = text if cut is None else cut
        return Completion(text=text, prompt_tokens=len(ids), completion_tokens=len(out), latency_s=latency,
                          ttft_s=ttft, meta={"finish_reason": finish, "prompt_tokens_reused": reused,
                                             "token_ids": out})

    # --- the rest -------------------------------------------------------------------------------

    def info(self) -> dict:
        from importlib.metadata import version

        meta = self.gguf
        return {
            "backend": self.name, "model": str(self.path), "adapter": self.adapter,
            "converted_from": self.converted_from, "merged_adapter": self.model.adapter if not self.adapter else None,
            "quant": self.quant if self.converted_from else None,
            "lora_scale": self.lora_scale if self.adapter else None,
            "device": "cpu", "n_threads": self.n_threads, "n_ctx": self.n_ctx, "n_batch": self.n_batch,
            "seed": self.seed, "prefix_cache": self.prefix_cache, "add_bos": self.add_bos,
            "batch_size": self.batch_size,
            "file_type": meta.get("general.file_type"), "architecture": meta.get("general.architecture"),
            "llama_cpp_python": version("llama-cpp-python"),
            "sampling": "greedy at temperature 0 (llama.cpp greedy sampler)",
            "repetition_penalty_note": PENALTY_NOTE,
        }

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()


def _decode_byte_run(run: bytes) -> str:
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(run)


def _trained_context(header: dict) -> int | None:
    arch = header["metadata"].get("general.architecture")
    value = header["metadata"].get(f"{arch}.context_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    """``text`` up to the earliest stop string, or None when none occurs."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(hits)] if hits else None


def factory(model: ModelSpec, options: dict | None = None) -> LlamaCppBackend:
    return LlamaCppBackend(model, options)


@hookimpl
def register_backends(register):
    register("llamacpp", factory, runs=("gguf",), threads="n_threads", batches="batch_size",
             description="llama-cpp-python on CPU, loading a GGUF file (greedy)", options=OPTIONS)
