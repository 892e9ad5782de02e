"""The signature of a component named by ``_target_``, read from its source without importing it.

A config names every component by its import path (``_target_:
aelab.models.Autoencoder``, ``torch.optim.Adam``, ``lightning.pytorch.Trainer``).
Its constructor's signature is the one declaration of the options it takes,
their types and ranges (:mod:`aelab.config.constraints`). Importing the component to
look at it would cost seconds (torch, Lightning), so this module finds the
source file (``importlib.util.find_spec`` on the top-level package, which
does not import it), parses it with :mod:`ast`, follows imports and
re-exports, merges ``**kwargs`` with the base class's ``__init__``, and
evaluates annotations into :class:`aelab.config.constraints.Type`; it also keeps the constructor's first
checks of its own arguments (``if not 0.0 <= lr: raise ValueError(...)``, :func:`_guards`). Anything it
cannot see without executing code (a C extension, a dynamically made class)
is reported as unknown, and the checks then accept whatever is given.

The same reader serves the constructors' own checks at run time
(:func:`check_arguments`), so both speak with one voice.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from aelab._compat import current_name
from aelab.config.constraints import ANY, Range, Type, union, value_problems

# Modules whose objects may be imported to evaluate annotations: cheap and side-effect free.
_SAFE_MODULES = ("aelab.config.constraints",)
_TYPING = ("typing", "typing_extensions", "collections.abc", "collections")
_BUILTIN_TYPES = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "bytes": "str",
    "list": "list",
    "tuple": "list",
    "set": "list",
    "frozenset": "list",
    "dict": "dict",
    "object": "any",
}


class _Sentinel:
    """A marker that survives pickling as itself (the signature cache on disk keeps identities)."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name


_NO_DEFAULT = _Sentinel("_NO_DEFAULT")
_UNEVALUATED = _Sentinel("_UNEVALUATED")  # a default value that is not a literal


@dataclass
class Param:
    """One constructor option: its name, type and default (``required`` when it has none)."""

    name: str
    type: Type = ANY
    default: Any = _NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


@dataclass
class Signature:
    """What a ``_target_`` accepts: named options, whether it takes ``**kwargs``, its classes and class attributes."""

    target: str
    params: dict[str, Param] = field(default_factory=dict)
    var_keyword: bool = False
    known: bool = True  # False: the source could not be read; accept anything
    classes: list[str] = field(default_factory=list)  # canonical "module.Class" names, the class first, then its bases
    attrs: dict[str, Any] = field(default_factory=dict)  # literal class attributes, own before inherited
    is_dataclass: bool = False
    #: the constructor's first checks of its own arguments, ``(expression that must hold, message)`` (:func:`_guards`)
    guards: list[tuple[str, str]] = field(default_factory=list)

    def is_subclass_of(self, target: str) -> bool:
        """Whether the component's class derives from ``target`` (by canonical name or import path)."""
        wanted = signature(target)
        return bool(wanted.classes) and wanted.classes[0] in self.classes


# ------------------------------------------------------------------ modules
@dataclass
class _Module:
    name: str
    path: Path
    package: str
    defs: dict[str, ast.AST]  # top-level classes, functions and assigned values
    imports: dict[str, str]  # local name -> dotted import path
    star: list[str]  # modules imported with *


def _spec_locations(top: str) -> tuple[Path | None, list[Path]]:
    """The file and search folders of top-level package ``top`` (found, not imported)."""
    module = sys.modules.get(top)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None, []
    if spec is None:
        return None, []
    origin = Path(spec.origin) if spec.origin and spec.origin not in ("built-in", "frozen", "namespace") else None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    return origin, locations


@cache
def _module_path(name: str) -> tuple[Path, bool] | None:
    """``(source file, is package)`` of dotted module ``name``, or None."""
    parts = name.split(".")
    origin, locations = _spec_locations(parts[0])
    if len(parts) == 1:
        if origin is not None and origin.suffix == ".py":
            return origin, bool(locations)
        return None
    for i, part in enumerate(parts[1:], start=1):
        found = None
        for folder in locations:
            if (folder / part / "__init__.py").is_file():
                found = (folder / part / "__init__.py", [folder / part])
                break
            if (folder / f"{part}.py").is_file():
                found = (folder / f"{part}.py", [])
                break
            if (folder / part).is_dir() and i < len(parts) - 1:  # a namespace package
                found = (None, [folder / part])
                break
        if found is None:
            return None
        origin, locations = found
    return (origin, bool(locations)) if origin is not None else None


