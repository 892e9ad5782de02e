"""Which ``_target_``s a config read from a run folder may instantiate: the allowlist, in one place.

A run folder's ``.hydra/config.yaml`` is data someone else may have written. Hydra's ``instantiate``
calls whatever its ``_target_``s name, so before a run is rebuilt from its folder
(:func:`aelab.run.load.load_run`: ``aelab-eval``, ``-predict``, ``-export``, ``aelab-compare``'s grids,
``aelab.load_run``) every ``_target_`` of the parts that get built (``data``, ``noise``, ``model``, nested
ones included: ``_partial_``, ``_args_``, lists) must be

* a **component class of the kind its place takes** (:func:`slot_kind`: ``data`` a ``LightningDataModule``,
  ``noise`` a corruption — a ``torch.nn.Module`` —, ``model`` a ``LightningModule``, ``eval.<task>`` an evaluation
  task, anything nested a module, torch optimizer or LR scheduler; callbacks, loggers and search parts are never
  built from a run folder) — defined under aelab's component packages (``aelab.models``, ``aelab.nets``, ``aelab.data``,
  ``aelab.evaluation``, ``aelab.callbacks``), ``torch.optim`` / ``torch.nn``, or a package on the run's
  recorded Hydra search path (``pkg://mylab.conf`` → ``mylab``); functions never are;
* or anything under a package the user trusts explicitly (``trust_packages=[mylab]`` on the command line,
  ``aelab.load_run(..., trust_packages=["mylab"])``, or ``AELAB_TRUST_PACKAGES=mylab,otherlab``).

Either way the object a name resolves to must be defined under the package that allowed the name: Hydra follows
attributes, and ``mylab.torch.load`` is ``torch.load``, which ``trust_packages=[mylab]`` does not trust.

Anything else is refused with one line naming the key and the target (:class:`aelab.errors.TrustError`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from aelab.errors import TrustError

#: the packages whose component classes a run folder's config may name
COMPONENT_PACKAGES = ("aelab.models", "aelab.nets", "aelab.data", "aelab.evaluation", "aelab.callbacks")
TORCH_PACKAGES = ("torch.optim", "torch.nn")
#: the environment variable naming packages trusted explicitly (comma-separated)
TRUST_ENV = "AELAB_TRUST_PACKAGES"
#: the parts of a run's config that loading it instantiates
BUILT_PARTS = ("data", "noise", "model")


def _nested_bases() -> tuple[type, ...]:
    """What a ``_target_`` nested inside a built part may be: a module (nets, penalties), an optimizer, a scheduler."""
    import torch

    return (
        torch.nn.Module,
        torch.optim.Optimizer,
        torch.optim.lr_scheduler.LRScheduler,
        torch.optim.lr_scheduler.ReduceLROnPlateau,
    )


def slot_kind(key: str) -> tuple[str, tuple[type, ...]]:
    """What the slot at ``key`` takes, in words, and the base classes it admits: the part's own builder's expectation
    (``data``: a datamodule, ``noise``: a corruption, ``model``: a LightningModule, ``eval.<task>``: an evaluation
    task; anything nested: a module, optimizer or scheduler). Callbacks, loggers and search parts are built only by a
    training run from its own config, never from a run folder's."""
    import torch
    from lightning.pytorch import LightningDataModule, LightningModule

    from aelab.evaluation.task import EvalTask

    if key == "data":
        return "a datamodule (a LightningDataModule)", (LightningDataModule,)
    if key == "noise":
        return "a corruption (a torch.nn.Module)", (torch.nn.Module,)
    if key == "model":
        return "a model (a LightningModule)", (LightningModule,)
    if key.startswith("eval.") and "." not in key[5:] and "[" not in key[5:]:
        return "an evaluation task (an aelab.evaluation.task.EvalTask)", (EvalTask,)
    return "a module, optimizer or LR scheduler", _nested_bases()


def _kind_of(obj: type) -> str:
    """What a class is, in words, for a refusal: ``a Lightning callback``, ``a datamodule`` ..."""
    import torch
    from lightning.pytorch import Callback, LightningDataModule, LightningModule

    from aelab.evaluation.task import EvalTask

    for base, words in (
        (Callback, "a Lightning callback"),
        (LightningDataModule, "a datamodule"),
        (LightningModule, "a model"),
        (EvalTask, "an evaluation task"),
        (torch.nn.Module, "a torch module"),
        (torch.optim.Optimizer, "an optimizer"),
    ):
        if isinstance(obj, type) and issubclass(obj, base):
            return words
    return "a class of another kind"


def trusted_packages(explicit: Iterable[str] = ()) -> list[str]:
    """The packages trusted explicitly: ``explicit`` and those named by ``$AELAB_TRUST_PACKAGES``."""
    named = [str(p).strip() for p in explicit] + os.environ.get(TRUST_ENV, "").split(",")
    return [p for p in dict.fromkeys(named) if p]


