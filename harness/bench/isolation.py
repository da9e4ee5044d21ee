"""Each target measured in its own spawned process, so its load time, peak RSS and warm state are its own.
"""

from __future__ import annotations

import os

from lrl_harness.api.contract import GenerationSettings
from lrl_harness.api.errors import LrlError
from lrl_harness.bench.measure import measure
from lrl_harness.bench.targets import Target
from lrl_harness.util.progress import ProgressFn, silent


def measure_isolated(task_name: str | None, problems, prompts, target: Target, settings: GenerationSettings,
                     plan: dict, progress: ProgressFn = silent) -> dict:
    """``measure`` in a fresh spawned process: its load time, peak RSS and warm state are its own."""
    import multiprocessing

    if not task_name:
        raise LrlError("cannot measure in a separate process: the task has no name (use in-process mode)")
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, task_name, list(problems), list(prompts), target,
                                                      settings, plan))  # not a daemon: vLLM starts workers
    with progress(f"bench {target.label} (own process)", 1) as advance:
        child.start()
        send.close()
        try:
            kind, payload = receive.recv()
        except EOFError:
            child.join()
            raise LrlError(f"{target.label}: the measuring process died (exit code {child.exitcode})") from None
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
                child.join()
            receive.close()
        advance(1)
    if kind == "error":
        raise LrlError(payload)
    if kind == "crash":
        raise RuntimeError(f"{target.label}: {payload}")
    return payload


def _child_main(conn, task_name, problems, prompts, target: Target, settings, plan) -> None:
    n_threads = target.options.get("_threads")
    if n_threads:  # before anything imports torch or an OpenMP runtime
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n_threads)
    try:
        from lrl_harness.api.registry import Registry, make_plugin_manager

        registry = Registry(make_plugin_manager())
        if n_threads and registry.get("backend", target.backend).threads == "torch":
            import torch

            torch.set_num_threads(int(n_threads))
        task = registry.get("task", task_name).factory()
        entry = measure(registry, task, problems, prompts, target, settings, plan)
        entry["memory"]["note"] = ("peak RSS of this target's own process; RSS growth is from before loading to "
                                   "the end of the run; a server backend's memory is not seen here")
        conn.send(("ok", entry))
    except LrlError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported in the parent, which shows the traceback's line
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