def _collect(body: list[ast.stmt], module: str, package: str, defs: dict, imports: dict, star: list) -> None:
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defs[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    defs[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            defs[node.target.id] = node.value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = alias.name
                else:
                    imports.setdefault(alias.name.split(".")[0], alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                if alias.name == "*":
                    star.append(base)
                else:
                    imports[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.If):
            _collect(node.body, module, package, defs, imports, star)
            _collect(node.orelse, module, package, defs, imports, star)
        elif isinstance(node, ast.Try):
            _collect(node.body, module, package, defs, imports, star)
            for handler in node.handlers:
                _collect(handler.body, module, package, defs, imports, star)


_MODULES: dict[str, tuple[float, _Module | None]] = {}


def _module(name: str) -> _Module | None:
    """The parsed module ``name`` (cached while its file is unchanged; an aelab 0.1 path is read at its new place)."""
    name = current_name(name)
    located = _module_path(name)
    if located is None:
        return None
    path, is_package = located
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    for deps in _TOUCHED:  # the signatures being read depend on this file
        deps[str(path)] = mtime
    cached = _MODULES.get(name)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        _MODULES[name] = (mtime, None)
        return None
    package = name if is_package else name.rpartition(".")[0]
    defs: dict[str, ast.AST] = {}
    imports: dict[str, str] = {}
    star: list[str] = []
    _collect(tree.body, name, package, defs, imports, star)
    info = _Module(name, path, package, defs, imports, star)
    _MODULES[name] = (mtime, info)
    return info


def _lookup(dotted: str, depth: int = 0) -> tuple[_Module, str, ast.AST] | None:
    """The definition a dotted path refers to: ``(module, name, node)``."""
    if depth > 30:
        return None
    dotted = current_name(dotted)
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        info = _module(".".join(parts[:i]))
        if info is None:
            continue
        return _lookup_in(info, parts[i:], depth)
    return None


def _lookup_in(info: _Module, attrs: list[str], depth: int) -> tuple[_Module, str, ast.AST] | None:
    name, rest = attrs[0], attrs[1:]
    if name in info.defs:
        node = info.defs[name]
        if not rest:
            if isinstance(node, (ast.Name, ast.Attribute)):  # an alias: Foo = Bar
                target = _qualify(info, node)
                if target is not None and target != f"{info.name}.{name}":
                    return _lookup(target, depth + 1) or (info, name, node)
            return info, name, node
        return None
    if name in info.imports:
        return _lookup(".".join([info.imports[name], *rest]), depth + 1)
    sub = _module(f"{info.name}.{name}")
    if sub is not None and rest:
        return _lookup_in(sub, rest, depth + 1)
    for module in info.star:
        found = _lookup(".".join([module, *attrs]), depth + 1)
        if found is not None:
            return found
    return None


def _qualify(info: _Module, node: ast.AST) -> str | None:
    """The dotted path a Name/Attribute expression refers to in module ``info``."""
    if isinstance(node, ast.Name):
        if node.id in info.imports:
            return info.imports[node.id]
        if node.id in info.defs:
            return f"{info.name}.{node.id}"
        if hasattr(builtins, node.id):
            return f"builtins.{node.id}"
        return None
    if isinstance(node, ast.Attribute):
        base = _qualify(info, node.value)
        return f"{base}.{node.attr}" if base else None
    return None


# ------------------------------------------------------------------ annotations
def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNEVALUATED


def _safe_object(dotted: str) -> Any:
    """The real object at ``dotted`` if it lives in a module that is safe to import, else None."""
    module, _, attr = current_name(dotted).rpartition(".")
    if module in _SAFE_MODULES:
        return getattr(importlib.import_module(module), attr, None)
    return None


def _evaluate(info: _Module, node: ast.AST | None, depth: int = 0) -> Type:
    """The :class:`Type` an annotation expression stands for (``any`` where it cannot be told)."""
    if node is None or depth > 20:
        return ANY
    if isinstance(node, ast.Constant):
        if node.value is None:
            return Type("none")
        if isinstance(node.value, str):  # a forward reference
            try:
                return _evaluate(info, ast.parse(node.value, mode="eval").body, depth + 1)
            except SyntaxError:
                return ANY
        return ANY
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return union([_evaluate(info, node.left, depth + 1), _evaluate(info, node.right, depth + 1)])
    if isinstance(node, ast.Subscript):
        return _subscript(info, node, depth)
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _named_type(info, node, depth)
    return ANY


def _named_type(info: _Module, node: ast.AST, depth: int) -> Type:
    dotted = _qualify(info, node)
    if dotted is None:
        return ANY
    module, _, name = dotted.rpartition(".")
    if module == "builtins":
        if name == "None":
            return Type("none")
        kind = _BUILTIN_TYPES.get(name)
        return Type(kind) if kind and kind != "any" else ANY
    if module in _TYPING:
        if name in ("List", "Tuple", "Set", "FrozenSet", "Sequence", "MutableSequence", "Iterable", "Collection"):
            return Type("list")
        if name in ("Dict", "Mapping", "MutableMapping"):
            return Type("dict")
        if name == "Callable":
            return Type("callable")
        return ANY
    safe = _safe_object(dotted)
    if safe is not None:
        return from_typing(safe)
    found = _lookup(dotted, depth)
    if found is None:
        return ANY
    where, name, definition = found
    if isinstance(definition, ast.ClassDef):
        return Type("class", name=f"{where.name}.{name}")
    if isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ANY
    return _evaluate(where, definition, depth + 1)  # a type alias: X = Literal[...]


def _subscript(info: _Module, node: ast.Subscript, depth: int) -> Type:
    base = _qualify(info, node.value)
    items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    module, _, name = (base or "").rpartition(".")
    if module not in _TYPING and module != "builtins":
        outer = _evaluate(info, node.value, depth + 1)
        return outer
    if name == "Optional":
        return union([_evaluate(info, items[0], depth + 1), Type("none")])
    if name == "Union":
        return union([_evaluate(info, item, depth + 1) for item in items])
    if name == "Literal":
        values = tuple(_literal(item) for item in items)
        return ANY if any(v is _UNEVALUATED for v in values) else Type("literal", values=values)
    if name == "Annotated":
        inner = _evaluate(info, items[0], depth + 1)
        ranges = tuple(r for r in (_constraint(info, item) for item in items[1:]) if r is not None)
        return inner.with_ranges(ranges)
    if name in ("list", "List", "Sequence", "MutableSequence", "Iterable", "Collection", "set", "Set", "frozenset"):
        return Type("list", (_evaluate(info, items[0], depth + 1),))
    if name in ("tuple", "Tuple"):
        members = [
            _evaluate(info, item, depth + 1)
            for item in items
            if not (isinstance(item, ast.Constant) and item.value is Ellipsis)
        ]
        element = members[0] if members and all(m == members[0] for m in members) else ANY
        return Type("list", (element,))
    if name in ("dict", "Dict", "Mapping", "MutableMapping"):
        return Type("dict")
    if name == "Callable":
        return Type("callable")
    if name in ("ClassVar", "Final", "Required", "NotRequired"):
        return _evaluate(info, items[0], depth + 1)
    return ANY


def _constraint(info: _Module, node: ast.AST) -> Range | None:
    """``Range(...)`` in an ``Annotated`` annotation, evaluated from its literal arguments."""
    if not isinstance(node, ast.Call):
        return None
    callee = _qualify(info, node.func)
    obj = _safe_object(callee) if callee else None
    if obj is not Range:
        return None
    kwargs = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
    if any(v is _UNEVALUATED for v in kwargs.values()):
        return None
    return Range(**kwargs)


def from_typing(annotation: Any) -> Type:
    """The :class:`Type` of a real typing object (used for the safe aliases such as ``PositiveInt``)."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return Type("none")
    if origin is typing.Annotated:
        return from_typing(args[0]).with_ranges(tuple(a for a in args[1:] if isinstance(a, Range)))
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return union([from_typing(a) for a in args])
    if origin is typing.Literal:
        return Type("literal", values=args)
    if annotation in (int, float, str, bool):
        return Type(annotation.__name__)
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        return Type("list", (from_typing(args[0]),) if args else ())
    if origin is dict or annotation is dict:
        return Type("dict")
    return ANY


# ------------------------------------------------------------------ signatures
def _params_of(info: _Module, fn: ast.FunctionDef, skip_first: bool) -> tuple[dict[str, Param], bool]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [_NO_DEFAULT] * (len(positional) - len(a.defaults)) + [_literal(d) for d in a.defaults]
    params: dict[str, Param] = {}
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        if skip_first and i == 0:
            continue
        if arg in a.posonlyargs:
            continue
        params[arg.arg] = Param(arg.arg, _evaluate(info, arg.annotation), default)
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        params[arg.arg] = Param(
            arg.arg, _evaluate(info, arg.annotation), _NO_DEFAULT if default is None else _literal(default)
        )
    return params, a.kwarg is not None


def _decorator_names(info: _Module, node: ast.ClassDef) -> list[str]:
    names = []
    for dec in node.decorator_list:
        dec = dec.func if isinstance(dec, ast.Call) else dec
        names.append(_qualify(info, dec) or "")
    return names


#: the class attribute that holds a component's cross-field rules (:mod:`aelab.config.rules`): a base's rules apply too
k_rules = "option_rules"


def _rules_list(rules: Any) -> list:
    return [tuple(r) if isinstance(r, (list, tuple)) else r for r in (rules or ())]


def _class_signature(info: _Module, node: ast.ClassDef, target: str, depth: int) -> Signature:
    sig = Signature(target, classes=[f"{info.name}.{node.name}"])
    for stmt in node.body:  # literal class attributes
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            value = _literal(stmt.value)
            if value is not _UNEVALUATED:
                sig.attrs[stmt.targets[0].id] = value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            value = _literal(stmt.value)
            if value is not _UNEVALUATED:
                sig.attrs[stmt.target.id] = value
    bases = []
    for base in node.bases:
        dotted = _qualify(info, base)
        bases.append(signature(dotted, depth + 1) if dotted and not dotted.startswith("builtins.") else None)
    for base in bases:
        if base is not None:
            sig.classes += [c for c in base.classes if c not in sig.classes]
            for k, v in base.attrs.items():
                sig.attrs.setdefault(k, v)
            if k_rules in base.attrs and k_rules in sig.attrs and sig.attrs[k_rules] is not base.attrs[k_rules]:
                sig.attrs[k_rules] = _rules_list(sig.attrs[k_rules]) + [
                    r for r in _rules_list(base.attrs[k_rules]) if r not in _rules_list(sig.attrs[k_rules])
                ]
    sig.is_dataclass = any(name.endswith("dataclass") for name in _decorator_names(info, node))
    if sig.is_dataclass:
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                t = stmt.annotation
                if isinstance(t, ast.Subscript) and (_qualify(info, t.value) or "").endswith("ClassVar"):
                    continue
                default = _NO_DEFAULT if stmt.value is None else _literal(stmt.value)
                if isinstance(stmt.value, ast.Call):  # field(default_factory=...)
                    default = _UNEVALUATED
                sig.params[stmt.target.id] = Param(stmt.target.id, _evaluate(info, t), default)
        for base in bases:
            if base is not None and base.is_dataclass:
                for k, p in base.params.items():
                    sig.params.setdefault(k, p)
        return sig
    init = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    if init is None:  # inherited constructor
        first = next((b for b in bases if b is None or b.params or b.var_keyword or not b.known), None)
        if first is None:  # no base takes options (object, a plain mixin)
            return sig
        if first.known:
            sig.params, sig.var_keyword = dict(first.params), first.var_keyword
        else:
            sig.known, sig.var_keyword = False, True
        return sig
    sig.params, var_keyword = _params_of(info, init, skip_first=True)
    sig.guards = _guards(init, set(sig.params))
    if var_keyword:  # **kwargs go to the base class's constructor
        base = next((b for b in bases if b is not None and (b.params or b.var_keyword or not b.known)), None)
        if base is None or not base.known:
            sig.var_keyword = True
        else:
            for k, p in base.params.items():
                sig.params.setdefault(k, p)
            sig.var_keyword = base.var_keyword
    return sig


# ------------------------------------------------------------------ the constructor's own argument checks
#: the expressions a guard may use (read, never run: :func:`aelab.config.rules.evaluate` evaluates them)
_GUARD_NODES = (
    ast.Compare,
    ast.BoolOp,
    ast.UnaryOp,
    ast.BinOp,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.expr_context,
    ast.boolop,
    ast.cmpop,
    ast.operator,
    ast.Not,
    ast.USub,
)


def _guard_value(node: ast.AST, params: set[str]) -> str | None:
    """``lr`` or ``betas[0]``: an argument (or an item of it) a guard reads, as a format field; None otherwise."""
    if isinstance(node, ast.Name) and node.id in params:
        return node.id
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in params
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, int)
    ):
        return f"{node.value.id}[{node.slice.value}]"
    return None


def _guard(stmt: ast.If, params: set[str]) -> tuple[str, str] | None:
    """``if not 0.0 <= lr: raise ValueError(f"Invalid learning rate: {lr}")`` as ``("not (not 0.0 <= lr)",
    "Invalid learning rate: {lr}")``: a test over the arguments alone and a message naming them alone; None for
    any other statement."""
    if len(stmt.body) != 1 or not isinstance(stmt.body[0], ast.Raise):
        return None
    exc = stmt.body[0].exc
    if not (
        isinstance(exc, ast.Call)
        and isinstance(exc.func, ast.Name)
        and exc.func.id == "ValueError"
        and len(exc.args) == 1
        and not exc.keywords
    ):
        return None
    read = set()  # the nodes of the arguments' items (betas[0]) already accepted
    for node in ast.walk(stmt.test):  # (breadth first: a subscript before its parts)
        if id(node) in read:
            continue
        if isinstance(node, ast.Subscript):
            if _guard_value(node, params) is None:
                return None
            read |= {id(node.value), id(node.slice)}
        elif isinstance(node, ast.Name):
            if node.id not in params:
                return None
        elif not isinstance(node, _GUARD_NODES):
            return None
    message = exc.args[0]
    if isinstance(message, ast.Constant) and isinstance(message.value, str):
        text = message.value.replace("{", "{{").replace("}", "}}")
    elif isinstance(message, ast.JoinedStr):
        parts = []
        for part in message.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                parts.append(part.value.replace("{", "{{").replace("}", "}}"))
                continue
            shown = _guard_value(part.value, params) if isinstance(part, ast.FormattedValue) else None
            if shown is None or part.conversion != -1 or part.format_spec is not None:
                return None
            parts.append("{" + shown + "}")
        text = "".join(parts)
    else:
        return None
    return f"not ({ast.unparse(stmt.test)})", text


def _raises_only(body: list[ast.stmt]) -> bool:
    """Whether a block only raises (``raise``, or an ``if`` whose branches only raise): it changes no argument."""
    return all(
        isinstance(s, ast.Raise) or (isinstance(s, ast.If) and _raises_only(s.body) and _raises_only(s.orelse))
        for s in body
    )


def _guards(init: ast.FunctionDef, params: set[str]) -> list[tuple[str, str]]:
    """The checks a constructor makes of its arguments before it does anything else, in its order: each ``if <test
    over the arguments>: raise ValueError(<message naming them>)`` at the top of ``__init__`` (torch's optimizers:
    ``if not 0.0 <= lr: raise ValueError(f"Invalid learning rate: {lr}")``). Reading stops at the first statement that
    could change an argument (anything but a docstring and blocks that only raise), so each guard sees the values as
    given; a guard over anything else (``isinstance``, ``self``, a call) is skipped, as it cannot be decided from a
    config."""
    guards = []
    for stmt in init.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if not (isinstance(stmt, ast.If) and _raises_only(stmt.body) and _raises_only(stmt.orelse)):
            break
        guard = _guard(stmt, params) if not stmt.orelse else None
        if guard is not None:
            guards.append(guard)
    return guards


_SIGNATURES: dict[str, Signature] = {}
_DEPS: dict[str, dict[str, float]] = {}  # target -> the source files (and their mtimes) its signature was read from
_TOUCHED: list[dict[str, float]] = []  # the dependency sets being collected (nested signature reads)
_DISK: dict | None = None  # the signature cache on disk: target -> (signature, deps)
_DIRTY = False


def _disk_path() -> Path:
    from aelab.store.files import user_cache_dir

    # -v2: signatures hold their constructor's guards (an older cache's lack them)
    return user_cache_dir() / f"signatures-py{sys.version_info[0]}{sys.version_info[1]}-v2.pkl"


def _disk_key(target: str) -> str:
    """The cache key of ``target``: its name and where its top-level package lives, so that two checkouts
    (a fresh clone beside the working copy) never read each other's signatures."""
    origin, locations = _spec_locations(target.split(".")[0])
    return f"{target}@{origin or (locations[0] if locations else '')}"


def _from_disk(target: str) -> Signature | None:
    """A signature read in an earlier process, if none of the files it was read from has changed since."""
    global _DISK
    if _DISK is None:
        import atexit
        import pickle

        try:
            _DISK = pickle.loads(_disk_path().read_bytes())
        except Exception:  # noqa: BLE001 — missing, from another version, corrupt: start afresh
            _DISK = {}
        atexit.register(_save_disk)
    entry = _DISK.get(_disk_key(target))
    if entry is None:
        return None
    sig, deps = entry
    try:
        if any(os.stat(path).st_mtime != mtime for path, mtime in deps.items()):
            return None
    except OSError:
        return None
    _DEPS[target] = deps
    return sig


def _save_disk() -> None:
    if not _DIRTY or _DISK is None:
        return
    import pickle

    from aelab.store.files import atomic_path

    try:
        with atomic_path(_disk_path()) as tmp:
            tmp.write_bytes(
                pickle.dumps({**_DISK, **{_disk_key(t): (s, _DEPS[t]) for t, s in _SIGNATURES.items() if t in _DEPS}})
            )
    except OSError:
        pass  # a read-only home: the next process reads the sources again


def signature(target: str, depth: int = 0) -> Signature:
    """The :class:`Signature` of the class or function at import path ``target``.

    Read from source once per process, and kept on disk (``~/.cache/aelab``) with the files it
    was read from: a later process reuses it while none of those files has changed.
    """
    global _DIRTY
    cached = _SIGNATURES.get(target) or _from_disk(target)
    if cached is not None:
        _SIGNATURES[target] = cached
        for deps in _TOUCHED:
            deps.update(_DEPS.get(target, {}))
        return cached
    deps: dict[str, float] = {}
    _TOUCHED.append(deps)
    try:
        sig = Signature(target, known=False, var_keyword=True)
        if depth <= 30:
            found = _lookup(target)
            if found is not None:
                info, name, node = found
                if isinstance(node, ast.ClassDef):
                    sig = _class_signature(info, node, target, depth)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    params, var_keyword = _params_of(info, node, skip_first=False)
                    sig = Signature(target, params, var_keyword)
    finally:
        _TOUCHED.pop()
    for outer in _TOUCHED:
        outer.update(deps)
    _SIGNATURES[target], _DEPS[target] = sig, deps
    _DIRTY = _DIRTY or (sig.known and bool(deps))
    return sig


def clear_cache() -> None:
    """Forget parsed modules and signatures, in memory and on disk (tests that write components on the fly)."""
    global _DISK
    _MODULES.clear()
    _SIGNATURES.clear()
    _DEPS.clear()
    _DISK = {}
    _module_path.cache_clear()


# ------------------------------------------------------------------ checking
def check_arguments(component: Any, values: dict[str, Any], prefix: str, keys: dict[str, str] | None = None) -> None:
    """Check a constructor's arguments against its own annotations; raise ConfigError listing every problem.

    Called at the top of a constructor as ``check_arguments(Autoencoder, locals(), "model")``:
    the same rules, the same words as the early config check. ``keys`` names the config key of
    arguments that come from elsewhere (a net's ``bottleneck`` is ``model.bottleneck``).
    """
    from aelab.errors import ConfigError

    target = f"{component.__module__}.{component.__qualname__}"
    sig = signature(target)
    problems = []
    for name, param in sig.params.items():
        if name in values:
            key = (keys or {}).get(name) or (f"{prefix}.{name}" if prefix else name)
            problems += value_problems(key, values[name], param.type)
    if not problems and sig.attrs.get(k_rules):
        from aelab.config.rules import missing, rule_problems

        given = {**(values.get("kwargs") if isinstance(values.get("kwargs"), dict) else {}), **values}
        known = {
            n: given[n] if n in given else p.default if not _is_sentinel(p.default) else missing()
            for n, p in sig.params.items()
        }
        problems += rule_problems(sig.attrs[k_rules], known, prefix)
    if problems:
        raise ConfigError("; ".join(problems))


def _is_sentinel(value: Any) -> bool:
    return value is _NO_DEFAULT or value is _UNEVALUATED
