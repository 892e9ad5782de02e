"""Cross-field rules of a component: literal expressions over its options, checked before anything is built.

A single option's type and range live in the constructor's annotations; a rule that ties two
options together is declared beside them, as a class attribute the config check reads from
source (no import, no torch)::

    class VQVAE(Autoencoder):
        option_rules = (
            ("bottleneck % code_dim == 0", "{path}.code_dim={code_dim} must divide {path}.bottleneck={bottleneck}"),
        )

Each rule is ``(expression, message)``. The expression uses the component's option names
(``encoder.channels`` reaches into a nested option), numbers, strings, ``None``, arithmetic,
comparisons, ``and``/``or``/``not``, ``in``, indexing (``betas[0]``), ``len()``, ``min()``, ``max()`` and
``x if c else y``;
the message may name ``{path}`` (the config key of the component, e.g. ``model``) and any option
(``{code_dim}``: its value). Rules of base classes apply to subclasses. The early config check
applies them to a run's config and to every job of a sweep before the first job starts, and
:func:`aelab.config.signatures.check_arguments` applies them again when the component is built,
with the same words. A rule whose options cannot be known yet (an interpolation, a missing value)
is left to the constructor.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_FUNCTIONS = {"len": len, "min": min, "max": max}


class Unknown(Exception):
    """An option the rule needs has no value yet: the rule is not decided here."""


class RuleError(ValueError):
    """A rule that is not an expression this module evaluates (a mistake in the component's declaration)."""


def _get(values: Mapping[str, Any], name: str) -> Any:
    if name not in values:
        raise Unknown(name)
    value = values[name]
    if value is _MISSING:
        raise Unknown(name)
    return value


_MISSING = object()


def _attribute(value: Any, name: str) -> Any:
    keywords = getattr(value, "keywords", None)  # a functools.partial (a net factory) holds its options here
    if isinstance(value, Mapping):
        if name not in value:
            raise Unknown(name)
        return value[name]
    if isinstance(keywords, dict) and name in keywords:
        return keywords[name]
    if hasattr(value, name):
        return getattr(value, name)
    raise Unknown(name)


def evaluate(expression: str, values: Mapping[str, Any]) -> Any:
    """The value of a rule's ``expression`` with the component's option ``values``; :class:`Unknown` when one is
    missing."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"option rule {expression!r} is not a Python expression: {exc.msg}") from None
    return _eval(tree.body, values, expression)


def _eval(node: ast.AST, values: Mapping[str, Any], source: str) -> Any:  # noqa: C901 — one case per node kind
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return _get(values, node.id)
    if isinstance(node, ast.Attribute):
        return _attribute(_eval(node.value, values, source), node.attr)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, values, source) for e in node.elts]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, values, source), _eval(node.right, values, source))
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, values, source)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, ast.USub):
            return -operand
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values, source) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values, source)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, values, source)
            if type(op) not in _COMPARE or not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        try:
            return _eval(node.value, values, source)[_eval(node.slice, values, source)]
        except (IndexError, KeyError, TypeError):
            raise Unknown(ast.unparse(node)) from None
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, values, source) else node.orelse, values, source)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*[_eval(a, values, source) for a in node.args])
    raise RuleError(f"option rule {source!r}: {ast.dump(node)[:60]} is not allowed in a rule")


def rule_problems(rules: Any, values: Mapping[str, Any], path: str) -> list[str]:
    """The messages of the ``rules`` that ``values`` break (rules that cannot be decided yet are skipped)."""
    problems = []
    for rule in rules or ():
        try:
            expression, message = rule
        except (TypeError, ValueError):
            problems.append(f"{path}: an option rule must be (expression, message), got {rule!r}")
            continue
        try:
            holds = evaluate(str(expression), values)
        except Unknown:
            continue
        except RuleError as exc:
            problems.append(str(exc))
            continue
        except Exception:  # noqa: BLE001 — a value of an unexpected type (a string where a number was meant): its own check says so
            continue
        if not holds:
            shown = {k: v for k, v in values.items() if v is not _MISSING}
            try:
                problems.append(str(message).format_map(_Format(shown, path)))
            except (KeyError, ValueError, IndexError):
                problems.append(f"{path}: {message} ({expression})")
    return problems


class _Format(dict):
    def __init__(self, values: Mapping[str, Any], path: str):
        super().__init__(values)
        self["path"] = path

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def missing() -> object:
    """The marker of an option with no value yet (an unresolved interpolation, ``???``)."""
    return _MISSING
