"""The measurement envelope every bench target goes through, one request at a time or under load.

Around the work it records the same things the same way: memory before loading, the backend opened
through the registry (options checked, always closed), load time, warm-up on prompts that are not
counted, elapsed time, RSS growth, peak RSS and, on CUDA, the peak GPU memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lrl_harness.api.contract import GenerationSettings
from lrl_harness.bench.performance import difference
from lrl_harness.bench.targets import Target
from lrl_harness.evaluation.ask import generate
from lrl_harness.results.machine import cuda_torch, current_rss_mib, peak_rss_mib

PEAK_NOTE = "peak RSS is this process's peak so far (earlier targets included)"


@dataclass
class Envelope:
    """A measured backend: ``backend`` to use inside the block; the figures are filled in on exit."""

    backend: Any
    info: dict
    load_s: float
    elapsed_s: float = 0.0
    memory: dict = field(default_factory=dict)


@contextmanager
def measurement(registry, target: Target, prompts: Sequence[str], settings: GenerationSettings, warmup: int,
             note: str, on_warmup=None) -> Iterator[Envelope]:
    """Open ``target``'s backend, warm it up on ``warmup`` prompts, yield it; on exit close it and record
    elapsed time and memory (``note`` says what the memory figures cover)."""
    torch = cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mib()
    started = time.perf_counter()
    with registry.open_backend(target.backend, target.model, target.options) as backend:
        envelope = Envelope(backend, {}, time.perf_counter() - started)
        envelope.info = backend.info()
        if on_warmup is not None:
            on_warmup()
        for i in range(warmup):
            generate(backend, [prompts[i % len(prompts)]], settings)
        yield envelope
        envelope.elapsed_s = time.perf_counter() - started
        rss_loaded = current_rss_mib()
    envelope.memory = {
        "peak_rss_mib": peak_rss_mib(),
        "rss_growth_mib": difference(rss_loaded, rss_before),
        "gpu_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch else None,
        "gpu_max_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1) if torch else None,
        "note": note,
    }
