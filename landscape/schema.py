"""Typed settings: an :class:`Option` declares one setting (its type, bounds, default and help);
:func:`coerce` checks a value against it and :func:`describe` says what it accepts.

The metrics declare their settings with these (:mod:`landscape.metrics`), and the CLI's checks,
the study file's schema and ``--track-arg`` all read the same declarations. Torch-free.

>>> coerce(integer(2, 100), 1), coerce(positive(1e-6), 3)
((False, 1), (True, 3.0))
>>> describe(choice("top", "bottom"))
'one of "top", "bottom"'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One setting: ``kind`` is ``int``, ``float``, ``bool``, ``str`` (non-empty), ``text``,
    ``choice``, ``range`` (two floats LO < HI), ``path``, ``paths`` or ``globs``; ``low`` the
    smallest allowed number (``strict``: excluded); ``choices`` for ``choice``; ``default``
    (``None``: unset)."""

    kind: str
    default: Any = None
    low: float | None = None
    choices: tuple = ()
    help: str = ""
    strict: bool = False  # a number must exceed ``low`` (not merely reach it)
    flag: str | None = None  # the CLI flag when it is not ``--key`` with ``-`` for ``_``

    def flag_for(self, key: str) -> str:
        """This setting's command-line flag (``flag`` may add short forms after a space)."""
        return self.flag.split()[0] if self.flag else "--" + key.replace("_", "-")


def integer(low: int, default: Any = None, help: str = "", flag: str | None = None) -> Option:
    """An integer ``>= low``."""
    return Option("int", default, low, help=help, flag=flag)


def positive(default: Any = None, help: str = "") -> Option:
    """A number ``> 0``."""
    return Option("float", default, 0.0, help=help, strict=True)


def choice(*choices: str, default: Any = None, help: str = "") -> Option:
    """One of ``choices`` (default: the first)."""
    return Option("choice", default if default is not None else choices[0], choices=choices,
                  help=help)


def describe(opt: Option) -> str:
    """What ``opt`` accepts, for an error message."""
    if opt.kind == "int":
        return "an integer" + (f" >= {int(opt.low)}" if opt.low is not None else "")
    if opt.kind == "float":
        return "a finite number" + (
            "" if opt.low is None else f" {'>' if opt.strict else '>='} {opt.low:g}"
        )
    if opt.kind == "bool":
        return "true or false"
    if opt.kind == "choice":
        return "one of " + ", ".join(json.dumps(c) for c in opt.choices)
    if opt.kind == "range":
        return "two numbers [LO, HI] with LO < HI"
    if opt.kind in ("paths", "globs"):
        return "a list of paths"
    return "a string" if opt.kind == "text" else "a non-empty string"


def coerce(opt: Option, value: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` checked against ``opt`` (ints accepted for floats)."""
    k = opt.kind
    if k == "int":
        ok = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (opt.low is None or value >= opt.low)
        )
        return ok, value
    if k == "float":
        if isinstance(value, bool) or not isinstance(value, (int,
                                                             float)) or not math.isfinite(value):
            return False, value
        value = float(value)
        return (opt.low is None or (value > opt.low if opt.strict else value >= opt.low)), value
    if k == "bool":
        return isinstance(value, bool), value
    if k == "choice":
        return value in opt.choices and not isinstance(value, bool), value
    if k == "range":
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v,
                  bool) and math.isfinite(v) for v in value)
              and value[0] < value[1])
        return ok, [float(v) for v in value] if ok else value
    if k in ("paths", "globs"):
        if isinstance(value, str):
            value = [value]
        return isinstance(value, list) and all(isinstance(v, str) and v for v in value), value
    if k == "text":
        return isinstance(value, str), value
    return isinstance(value, str) and value != "", value


def names(spec: str | list[str] | None, choices: Any = None, what: str = "name") -> list[str]:
    """Names given comma-separated or repeated (``"a,b"``, ``["a", "b,c"]``) in order, without
    repeats; each checked against ``choices`` when given (a ConfigError names ``what``).

    >>> names(["trace,eig", "trace"])
    ['trace', 'eig']
    """
    from .errors import ConfigError

    parts = [spec] if isinstance(spec, str) else list(spec or [])
    out = list(dict.fromkeys(n.strip() for part in parts for n in str(part).split(",")
                             if n.strip()))
    for n in out:
        if choices is not None and n not in choices:
            raise ConfigError(f"unknown {what} {n!r}", f"choose from {', '.join(choices)}")
    return out


def check(opt: Option, value: Any, flag: str, hint: str = "") -> Any:
    """``value`` coerced to ``opt``, or a ConfigError naming ``flag`` (None passes: unset)."""
    from .errors import ConfigError

    if value is None:
        return None
    ok, value = coerce(opt, value)
    if ok:
        return value
    if opt.kind == "choice":
        raise ConfigError(f"unknown {flag} {value!r}",
                          f"choose {' or '.join(map(str, opt.choices))}")
    raise ConfigError(f"{flag} must be {describe(opt)}, got {value!r}",
                      hint or f"pass a valid {flag}")


__all__ = ["Option", "check", "choice", "coerce", "describe", "integer", "names", "positive"]
