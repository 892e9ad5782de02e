"""What every Hydra entry point of aelab shares: one way to start, and aelab's words for a bad override.

Hydra refuses an override of a key that does not exist (``model.bottelneck=8``) with "Could not
override 'model.bottelneck'. To append to your config use +model.bottelneck=8" — advice that
invites the user to add the typo. :func:`run_app` starts the app as ``@hydra.main`` does and, when
Hydra refuses an override that way, composes the config again with the unknown keys added (as
``+key``) and lets aelab's config check say what is wrong: "model.bottelneck is not an option of
model; did you mean model.bottleneck?", with the accepted keys — the same message, fast and
before any folder exists, whether or not the key carries ``+``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

#: Hydra's words for an override of a key the config does not have
_UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'")
_MAX_UNKNOWN = 8


def explain_bad_override(
    exc: BaseException,
    config_name: str,
    check: Callable[[DictConfig, list[str]], list[str]],
    argv: list[str] | None = None,
) -> str | None:
    """aelab's message for Hydra's refusal of an unknown key, or None for any other composition error (``argv``: the
    command line's arguments, ``sys.argv[1:]`` by default; the Python API passes its overrides)."""
    from hydra._internal.utils import get_args_parser

    from aelab.run.compose import compose

    found = _UNKNOWN_KEY.search(str(exc))
    if not found:
        return None
    args = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))[0]
    overrides = _added([o for o in args.overrides if o not in ("-m", "--multirun")], found.group(1))
    search_path = [f"file://{__import__('os').path.abspath(args.config_dir)}"] if args.config_dir else []
    for _ in range(_MAX_UNKNOWN):  # add each unknown key in turn until the config composes
        try:
            cfg = compose(args.config_name or config_name, _first_values(overrides), search_path)
        except Exception as again:  # noqa: BLE001 — Hydra's refusal names the next unknown key
            found = _UNKNOWN_KEY.search(str(again))
            if not found:
                return None
            overrides = _added(overrides, found.group(1))
            continue
        problems = check(cfg, overrides)
        if not problems:  # each added key is an argument its component takes that its config file does not list
            added = [o for o in overrides if o.startswith("+") and o[1:] in (args.overrides or [])]
            if not added:
                return None
            keys = ", ".join(o[1:].split("=", 1)[0] for o in added)
            return (
                f"{keys} {'is an option' if len(added) == 1 else 'are options'} its component takes that the config "
                f"does not list: give {' '.join(added)} (Hydra adds a key only with +)"
            )
        lines = "\n".join(f"  - {p}" for p in problems)
        return (
            problems[0]
            if len(problems) == 1
            else f"the overrides have {len(problems)} problems; nothing was run:\n{lines}"
        )
    return None


def _added(overrides: list[str], key: str) -> list[str]:
    """``overrides`` with the override of ``key`` marked as an addition (``+key=value``)."""
    return [f"+{o}" if o.split("=", 1)[0] == key else o for o in overrides]


