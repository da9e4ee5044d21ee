"""Export a student to GGUF: optional LoRA merge, HF -> GGUF f32/f16 with llama.cpp's converter, then
in-process quantisation with llama-cpp-python; or a GGUF LoRA adapter to load beside the base model.

Every file is written under a temporary name and renamed, and recorded with its sha256 and size in
``export.json`` beside the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lrl_harness.api.errors import GGUFError, LrlError
from lrl_harness.api.gguf import read_gguf_header, sha256_file
from lrl_harness.pipeline.rundir import RunDir

QUANT_FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}
"""Export names -> llama.cpp ``llama_ftype`` (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_K_M)."""
CONVERTED = ("f32", "f16")
"""Written by the converter; the others are quantised from the first of these."""
DEFAULT_QUANTS = ("f32", "q8_0", "q4_k_m")
ADAPTER_MODES = ("merge", "gguf")
MANIFEST = "export.json"


def export_model(model_dir: Path, out_dir: Path, quants: Sequence[str] = DEFAULT_QUANTS,
                 adapter: Path | None = None, progress: Callable[[str], None] | None = None, *,
                 adapter_mode: str = "merge", name: str = "model", converter=None,
                 threads: int = 0) -> dict:
    """Write ``<name>-<quant>.gguf`` for each of ``quants`` into ``out_dir``; return the record for the
    results file (converter version, files with path relative to ``out_dir``, sha256, bytes, quant).

    With ``adapter`` and ``adapter_mode="merge"`` the LoRA adapter is merged into the weights first;
    with ``adapter_mode="gguf"`` the base model is exported as is and the adapter is written as
    ``<name>-lora-f32.gguf`` for ``Llama(lora_path=...)``.
    """
    from lrl_harness.pipeline.converter import get_converter

    started = time.perf_counter()
    say = progress or (lambda message: None)
    model_dir, out_dir = Path(model_dir).absolute(), Path(out_dir).absolute()
    quants = _check_quants(quants)
    if adapter_mode not in ADAPTER_MODES:
        raise LrlError(f"unknown adapter mode {adapter_mode!r}; available: {', '.join(ADAPTER_MODES)}")
    if not (model_dir / "config.json").is_file():
        raise LrlError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    converts_base = adapter is None or adapter_mode == "gguf"  # a merged model is saved with its class
    architecture = _missing_architecture(model_dir) if converts_base else None
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise LrlError(f"{adapter}: not a LoRA adapter directory (no adapter_config.json)")
    if adapter is not None and adapter_mode == "gguf":
        _check_gguf_adapter(Path(adapter))
    converter = converter or get_converter()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_work(out_dir)
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix=f".export-{os.getpid()}-", dir=out_dir) as work:
        work = Path(work)
        source = model_dir
        if architecture:
            source = _with_architecture(model_dir, work / model_dir.name, architecture)
        if adapter is not None and adapter_mode == "merge":
            from lrl_harness.pipeline.training import merge_adapter

            say(f"merging adapter {Path(adapter).name} into {model_dir.name}")
            source = Path(merge_adapter(model_dir, Path(adapter), work / "merged"))
        base = next((q for q in quants if q in CONVERTED), "f32")
        base_file = out_dir / f"{name}-{base}.gguf" if base in quants else work / f"{name}-{base}.gguf"
        say(f"converting {source.name} to GGUF {base} (llama.cpp converter {converter.version})")
        converter.hf_to_gguf(source, base_file, base)
        for quant in quants:
            target = out_dir / f"{name}-{quant}.gguf"
            if quant in CONVERTED and quant != base:
                say(f"converting to GGUF {quant}")
                converter.hf_to_gguf(source, target, quant)
            elif quant not in CONVERTED:
                say(f"quantising to {quant}")
                quantize_gguf(base_file, target, quant, threads=threads)
            files[target.name] = _file_record(target, out_dir, quant, "model")
        if adapter is not None and adapter_mode == "gguf":
            target = out_dir / f"{name}-lora-f32.gguf"
            say(f"converting adapter {Path(adapter).name} to a GGUF LoRA adapter")
            converter.lora_to_gguf(Path(adapter), source, target, "f32")
            files[target.name] = _file_record(target, out_dir, "f32", "lora")
    for entry in files.values():
        validate_gguf(out_dir / entry["path"], load=entry["kind"] == "model")
    record = {
        "converter_version": converter.version,
        "source": {"model": str(model_dir), "adapter": str(adapter) if adapter else None,
                   "adapter_mode": adapter_mode if adapter else None},
        "files": files,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    from lrl_harness.results.files import write_json

    write_json(out_dir / MANIFEST, record)
    return record


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work(out_dir: Path) -> list[Path]:
    """Remove what an export killed mid-way left in ``out_dir``: ``.export-<pid>-*`` work folders and
    ``.<file>.<pid>.tmp`` files of processes that are gone (and work folders of the old unnamed kind)."""
    import re
    import shutil

    removed = []
    for item in Path(out_dir).iterdir():
        match = re.fullmatch(r"\.export-(?:(\d+)-)?.*", item.name) if item.is_dir() else re.fullmatch(
            r"\..+\.(\d+)\.tmp", item.name)
        if match is None:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue  # another export at work in the same folder
        if pid == os.getpid():
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    return removed


def _missing_architecture(model_dir: Path) -> str | None:
    """The model class to name when config.json names none (a config saved on its own), else None.

    llama.cpp's converter picks its model class from ``architectures``; the causal-LM class that
    transformers maps the config's ``model_type`` to is the one it would load."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LrlError(f"{model_dir}/config.json: unreadable ({exc})") from None
    if config.get("architectures") or (config.get("text_config") or {}).get("architectures"):
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""))
    if not name:
        raise LrlError(f"{model_dir}/config.json names no 'architectures' and its model_type "
                       f"{config.get('model_type')!r} is no causal language model known to transformers")
    return name


