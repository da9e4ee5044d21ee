"""Where lrl-harness keeps what it builds: tiny models, converters, teacher-response caches."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LRL_HARNESS_CACHE"


def cache_dir() -> Path:
    """``$LRL_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/lrl-harness``, else ``~/.cache/lrl-harness``."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrl-harness"
    root.mkdir(parents=True, exist_ok=True)
    return root
