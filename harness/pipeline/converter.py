"""llama.cpp's Hugging Face -> GGUF converter, at the version of the installed llama-cpp-python.

The converter ships in no wheel; the llama-cpp-python source distribution carries it
(``vendor/llama.cpp/convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, ``conversion/`` and the
matching ``gguf-py``). On first use the sdist of the installed version is fetched with pip into
``cache_dir()/converter/<version>`` and only those files are kept; later calls reuse them.
Conversion runs as a subprocess with ``PYTHONPATH`` at the bundled gguf-py, because a gguf from
PyPI that does not match the converter breaks conversion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from lrl_harness.api.errors import BackendUnavailableError, ConversionError
from lrl_harness.util.paths import cache_dir

SDIST_ENV = "LRL_HARNESS_LLAMACPP_SDIST"
"""Path of an already-downloaded llama-cpp-python sdist (.tar.gz) to take the converter from."""

_VENDOR = PurePosixPath("vendor/llama.cpp")
_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE")
_FOLDERS = ("conversion", "gguf-py/gguf")
HF_OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def llama_cpp_version() -> str:
    """The installed llama-cpp-python version (without importing it)."""
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise BackendUnavailableError(
            "llama-cpp-python is not installed: pip install 'lrl-harness[llamacpp]'") from None


@dataclass(frozen=True)
class Converter:
    """One extracted converter: ``root`` holds the scripts, ``conversion/`` and ``gguf-py/``."""

    version: str
    root: Path

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("NO_LOCAL_GGUF", None)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.gguf_py), str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        return env

    def hf_to_gguf(self, model_dir: Path, out_file: Path, outtype: str = "f32") -> Path:
        """Convert a Hugging Face model directory to one GGUF file (written under a temporary name first)."""
        if outtype not in HF_OUTTYPES:
            raise ConversionError(f"unknown GGUF output type {outtype!r}; "
                                  f"available: {', '.join(HF_OUTTYPES)}")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ConversionError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
        return self._run("convert_hf_to_gguf.py", [str(model_dir), "--outtype", outtype], out_file,
                         what=f"converting {model_dir.name} to GGUF")

    def lora_to_gguf(self, adapter_dir: Path, base_model_dir: Path, out_file: Path,
                     outtype: str = "f32") -> Path:
        """Convert a peft LoRA adapter directory to a GGUF adapter for ``Llama(lora_path=...)``."""
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ConversionError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
        args = [str(adapter_dir), "--base", str(base_model_dir), "--outtype", outtype]
        return self._run("convert_lora_to_gguf.py", args, out_file,
                         what=f"converting adapter {adapter_dir.name} to GGUF")

    def _run(self, script: str, args: list[str], out_file: Path, what: str) -> Path:
        out_file = Path(out_file)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
        cmd = [sys.executable, str(self.root / script), *args, "--outfile", str(tmp)]
        try:
            returncode, stdout, stderr = run_tied(cmd, env=self.env(), cwd=self.root)
            if returncode != 0 or not tmp.is_file():
                raise ConversionError(f"{what} failed (llama.cpp converter {self.version}): "
                                      f"{_last_line(stderr or stdout)}")
            os.replace(tmp, out_file)
        finally:
            tmp.unlink(missing_ok=True)
        return out_file


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the parent dies, however the parent dies
    (SIGKILL included), so a converter is never left running as an orphan."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def run_tied(cmd: list[str], env: dict, cwd: Path) -> tuple[int, str, str]:
    """Run ``cmd`` to completion with its output captured. The child dies with this process: on
    Linux through PR_SET_PDEATHSIG (covers SIGKILL), everywhere by being killed in ``finally`` when
    this process is interrupted (Ctrl-C, SIGTERM turned into an exception by the CLI)."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)
    try:
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout, stderr


def get_converter(llama_version: str | None = None, sdist: Path | str | None = None,
                  root: Path | None = None) -> Converter:
    """The converter matching ``llama_version`` (default: the installed llama-cpp-python).

    ``sdist`` (or ``$LRL_HARNESS_LLAMACPP_SDIST``) names an already-downloaded sdist; otherwise pip
    downloads it. ``root`` defaults to ``cache_dir()/converter``.
    """
    llama_version = llama_version or llama_cpp_version()
    root = Path(root) if root is not None else cache_dir() / "converter"
    target = root / llama_version
    if _complete(target):
        return Converter(llama_version, target)
    root.mkdir(parents=True, exist_ok=True)
    sdist = sdist or os.environ.get(SDIST_ENV) or None
    with tempfile.TemporaryDirectory(prefix=f".{llama_version}.", dir=root) as work:
        work = Path(work)
        archive = Path(sdist) if sdist else _pip_download(llama_version, work / "download")
        staged = work / "converter"
        _extract(archive, staged, llama_version)
        try:
            os.replace(staged, target)
        except OSError:
            if not _complete(target):  # another process may have won the race with a complete copy
                raise
    return Converter(llama_version, target)


def _complete(folder: Path) -> bool:
    return all((folder / p).exists() for p in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py",
                                                 "gguf-py/gguf/__init__.py"))


def _pip_download(llama_version: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    # the source archive of llama-cpp-python only: pip still prepares its metadata in an isolated
    # build environment, whose build requirements may come as wheels (with ``:all:`` pip built
    # them from source too: 206 s on a fresh machine against 4 s)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps",
           "--disable-pip-version-check", "-d", str(dest), f"llama-cpp-python=={llama_version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not archives:
        raise ConversionError(
            f"could not download the llama.cpp converter (llama-cpp-python=={llama_version} sdist) with pip: "
            f"{_last_line(proc.stderr or proc.stdout)}; "
            f"set {SDIST_ENV} to a downloaded sdist to work offline")
    return archives[0]


def _extract(archive: Path, dest: Path, llama_version: str) -> None:
    """Extract only the converter's files from the sdist into ``dest``."""
    if not archive.is_file():
        raise ConversionError(f"{archive}: no such llama-cpp-python sdist")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            wanted = []
            for member in tar.getmembers():
                rel = _converter_path(member.name)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                member.name = str(rel)
                wanted.append(member)
            if not any(m.name == "convert_hf_to_gguf.py" for m in wanted):
                raise ConversionError(f"{archive}: not a llama-cpp-python sdist with the llama.cpp converter")
            dest.mkdir(parents=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=wanted, filter="data")
            else:  # Python without extraction filters: the member names were checked above
                tar.extractall(dest, members=wanted)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ConversionError(f"{archive}: cannot read the sdist ({exc})") from None
    (dest / "VERSION").write_text(llama_version + "\n", encoding="utf-8")


def _converter_path(name: str) -> PurePosixPath | None:
    """The path of a sdist member inside the converter folder, or None when it is not needed."""
    parts = PurePosixPath(name).parts
    if len(parts) < 4 or ".." in parts or PurePosixPath(*parts[1:3]) != _VENDOR:
        return None
    rel = PurePosixPath(*parts[3:])
    if str(rel) in _FILES or any(rel == PurePosixPath(f) or PurePosixPath(f) in rel.parents
                                 for f in _FOLDERS):
        return rel
    return None


def _last_line(text: str | None) -> str:
    """The most telling line of a tool's output: its last error line, else its last line."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1]