def search_path_packages(search_path: Iterable[str]) -> list[str]:
    """The top-level packages a Hydra search path names: ``pkg://mylab.conf`` → ``mylab`` (``file://`` entries
    name a folder, no package)."""
    names = [str(e).removeprefix("pkg://").split(".")[0].strip("/") for e in search_path if str(e).startswith("pkg://")]
    return [n for n in dict.fromkeys(names) if n.isidentifier()]


def _under(target: str, packages: Iterable[str]) -> bool:
    return any(target == p or target.startswith(f"{p}.") for p in packages)


def config_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(key, _target_)`` in a config tree (dicts and lists, at any depth), keys dotted from ``key``."""
    from omegaconf import DictConfig, ListConfig

    def value(container, k):  # resolved, as instantiate sees it; one that cannot resolve fails instantiate too
        try:
            return container[k]
        except Exception:  # noqa: BLE001 — omegaconf's resolution errors: nothing of it can be instantiated
            return None

    if isinstance(node, (DictConfig, dict)):
        if "_target_" in node:
            yield key, value(node, "_target_")
        for k in node:
            if k != "_target_":
                yield from config_targets(value(node, k), f"{key}.{k}" if key else str(k))
    elif isinstance(node, (ListConfig, list, tuple)):
        for i in range(len(node)):
            yield from config_targets(value(node, i), f"{key}[{i}]")


def _origin(obj: Any) -> str | None:
    """The module ``obj`` is defined in (a module: its own name), whatever dotted name reached it."""
    import inspect

    if inspect.ismodule(obj):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def _shown(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    origin = _origin(obj)
    return f"{origin}.{name}" if origin and origin != name else str(name)


def target_problem(
    target: Any, search_packages: Iterable[str] = (), trusted: Iterable[str] = (), key: str = ""
) -> str | None:
    """Why ``target`` may not be instantiated from a run folder's config, or None when it may (the rule is the
    module docstring's).

    The rule holds for the object the name resolves to, not for the name: Hydra's ``_locate`` follows attributes,
    so ``mylab.torch.load`` is ``torch.load`` and ``aelab.models.base.torch.save`` is ``torch.save``. An object is
    allowed only when the module that defines it lies under the packages its name was allowed for."""
    import inspect

    if not isinstance(target, str) or not target:
        return "is not a dotted name"
    trusted = [p for p in trusted if _under(target, [p])]
    packages = trusted or [p for p in (*COMPONENT_PACKAGES, *TORCH_PACKAGES, *search_packages) if _under(target, [p])]
    if not packages:
        return "is outside the allowlist (aelab's components, torch.optim, torch.nn, the run's search-path packages)"
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except Exception as exc:  # noqa: BLE001 — ImportError, AttributeError ...: named in the refusal
        return f"cannot be found ({type(exc).__name__})"
    origin = _origin(obj)
    if origin is None or not _under(origin, packages):
        return f"resolves to {_shown(obj)}, which is defined outside {', '.join(packages)}"
    if trusted:
        return None
    if not inspect.isclass(obj):
        return "is not a component class (a model, net, dataset, corruption, optimizer or scheduler)"
    words, bases = slot_kind(key)
    if not issubclass(obj, bases):
        where = f"{key} takes" if key else "this place takes"
        return f"is {_kind_of(obj)} ({_shown(obj)}), not {words}, which is what {where}"
    return None


def check_config_targets(
    cfg: Any,
    parts: Iterable[str] = BUILT_PARTS,
    search_packages: Iterable[str] = (),
    trusted: Iterable[str] = (),
    where: str = "the run folder's config",
) -> None:
    """Refuse (:class:`TrustError`, one line naming the key, the target and ``where``) the first ``_target_``
    under ``cfg``'s ``parts`` that :func:`target_problem` refuses."""
    import sys

    search_packages, trusted = list(search_packages), list(trusted)
    for part in parts:
        node = cfg.get(part) if hasattr(cfg, "get") else None
        for key, target in config_targets(node, part):
            problem = target_problem(target, search_packages, trusted, key)
            if not problem:
                continue
            top = str(target).split(".")[0]
            if problem.startswith("cannot be found"):  # an allowed package that is not importable here
                raise TrustError(
                    f"{key}._target_={target} in {where} {problem}: is {top} installed where you load the run "
                    "(importable, e.g. on PYTHONPATH)?"
                )
            if " which is what " in problem:  # an allowed class in the wrong place: built there, it does what it does
                raise TrustError(
                    f"{key}._target_={target} in {where} was refused: it {problem}; aelab builds nothing else there "
                    "from a run folder's config (a class of another kind could write files or connect out): check "
                    "who edited this config"
                )
            if top in ("aelab", "torch", "lightning") or top in sys.stdlib_module_names:
                way_out = "no aelab run needs it: check who edited this run folder's config"
            else:
                way_out = f"if you trust the package {top}, pass trust_packages=[{top}] (or set {TRUST_ENV}={top})"
            raise TrustError(
                f"{key}._target_={target} in {where} was refused: it {problem}, and instantiating it could run any "
                f"code; {way_out}"
            )
