"""The ``tiny`` student: a ~1M-parameter Llama built here from random initialisation.

Nothing is downloaded. The tokenizer is a byte-fallback BPE trained on the task's own text with the
``tokenizers`` library, laid out the way llama.cpp's converter expects a Llama tokenizer
(``<unk> <s> </s>``, then the 256 ``<0xNN>`` byte tokens, then the learned pieces; spaces as ``▁``),
so the model also converts to GGUF.

llama.cpp reads such a vocabulary with every score equal and merges the leftmost adjacent pair
that forms a piece, whereas BPE merges by rank. Two choices keep both tokenizations identical: the
pre-tokenizer splits at spaces, newlines and punctuation (no piece spans those boundaries, so
splitting whole texts and single words agree), and the pieces on which the two orders would split
a corpus word differently are dropped from the vocabulary.

Builds are cached under ``<cache>/tiny-student/<key>``, where the key covers the builder version,
the sizes, the seed, the task name and its prompt version. A build is written into a temporary
directory and renamed into place, so an interrupted build never leaves a half model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from lrl_harness import ConfigError, StudentModel, hookimpl

BUILDER_VERSION = "tiny-student/1"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
UNK, BOS, EOS = SPECIAL_TOKENS
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "generation_config.json")

DEFAULT_SIZES = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_size": 256,
    "bpe_vocab": 512,
    "max_positions": 1024,
}

# The recipe measured on this task (trace targets, 6,000 balanced examples): LoRA on every linear
# layer with the embeddings and the head fully trainable, because the base model knows nothing.
TINY_LORA = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.0,
    "target_modules": "all-linear",
    "modules_to_save": ["embed_tokens", "lm_head"],
    "lr": 2e-3,
    "batch_size": 32,
    "grad_accum": 1,
    "max_steps": 1400,
    "warmup_ratio": 0.05,
    "schedule": "cosine",
    "weight_decay": 0.0,
}


def build_key(task, seed: int, sizes: dict) -> str:
    identity = {"builder": BUILDER_VERSION, "sizes": sizes, "seed": seed,
                "task": task.name, "prompt_version": task.prompt_version}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def resolve_sizes(sizes: dict) -> dict:
    unknown = sorted(set(sizes) - set(DEFAULT_SIZES))
    if unknown:
        raise ConfigError(f"unknown tiny-student size {unknown[0]!r}; known: {', '.join(DEFAULT_SIZES)}")
    resolved = {**DEFAULT_SIZES, **{k: v for k, v in sizes.items() if v is not None}}
    for name, value in resolved.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"tiny-student size {name} must be a positive integer, got {value!r}")
    if resolved["hidden_size"] % resolved["num_heads"]:
        raise ConfigError("tiny-student hidden_size must be a multiple of num_heads")
    return resolved


def is_complete(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in REQUIRED_FILES)


def build_tiny_student(cache_root: Path, task, seed: int = 0, **sizes) -> Path:
    """Return the directory of the tiny student for ``task`` and ``seed``, building it if needed.

    Same task, seed and sizes give byte-identical files. Safe against interruption: only a
    complete build is ever renamed to its final name.
    """
    resolved = resolve_sizes(sizes)
    parent = Path(cache_root) / "tiny-student"
    final = parent / build_key(task, seed, resolved)
    if is_complete(final):
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    tmp.chmod(0o755)
    try:
        _write_student(tmp, task, seed, resolved)
        if final.exists():  # a stale incomplete directory from an older layout: replace it
            if is_complete(final):
                return final
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first
            if not is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_student(out: Path, task, seed: int, sizes: dict) -> None:
    tokenizer = train_tokenizer(task.corpus(), sizes["bpe_vocab"])
    tokenizer.save(str(out / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size()
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": UNK,
        "add_bos_token": True, "add_eos_token": False, "add_prefix_space": True,
        "clean_up_tokenization_spaces": False, "model_max_length": sizes["max_positions"],
    }, indent=2) + "\n")
    _write_model(out, seed, sizes, vocab_size)


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def train_tokenizer(corpus: list[str], bpe_vocab: int):
    """A Llama-style byte-fallback BPE tokenizer learned from ``corpus`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, processors, trainers

    pre_tokenizer = _pre_tokenizer()
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizer
    learner.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=bpe_vocab, min_frequency=2, show_progress=False, special_tokens=[]))
    learned = json.loads(learner.to_str())["model"]
    alphabet = [p for p, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]) if len(p) == 1]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    words = sorted({w for text in corpus for w, _ in pre_tokenizer.pre_tokenize_str(text)})
    merges = merges_leftmost_agrees_with(alphabet, merges, words)

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for piece in alphabet + [a + b for a, b in merges]:
        vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True,
                                     fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])])
    return tokenizer


def leftmost_pieces(word: str, vocab) -> list[str]:
    """How llama.cpp splits ``word`` with a Llama vocabulary whose scores are all equal (as its
    converter writes them for a ``tokenizer.json``): merge the leftmost adjacent pair that is a piece."""
    symbols = list(word)
    merged = True
    while merged:
        merged = False
        for i in range(len(symbols) - 1):
            if symbols[i] + symbols[i + 1] in vocab:
                symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
                merged = True
                break
    return symbols


def merges_leftmost_agrees_with(alphabet: list[str], merges: list[tuple[str, str]],
                                words: list[str]) -> list[tuple[str, str]]:
    """Drop the learned pieces on which leftmost merging and BPE merge ranks split a corpus word
    differently (and every piece built on them), until both agree on every word."""
    from tokenizers import models

    while True:
        vocab = {p: i for i, p in enumerate(alphabet + [a + b for a, b in merges])}
        bpe = models.BPE(vocab=vocab, merges=merges)
        drop = set()
        for word in words:
            by_rank = [t.value for t in bpe.tokenize(word)]
            leftmost = leftmost_pieces(word, vocab)
            if by_rank != leftmost:
                drop.add(next(p for p in leftmost if p not in by_rank))
        if not drop:
            return merges
        while True:
            kept = [(a, b) for a, b in merges if not {a, b, a + b} & drop]
            newly = {a + b for a, b in merges} - {a + b for a, b in kept} - drop
            merges = kept
            if not newly:
                break
            drop |= newly


def _write_model(out: Path, seed: int, sizes: dict, vocab_size: int) -> None:
    from lrl_harness import import_torch

    torch = import_torch()
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=sizes["hidden_size"],
        intermediate_size=sizes["intermediate_size"],
        num_hidden_layers=sizes["num_layers"],
        num_attention_heads=sizes["num_heads"],
        num_key_value_heads=sizes["num_heads"],
        max_position_embeddings=sizes["max_positions"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
        pad_token_id=SPECIAL_TOKENS.index(UNK),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, do_sample=False).save_pretrained(out)


def parameter_count(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            shape = f.get_slice(name).get_shape()
            n = 1
            for dim in shape:
                n *= dim
            total += n
    return total


def longest_trace_tokens(model_dir: Path, task, n: int = 600) -> int:
    """Token count of the longest worked solution among HARD problems of the transfer split."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hard = [p for p in task.problems("balanced", "transfer", n=n) if p.difficulty == "HARD"]
    return max(len(tokenizer.encode(task.worked_solution(p), add_special_tokens=False).ids) for p in hard)


def tiny_student(task, options: dict, cache_dir: Path) -> StudentModel:
    """Factory for the ``tiny`` student. Options: ``seed`` and any of :data:`DEFAULT_SIZES`."""
    options = dict(options or {})
    seed = options.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"tiny-student seed must be an integer, got {seed!r}")
    sizes = resolve_sizes(options)
    model_dir = build_tiny_student(Path(cache_dir), task, seed, **sizes)
    params = parameter_count(model_dir)
    max_new_tokens = longest_trace_tokens(model_dir, task) + 16
    return StudentModel(
        name="tiny",
        path=str(model_dir),
        chat_template=False,
        strategy_in_prompt=False,
        transfer_format="trace",
        transfer_examples=6000,
        lora=dict(TINY_LORA),
        max_new_tokens=max_new_tokens,
        info={
            "description": (f"a ~{params / 1e6:.1f}M-parameter Llama built by lrl-harness from random "
                            "initialisation; it knows nothing before training"),
            "parameters": params,
            "seed": seed,
            "sizes": sizes,
            "builder": BUILDER_VERSION,
        },
    )


@hookimpl
def register_students(register):
    register("tiny", tiny_student,
             description="~1M-parameter Llama built locally from random initialisation (no download)")
