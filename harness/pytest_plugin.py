"""pytest fixtures for gating a model in CI (registered through the ``pytest11`` entry point).

- ``lrl_accuracy(backend=..., model=..., task=..., preset=..., split=..., n=...)`` runs a task split on a
  backend and returns an :class:`AccuracyResult`; ``.assert_at_least(balanced_accuracy=0.9)`` compares the
  one-sided 95% lower bound by default (``by="point"`` compares the point estimate instead).
- ``lrl_latency(...)`` times one problem per round with pytest-benchmark's ``benchmark`` fixture, so
  ``--benchmark-autosave``, ``--benchmark-compare`` and ``--benchmark-compare-fail=mean:10%`` gate latency.
- ``lrl_check(results, baseline)`` runs the regression check and fails the test on a regression.

Override the session fixture ``lrl_plugins`` to register extra plugins (a backend of your own).
Loaded models are kept for the session and closed at its end. Nothing heavy is imported until a
fixture is used, so this plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

BOUNDS = ("lower_bound", "point")


@dataclass
class AccuracyResult:
    """A scored task split: the results-file block (``score_stage`` plus ``results``)."""

    block: dict
    backend: str
    model: str
    alpha: float = 0.05
    info: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.block["accuracy"]

    @property
    def balanced_accuracy(self) -> float:
        return self.block["balanced_accuracy"]

    @property
    def n(self) -> int:
        return self.block["total"]

    @property
    def unparsed(self) -> int:
        return self.block["unparsed"]

    def lower_bound(self, metric: str = "accuracy", alpha: float | None = None) -> float:
        """One-sided ``1 - alpha`` lower bound: Wilson for accuracy; for balanced accuracy, the mean of
        per-label Wilson bounds at ``alpha / labels`` (conservative)."""
        from lrl_harness.evaluation.statistics import balanced_accuracy_bounds, wilson_lower_one_sided

        alpha = self.alpha if alpha is None else alpha
        if metric == "accuracy":
            return wilson_lower_one_sided(self.block["correct"], self.n, alpha)
        if metric == "balanced_accuracy":
            return balanced_accuracy_bounds(self.block["results"], alpha)[0]
        raise ValueError(f"unknown metric {metric!r}; use accuracy or balanced_accuracy")

    def assert_at_least(self, accuracy: float | None = None, balanced_accuracy: float | None = None, *,
                        by: str = "lower_bound", alpha: float | None = None) -> AccuracyResult:
        """Fail unless each given metric reaches its threshold.

        ``by="lower_bound"`` (the default) asks for evidence: the one-sided ``1 - alpha`` lower bound must
        reach the threshold, so a lucky small sample does not pass. ``by="point"`` compares the point
        estimate.
        """
        if by not in BOUNDS:
            raise ValueError(f"by must be one of {', '.join(BOUNDS)}, got {by!r}")
        alpha = self.alpha if alpha is None else alpha
        problems = []
        for metric, threshold in (("accuracy", accuracy), ("balanced_accuracy", balanced_accuracy)):
            if threshold is None:
                continue
            point = self.block[metric]
            name = metric.replace("_", " ")
            if by == "point":
                if point < threshold:
                    problems.append(f"{name} {point:.3f} (point estimate, n={self.n}) is below {threshold}")
            else:
                bound = self.lower_bound(metric, alpha)
                if bound < threshold:
                    problems.append(f"{name}: one-sided {1 - alpha:.0%} lower bound {bound:.3f} "
                                    f"(point {point:.3f}, n={self.n}) is below {threshold}")
        if problems:
            context = f"unparsed {self.unparsed}, majority baseline {self.block['majority_baseline']:.3f}"
            pytest.fail(f"{self.backend} {self.model}: {'; '.join(problems)} ({context})", pytrace=False)
        return self

    def assert_unparsed_at_most(self, count: int) -> AccuracyResult:
        if self.unparsed > count:
            pytest.fail(f"{self.backend} {self.model}: {self.unparsed} of {self.n} answers unparsed "
                        f"(allowed {count})", pytrace=False)
        return self


class BackendPool:
    """Backends loaded once per session, keyed by backend name, model and options."""

    def __init__(self, registry):
        self.registry = registry
        self._loaded: dict[tuple, Any] = {}
        self._opened = contextlib.ExitStack()
        self.scored: dict[tuple, AccuracyResult] = {}  # lrl_accuracy's answers, reused

    def get(self, backend: str, model, options: dict | None = None):
        spec = _spec(model)
        key = (backend, spec, tuple(sorted((options or {}).items())))
        if key not in self._loaded:
            self._loaded[key] = self._opened.enter_context(self.registry.open_backend(backend, spec, options))
        return self._loaded[key]

    def close(self) -> None:
        self._opened.close()
        self._loaded.clear()


def _spec(model):
    from lrl_harness.api.contract import ModelSpec

    return model if isinstance(model, ModelSpec) else ModelSpec(path=str(model))


def _settings(settings, max_new_tokens):
    from lrl_harness.api.contract import GenerationSettings

    if settings is not None:
        return settings
    return GenerationSettings(max_new_tokens=max_new_tokens) if max_new_tokens else GenerationSettings()


@pytest.fixture(scope="session")
def lrl_plugins() -> list:
    """Extra plugin objects to register beside the installed ones; override in a conftest."""
    return []


@pytest.fixture(scope="session")
def lrl_registry(lrl_plugins):
    """The plugin registry: installed plugins plus ``lrl_plugins``."""
    from lrl_harness.api.registry import Registry, make_plugin_manager

    return Registry(make_plugin_manager(plugins=lrl_plugins))


@pytest.fixture(scope="session")
def lrl_backend_pool(lrl_registry):
    """Loaded backends shared by the session's tests; closed when the session ends."""
    pool = BackendPool(lrl_registry)
    yield pool
    pool.close()


