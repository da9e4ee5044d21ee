"""Plugin options, declared once and checked by one helper.

A plugin declares each option it takes as an :class:`Option` (type, default, range or choices, a
line of help) and calls :func:`check_options` on what the user gave; it gets back every option with
its default filled in, converted to the declared type. An unknown option or a malformed value is a
``ConfigError`` of one line naming the plugin, the option and what it accepts, raised before any
work starts. Options are declared where the plugin registers (``register(name, factory,
options=SPEC)``), so the core checks them before it claims an output folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrl_harness.api.errors import ConfigError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
          dict: "a table"}


@dataclass(frozen=True)
class Option:
    """One option: its type (int, float, str, bool, list, dict or a tuple of them), default, limits
    (``min``/``max`` inclusive), allowed ``choices``, whether null is accepted, and a line of help."""

    type: Any
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    check: Callable[[Any], bool] | None = None
    requirement: str | None = None
    """With ``check``: a further test of the converted value, and what it asks for in words."""

    def accepts(self) -> str:
        """What the option accepts, in words: ``a positive integer``, ``one of auto, cpu, cuda``."""
        if self.requirement is not None:
            text = self.requirement
        elif self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.type is int and self.min in (0, 1) and self.max is None:
            text = "a positive integer" if self.min == 1 else "a non-negative integer"
        elif self.type is float and self.min == 0 and self.max is None:
            text = "a non-negative number"
        else:
            types = self.type if isinstance(self.type, tuple) else (self.type,)
            text = " or ".join(_NAMES.get(t, getattr(t, "__name__", str(t))) for t in types)
            if self.min is not None and self.max is not None:
                text += f" from {self.min:g} to {self.max:g}"
            elif self.min is not None:
                text += f" >= {self.min:g}"
            elif self.max is not None:
                text += f" <= {self.max:g}"
        return text + (" (or null)" if self.nullable else "")


def _convert(option: Option, value):
    """``value`` as the option's type, or raise ValueError. Text from the command line is accepted
    where it reads unambiguously as the type (``"4"`` for an integer, ``"off"`` for a flag)."""
    types = option.type if isinstance(option.type, tuple) else (option.type,)
    for kind in types:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
        elif kind is float:
            number = value
            if isinstance(value, str):
                try:
                    number = float(value.strip())
                except ValueError:
                    continue
            if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
                return float(number)
        elif kind is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool) and option.choices is None:
                return str(value)
        elif isinstance(value, kind):
            return value
    raise ValueError


def check_options(owner: str, spec: dict[str, Option], options: dict | None, *,
                  passthrough: bool = False, unknown_label: str | None = None) -> dict:
    """Every option of ``spec`` with its default, the user's ``options`` checked and converted.

    ``owner`` names the plugin in messages ("backend llamacpp"). Keys starting with ``_`` are the
    pipeline's own and are passed through unchecked; with ``passthrough`` unknown keys are returned
    as they are (for a plugin that hands them to another, which checks them)."""
    options = dict(options or {})
    private = {k: v for k, v in options.items() if k.startswith("_")}
    given = {k: v for k, v in options.items() if not k.startswith("_")}
    unknown = sorted(set(given) - set(spec))
    if unknown and not passthrough:
        known = ", ".join(sorted(spec)) or "none"
        if unknown_label:
            raise ConfigError(f"unknown {unknown_label} option {unknown[0]!r}; {owner} takes: {known}")
        raise ConfigError(f"unknown option {unknown[0]!r} for {owner}; known: {known}")
    values = {}
    for name, option in spec.items():
        if name not in given:
            values[name] = option.default
            continue
        value = given[name]
        if value is None:
            if not option.nullable:
                raise ConfigError(f"{owner}: option {name} must be {option.accepts()}, got null")
            values[name] = None
            continue
        try:
            converted = _convert(option, value)
        except ValueError:
            raise ConfigError(f"{owner}: option {name} must be {option.accepts()}, got {value!r}") from None
        if option.choices is not None and converted not in option.choices:
            raise ConfigError(f"{owner}: unknown {name} {value!r}; option {name} must be {option.accepts()}")
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            if (option.min is not None and converted < option.min) or (
                    option.max is not None and converted > option.max):
                raise ConfigError(f"{owner}: option {name} must be {option.accepts()}, got {value!r}")
        if option.check is not None and not option.check(converted):
            raise ConfigError(f"{owner}: option {name} must be {option.accepts()}, got {value!r}")
        values[name] = converted
    if passthrough:
        values.update({k: given[k] for k in unknown})
    return {**values, **private}


def describe(spec: dict[str, Option]) -> list[str]:
    """One line per option, for help texts and ``lrl plugins``."""
    return [f"{name}: {option.accepts()}" + (f" (default {option.default!r})" if option.default is not None
                                             else "") + (f"; {option.help}" if option.help else "")
            for name, option in spec.items()]


def parse_flag(value) -> bool:
    """An on/off option given as a bool or as text from the command line ("false", "0", "no")."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)
