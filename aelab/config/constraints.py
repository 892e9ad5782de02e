"""Value constraints written into type annotations, and the one checker of values against annotations.

A component declares its options once, in its constructor's signature::

    def __init__(self, bottleneck: Annotated[int, Range(ge=1, what="the size of the code")] = 32,
                 loss: Literal["mse", "bce"] = "mse", sigma: NonNegativeFloat = 0.1): ...

The early config check (:mod:`aelab.config.checks`, reading the signature from
source without importing torch) and the constructors themselves
(:func:`check_arguments`) both judge values by these annotations, with the
same messages. This module imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

__all__ = [
    "Range",
    "Bottleneck",
    "PositiveInt",
    "NonNegativeInt",
    "NonNegativeFloat",
    "PositiveFloat",
    "Probability",
    "Type",
    "ANY",
    "describe",
    "value_problems",
]


@dataclass(frozen=True)
class Range:
    """A numeric range for an annotated option: ``Annotated[int, Range(ge=1)]``.

    ``what`` names the quantity in messages: "model.bottleneck is *the size of
    the code* and must be a positive integer (got 0)".
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    what: str = ""

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def rule(self, integer: bool) -> str:
        """The rule in words: "a positive integer", ">= 0", "lie in [0, 1]"."""
        if integer and self.ge == 1 and self.le is None and self.lt is None:
            return "be a positive integer"
        if self.ge is not None and self.le is not None:
            return f"lie in [{self.ge:g}, {self.le:g}]"
        lows = [f">= {self.ge:g}"] if self.ge is not None else [f"> {self.gt:g}"] if self.gt is not None else []
        highs = [f"<= {self.le:g}"] if self.le is not None else [f"< {self.lt:g}"] if self.lt is not None else []
        return "be " + " and ".join(lows + highs)


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1, what="a probability")]
#: the code size shared by every variant (``model.bottleneck``)
Bottleneck = Annotated[int, Range(ge=1, what="the size of the code")]


# ------------------------------------------------------------------ the type model
@dataclass(frozen=True)
class Type:
    """What an annotation allows, reduced to what config values can be judged by.

    ``kind`` is one of ``any``, ``none``, ``bool``, ``int``, ``float``, ``str``,
    ``list`` (``args``: the element type), ``dict``, ``callable`` (a config
    with ``_target_``), ``literal`` (``values``), ``union`` (``args``) and
    ``class`` (a class the checker cannot judge; named in ``name``).
    ``ranges`` come from ``Annotated[..., Range(...)]``.
    """

    kind: str
    args: tuple[Type, ...] = ()
    values: tuple[Any, ...] = ()
    ranges: tuple[Range, ...] = ()
    name: str = ""

    def with_ranges(self, ranges: tuple[Range, ...]) -> Type:
        return Type(self.kind, self.args, self.values, self.ranges + ranges, self.name)


ANY = Type("any")


def union(members: list[Type]) -> Type:
    """The union of ``members``; anything the checker cannot judge makes the whole union ``any``."""
    flat: list[Type] = []
    for m in members:
        flat.extend(m.args if m.kind == "union" and not m.ranges else [m])
    if any(m.kind in ("any", "class") for m in flat):
        return ANY
    return flat[0] if len(flat) == 1 else Type("union", tuple(flat))


def describe(t: Type) -> str:
    """A short human name of the type: ``int``, ``int or None``, ``list of int``."""
    if t.kind == "union":
        return " or ".join(describe(a) for a in t.args)
    if t.kind == "list":
        return f"list of {describe(t.args[0])}" if t.args and t.args[0].kind != "any" else "list"
    if t.kind == "literal":
        return "one of " + ", ".join(repr(v) for v in t.values)
    if t.kind == "callable":
        return "a config with _target_"
    if t.kind == "class":
        return t.name
    return t.kind


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig"


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict) or type(value).__name__ == "DictConfig"


def _accepts(t: Type, value: Any) -> bool:
    """Whether ``value`` has the shape ``t`` asks for (ranges aside)."""
    kind = t.kind
    if kind in ("any", "class"):
        return True
    if kind == "none":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return _is_list(value) and (not t.args or all(_accepts(t.args[0], v) for v in value))
    if kind == "dict":
        return _is_dict(value)
    if kind == "callable":
        return callable(value) or (_is_dict(value) and "_target_" in value)
    if kind == "literal":
        return any(
            value == v and type(value) is type(v) or (isinstance(v, float) and isinstance(value, int) and value == v)
            for v in t.values
        )
    if kind == "union":
        return any(_accepts(a, value) for a in t.args)
    return True


def _quote_hint(key: str, value: Any, t: Type) -> str:
    """A hint when the command line turned a text value into a number or a bool (name=nan, name=123, tag=yes)."""
    wants_text = t.kind == "str" or (t.kind == "union" and any(a.kind == "str" for a in t.args))
    if wants_text and isinstance(value, (int, float, bool)):
        return f"; the command line read it as a {type(value).__name__}: quote it for Hydra, \"{key}='{value}'\""
    return ""


def value_problems(key: str, value: Any, t: Type) -> list[str]:
    """What is wrong with option ``key`` = ``value`` under type ``t`` (empty when nothing is)."""
    if t.kind == "union":
        fitting = [a for a in t.args if _accepts(a, value)]
        if not fitting:
            literals = [v for a in t.args if a.kind == "literal" for v in a.values]
            if literals and isinstance(value, str) and all(a.kind in ("literal", "none") for a in t.args):
                return [f"{key}={value!r} is not one of {literals}"]
            return [f"{key}={value!r} has the wrong type: expected {describe(t)}{_quote_hint(key, value, t)}"]
        problems = [value_problems(key, value, a) for a in fitting]
        return [] if any(not p for p in problems) else problems[0]
    if not _accepts(t, value):
        if t.kind == "literal":
            return [f"{key}={value!r} is not one of {list(t.values)}"]
        return [f"{key}={value!r} has the wrong type: expected {describe(t)}{_quote_hint(key, value, t)}"]
    for r in t.ranges:
        numbers = [
            v
            for v in (value if _is_list(value) else [value])
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if any(not r.contains(v) for v in numbers):
            what = f" is {r.what} and" if r.what else ""
            if _is_list(value):
                return [
                    f"every entry of {key}{what} must {r.rule(all(isinstance(v, int) for v in numbers))} (got "
                    f"{value!r})"
                ]
            return [f"{key}{what} must {r.rule(t.kind == 'int')} (got {value!r})"]
    if t.kind == "list" and t.args and t.args[0].ranges:
        for r in t.args[0].ranges:
            if any(isinstance(v, (int, float)) and not r.contains(v) for v in value):
                what = f" is {r.what} and" if r.what else ""
                return [f"every entry of {key}{what} must {r.rule(t.args[0].kind == 'int')} (got {list(value)!r})"]
    return []