def _problems_and_prompts(registry, task, preset, split, n, seed, strategy):
    from lrl_harness.evaluation.ask import student_prompts

    task_obj = registry.get("task", task).factory()
    problems = task_obj.problems(preset, split, n, seed)
    return task_obj, problems, student_prompts(task_obj, problems, strategy)


@pytest.fixture
def lrl_accuracy(lrl_registry, lrl_backend_pool):
    """``lrl_accuracy(backend=..., model=..., task="meeting-rooms", preset="balanced", split="test",
    n=None, seed=None, options=None, strategy=None, settings=None, max_new_tokens=None, alpha=0.05)``
    -> AccuracyResult. Every prompt goes to the backend in one call (batched where it can)."""

    def run(*, backend: str, model, task: str = "meeting-rooms", preset: str = "balanced",
            split: str = "test", n: int | None = None, seed: int | None = None, options: dict | None = None,
            strategy: str | None = None, settings=None, max_new_tokens: int | None = None,
            alpha: float = 0.05) -> AccuracyResult:
        from lrl_harness.evaluation.ask import evaluate
        from lrl_harness.evaluation.statistics import score_stage

        settings = _settings(settings, max_new_tokens)
        key = (backend, _spec(model), tuple(sorted((options or {}).items())), task, preset, split, n, seed,
               strategy, settings)
        cached = lrl_backend_pool.scored.get(key)
        if cached is not None:
            return replace(cached, alpha=alpha)
        task_obj, problems, prompts = _problems_and_prompts(lrl_registry, task, preset, split, n, seed,
                                                            strategy)
        engine = lrl_backend_pool.get(backend, model, options)
        records = evaluate(engine, task_obj, problems, prompts, settings)
        block = {**score_stage(records), "results": records}
        result = AccuracyResult(block, backend, _spec(model).path, alpha, engine.info())
        lrl_backend_pool.scored[key] = result
        return result

    return run


@pytest.fixture
def lrl_latency(request, lrl_registry, lrl_backend_pool):
    """``lrl_latency(backend=..., model=..., task=..., preset=..., split=..., n=10, rounds=None,
    warmup_rounds=2, ...)``: pytest-benchmark times one problem per round (rounds default to ``n``, so
    each problem is asked once), so its statistics are latency per problem. Once per test."""

    def run(*, backend: str, model, task: str = "meeting-rooms", preset: str = "balanced",
            split: str = "test", n: int = 10, seed: int | None = None, options: dict | None = None,
            strategy: str | None = None, settings=None, max_new_tokens: int | None = None,
            rounds: int | None = None, warmup_rounds: int = 2):
        try:
            benchmark = request.getfixturevalue("benchmark")
        except pytest.FixtureLookupError:
            pytest.fail("lrl_latency needs pytest-benchmark: pip install pytest-benchmark", pytrace=False)
        from lrl_harness.evaluation.ask import generate

        settings = _settings(settings, max_new_tokens)
        _, _, prompts = _problems_and_prompts(lrl_registry, task, preset, split, n, seed, strategy)
        engine = lrl_backend_pool.get(backend, model, options)
        next_prompt = itertools.cycle(prompts).__next__
        benchmark.extra_info.update({"backend": backend, "model": _spec(model).path, "task": task,
                                     "preset": preset, "split": split, "n": len(prompts),
                                     "max_new_tokens": settings.max_new_tokens})
        benchmark.pedantic(lambda: generate(engine, [next_prompt()], settings),
                           rounds=rounds or len(prompts), warmup_rounds=warmup_rounds, iterations=1)
        return benchmark

    return run


@pytest.fixture
def lrl_check():
    """``lrl_check(results, baseline, tolerance=0.02, alpha=0.05, latency_ratio=None)`` with paths or
    dicts: returns the CheckReport, failing the test (with every failure line) on a regression."""

    def run(results, baseline, **options):
        from lrl_harness.reporting.check import check
        from lrl_harness.results.io import load_results

        def load(value):
            return load_results(Path(value)) if isinstance(value, (str, Path)) else value

        report = check(load(results), load(baseline), **options)
        if not report.passed:
            pytest.fail("regression against the baseline:\n" + "\n".join(report.failure_lines()),
                        pytrace=False)
        return report

    return run