def _first_values(overrides: list[str]) -> list[str]:
    """Swept overrides (``a=1,2``) reduced to their first value, so that one config can be composed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for override in overrides:
        try:
            parsed = parser.parse_override(override)
        except Exception:  # noqa: BLE001 — not an override Hydra can read: composed as it is, Hydra says why
            out.append(override)
            continue
        if parsed.is_sweep_override() and not parsed.is_interval_sweep():
            prefix = "+" if parsed.is_add() else ""
            out.append(f"{prefix}{parsed.key_or_group}={next(iter(parsed.sweep_string_iterator()))}")
        elif not parsed.is_interval_sweep():
            out.append(override)
    return out


def run_app(
    hydra_main: Callable[[], Any], tool: str, config_name: str, check: Callable[[DictConfig, list[str]], list[str]]
) -> Any:
    """Start ``hydra_main`` (an ``@hydra.main`` function); an unknown-key override ends with aelab's one message.

    Hydra reports composition errors from inside its own ``run_and_report``; this wraps that one function
    (Hydra has no hook for it) for the duration of the call.
    """
    import hydra._internal.utils as hydra_utils
    from hydra.errors import ConfigCompositionException

    sys.argv[1:] = quote_paths(sys.argv[1:])
    original = hydra_utils.run_and_report

    def run_and_report(func):
        def explained():
            try:
                return func()
            except ConfigCompositionException as exc:
                message = explain_bad_override(exc, config_name, check)
                if message is None:
                    raise
                raise SystemExit(f"{tool}: error: {message}") from None

        return original(explained)

    hydra_utils.run_and_report = run_and_report
    try:
        with _groups_listed_from_one_repository(sys.argv[1:]):
            return hydra_main()
    finally:
        hydra_utils.run_and_report = original


@contextmanager
def _groups_listed_from_one_repository(argv: list[str]) -> Iterator[None]:
    """While ``--help`` or ``--hydra-help`` prints, Hydra's listing of config groups reads one copy of the config
    repository instead of a fresh deep copy per group and option (about 130 copies for aelab-train's config, 0.4 s of
    its 0.8 s help): the same groups and options, listed from the same search path.

    Hydra's ``ConfigLoaderImpl.get_group_options`` copies the whole repository (the config store included) before
    every answer so that adding a search path for one call cannot change the next; without a config name and
    overrides — how the help asks — no search path is added, so one copy answers every call alike.
    """
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_known_args(argv)[0]
    except SystemExit:  # an argument Hydra cannot parse: Hydra says so itself
        args = None
    if args is None or not (args.help or args.hydra_help):
        yield
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    original = ConfigLoaderImpl.get_group_options
    repositories: dict[int, tuple[Any, Any]] = {}  # id(loader) -> (loader, its one repository)

    def get_group_options(self, group_name, results_filter=ObjectType.CONFIG, config_name=None, overrides=None):
        if config_name is not None or overrides:
            return original(self, group_name, results_filter, config_name, overrides)
        if id(self) not in repositories:
            repositories[id(self)] = (self, self._parse_overrides_and_create_caching_repo(None, [])[1])
        return repositories[id(self)][1].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options
    try:
        yield
    finally:
        ConfigLoaderImpl.get_group_options = original


#: characters of a path that Hydra's override grammar does not take unquoted (a sweep job's folder is ``model.k=4``)
_UNQUOTABLE = re.compile(r"[=\s()\[\]{}'\"]")


def quote_paths(argv: list[str]) -> list[str]:
    """``argv`` with each path value that Hydra would misread quoted: ``run=outputs/sweeps/s/model.k=4`` works as typed.

    A value counts as a path when it names an existing file or folder (commas and spaces included:
    ``run=outputs/sweeps/s/model.bottleneck=8,seed=0``), or starts like one (``/``, ``./``, ``../``, ``~``) and holds
    no comma; values that are already quoted, lists, dicts, interpolations and comma-separated sweeps are left alone.
    """
    from aelab.run.compose import quote_override

    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        needs = _UNQUOTABLE.search(value) or "," in value
        if sep and needs and not arg.startswith("-") and value[:1] not in "'\"[{$":
            exists = Path(value).expanduser().exists()  # a folder named model.k=8,seed=0 is a path, not a sweep
            if exists or ("," not in value and value.startswith(("/", "./", "../", "~"))):
                arg = f"{key}={quote_override(value)}"
        out.append(arg)
    return out


def with_run_context(argv: list[str]) -> list[str]:
    """``argv`` of an entry point that reads a run (``run=<run or sweep folder>``), with the run's recorded search path
    added (unless ``hydra.searchpath`` is given) and its own packages made importable — so
    ``aelab-eval run=... eval=[x]`` finds an extension's task ``x`` as the training did (from its recorded folder when
    the user names the package: :func:`aelab.run.extensions.make_importable`)."""
    from aelab.config.trust import trusted_packages
    from aelab.run.compose import searchpath_override
    from aelab.run.extensions import run_context
    from aelab.store.runs import find_run_dirs

    run = next((a.split("=", 1)[1].strip("'") for a in argv if a.startswith("run=")), None)
    if not run or not Path(run).expanduser().is_dir():
        return argv
    named = next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("trust_packages=")), "")
    trusted = trusted_packages(p.strip(" '\"") for p in named.strip("[]").split(","))
    paths: list[str] = []
    own = any(a.lstrip("+").startswith("hydra.searchpath=") for a in argv)  # the user's, not the record's
    for run_dir in find_run_dirs(Path(run).expanduser()):
        paths += [p for p in run_context(run_dir, trusted, search_path=not own) if p not in paths]
    if not paths or own:
        return argv
    return [*argv, *searchpath_override(paths)]


def entry_main(hydra_main: Callable[[], Any], tool: str, config_name: str) -> Any:
    """The console entry of ``aelab-eval``, ``-predict``, ``-export``: the run's context, then the app
    (:func:`run_app`). Their torch threads do not follow the machine, so OpenMP's spin is bounded before torch loads
    (:func:`aelab.run.threads.bound_spin`)."""
    from aelab.config.checks import entry_problems
    from aelab.errors import AelabError
    from aelab.run.threads import bound_spin

    bound_spin()

    try:
        sys.argv[1:] = with_run_context(sys.argv[1:])
    except AelabError as exc:
        raise SystemExit(f"{tool}: error: {exc}") from None
    return run_app(hydra_main, tool, config_name, lambda cfg, overrides: entry_problems(tool, cfg, overrides))


def refuse_bad_options(tool: str, cfg: DictConfig) -> None:
    """Exit with every problem of an entry point's own options (types, choices, ranges), before it loads anything."""
    from aelab.config.checks import entry_problems

    problems = entry_problems(tool, cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SystemExit(f"{tool}: error: {problems[0] if len(problems) == 1 else lines}")
