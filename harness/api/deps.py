"""Heavy dependencies imported on first use, each with the install command in its one-line error.

``lrl --help`` and the plugin registry never import torch; a backend or student imports it through
``import_torch`` when it is first used.
"""

from __future__ import annotations

import os
import sys

from lrl_harness.api.errors import BackendUnavailableError


def import_torch():
    """Import torch for lrl-harness's CPU work.

    On a shared CPU, OpenMP threads that spin while they wait take the cores the other threads
    need: on 2 busy cores a training step took 3-30x longer than with sleeping threads (which cost
    about a third more on an idle machine). So, unless the user chose otherwise, the threads sleep.
    This only works before torch's first import in the process.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError("this needs torch: pip install torch "
                                      "(the CPU build: --index-url https://download.pytorch.org/whl/cpu)") from None
    return torch