def _with_architecture(model_dir: Path, shadow: Path, architecture: str) -> Path:
    """A folder of links to ``model_dir``'s files whose config.json names ``architecture``."""
    shadow.mkdir()
    for item in model_dir.iterdir():
        if item.name != "config.json":
            (shadow / item.name).symlink_to(item.resolve())
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    (shadow / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}, indent=2))
    return shadow


def _check_gguf_adapter(adapter: Path) -> None:
    """A GGUF LoRA adapter holds low-rank pairs only; fully trained modules need merging."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    saved = config.get("modules_to_save") or []
    if saved:
        raise LrlError(f"{adapter}: the adapter also trains whole modules ({', '.join(saved)}), which a GGUF "
                       "LoRA adapter cannot carry; export with --adapter-mode merge")


def _check_quants(quants: Sequence[str]) -> tuple[str, ...]:
    quants = tuple(dict.fromkeys(q.lower() for q in quants))
    if not quants:
        raise LrlError("nothing to export: give at least one quantisation")
    unknown = [q for q in quants if q not in QUANT_FTYPES]
    if unknown:
        raise LrlError(f"unknown quantisation {unknown[0]!r}; available: {', '.join(QUANT_FTYPES)}")
    return quants


def quantize_gguf(source: Path, target: Path, quant: str, threads: int = 0) -> Path:
    """Quantise an f32/f16 GGUF in-process with llama.cpp (written under a temporary name first)."""
    try:
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:
        from lrl_harness.api.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "quantising needs llama-cpp-python: pip install 'lrl-harness[llamacpp]'") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = threads
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with suppress_stdout_stderr(disable=False):
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if status != 0 or not tmp.is_file():
            raise GGUFError(f"quantising {source.name} to {quant} failed (llama.cpp status {status})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _file_record(path: Path, out_dir: Path, quant: str, kind: str) -> dict:
    return {"path": path.relative_to(out_dir).as_posix(), "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "quant": quant, "kind": kind}


def gguf_for(model_dir: Path, adapter: Path | None = None, quant: str = "f32",
             progress: Callable[[str], None] | None = None) -> Path:
    """The GGUF of a Hugging Face directory (with a peft adapter merged in, if given), exported once
    into ``cache_dir()/gguf`` and reused while the source files are unchanged (name, size, mtime)."""
    from lrl_harness.pipeline.converter import llama_cpp_version
    from lrl_harness.util.paths import cache_dir

    model_dir = Path(model_dir)
    sources = [model_dir] + ([Path(adapter)] if adapter is not None else [])
    stamp = [[str(p.relative_to(src)), p.stat().st_size, p.stat().st_mtime_ns]
             for src in sources for p in sorted(src.rglob("*")) if p.is_file()]
    identity = {"sources": [str(src.resolve()) for src in sources], "files": stamp, "quant": quant,
                "llama_cpp_python": llama_cpp_version()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    out = cache_dir() / "gguf" / key
    target = out / f"model-{quant}.gguf"
    if not ((out / MANIFEST).is_file() and target.is_file()):
        export_model(model_dir, out, quants=(quant,), adapter=adapter, progress=progress)
    return target


# --- validation -----------------------------------------------------------------------------------

def validate_gguf(path: Path, load: bool = True) -> dict:
    """Check that ``path`` is a complete GGUF (magic, header, tensor data present) and, with ``load``,
    that llama.cpp loads it. Returns the header; raises GGUFError with one line otherwise."""
    header = read_gguf_header(path)
    if header["bytes_needed"] is not None and header["bytes"] < header["bytes_needed"]:
        raise GGUFError(f"{path}: truncated GGUF ({header['bytes']} bytes; its tensors need "
                        f"{header['bytes_needed']})")
    if load:
        _load_with_llama_cpp(Path(path))
    return header


def _load_with_llama_cpp(path: Path) -> None:
    try:
        from llama_cpp import Llama
    except ImportError:
        from lrl_harness.api.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "checking a GGUF needs llama-cpp-python: pip install 'lrl-harness[llamacpp]'") from None
    try:
        llm = Llama(model_path=str(path), n_ctx=16, n_threads=1, n_batch=16, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise GGUFError(f"{path}: llama.cpp cannot load this GGUF ({exc})") from None
    llm.close()


# --- command --------------------------------------------------------------------------------------


def resolve_source(target: Path) -> tuple[Path, Path | None, Path]:
    """(model dir, adapter or None, default output dir) for a run directory or a model directory."""
    folder = RunDir(target)
    if folder.results.is_file():
        from lrl_harness.results.io import read_results

        stages = read_results(folder.results).stages
        whos = [stages[stage].who for stage in ("lora", "student_baseline") if stage in stages]
        model = next((who.path for who in whos if who is not None and who.path), None)
        if not model:
            raise LrlError(f"{target}: this run has no student stage, so there is no model to export")
        adapter = folder.adapter
        if not (adapter / "adapter_config.json").is_file():
            if adapter.exists():
                raise LrlError(f"{adapter} holds no trained adapter (no adapter_config.json); re-run `lrl run` "
                               f"with --out {target} to finish training, or pass --adapter DIR")
            adapter = None
        return Path(model), adapter, folder.export
    if (target / "config.json").is_file():
        return target, None, target.with_name(f"{target.name}-gguf")
    raise LrlError(f"{target}: neither an lrl-harness run directory (results.json) "
                   "nor a Hugging Face model directory (config.json)")


def parity_sources(source: Path, ggufs: tuple[Path, ...], adapter: Path | None, optional: bool = False):
    """(HF model dir, adapter, GGUF files) for a run directory or a model directory. With ``optional``
    (other engines are compared), no export means no GGUF files rather than an error."""
    from lrl_harness.results.files import read_json

    model_dir, run_adapter, export_dir = resolve_source(source)
    adapter = adapter or run_adapter
    if not ggufs:
        manifest = export_dir / MANIFEST
        if not manifest.is_file() and optional:
            return model_dir, adapter, ()
        if not manifest.is_file():
            raise LrlError(f"no GGUF files given and {manifest} does not exist; run `lrl export` first "
                           "or pass --gguf FILE")
        files = read_json(manifest).get("files", {})
        ggufs = tuple(export_dir / f["path"] for f in files.values() if f.get("kind") == "model")
    return model_dir, adapter, ggufs
