"""Every command the README and the docs show is one aelab accepts.

Each ``aelab-train`` line of a shell block is composed with its overrides (a swept key at its first
value) and put through the same config check as the command line's (signatures, ranges, cross-field
rules, evaluations' needs) — no torch, no training. ``aelab-eval``, ``-predict``, ``-export`` lines are
composed from their own configs and checked against their typed options; ``aelab-compare`` lines are
parsed by its argument parser. Placeholders (``<run>``) stand for any path. The docs site itself is
built by ``mkdocs build --strict`` in CI (``make docs``).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOOLS = ("aelab-train", "aelab-eval", "aelab-predict", "aelab-export", "aelab-compare")
CONFIGS = {"aelab-eval": "evaluate", "aelab-predict": "predict", "aelab-export": "export"}


def shell_commands(page: Path) -> list[tuple[str, int, str]]:
    """``(tool, line number, the command's arguments)`` of every aelab command in the page's shell blocks."""
    found, block, start, pending = [], None, 0, ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip()
            continue
        if block not in ("bash", "sh", "shell", "console"):
            continue
        text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if pending:
            text, start = pending + " " + text.strip(), start
        else:
            start = number
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        words = text.strip().removeprefix("$ ").split()
        while words and ("=" in words[0] and not words[0].startswith("-")):  # VAR=value before the command
            words = words[1:]
        if words and words[0].split("/")[-1] in TOOLS:
            found.append((words[0].split("/")[-1], start, " ".join(words[1:])))
    return found


COMMANDS = [(page.name, tool, line, args) for page in PAGES for tool, line, args in shell_commands(page)]


def _arguments(args: str) -> list[str]:
    """The words of a command, each placeholder ``<...>`` a name; a placeholder path exists (as a folder)."""
    placeholder = re.compile(r"<[^>]+>")
    words = []
    for word in shlex.split(args):
        if placeholder.search(word):
            word = placeholder.sub("x", word)
            path = word.split("=", 1)[-1]
            if "/" in path and not Path(path).suffix:
                Path(path).mkdir(parents=True, exist_ok=True)
        words.append(word)
    return words


def _first_values(overrides: list[str]) -> list[str]:
    from aelab.cli.common import _first_values

    return _first_values([o for o in overrides if o not in ("-m", "--multirun")])


@pytest.fixture(scope="module", autouse=True)
def extension_on_path():
    """The docs' extension examples name the test package ``mylab`` (tests/extension)."""
    sys.path.insert(0, str(REPO / "tests" / "extension"))
    yield
    sys.path.remove(str(REPO / "tests" / "extension"))


def test_the_pages_show_commands():
    assert len(COMMANDS) > 40, "the docs should show the commands a researcher types"
    assert {tool for _, tool, _, _ in COMMANDS} == set(TOOLS)


@pytest.mark.parametrize("page, tool, line, args", COMMANDS, ids=[f"{p}:{n}" for p, _, n, _ in COMMANDS])
def test_every_documented_command_is_accepted(page, tool, line, args, tmp_path, monkeypatch):
    from aelab.config.checks import entry_problems
    from aelab.run.compose import compose
    from aelab.run.precheck import config_problems

    monkeypatch.chdir(tmp_path)  # relative paths of the examples resolve to nothing in particular
    words = _arguments(args)
    if tool == "aelab-compare":
        import argparse

        from aelab.cli import compare

        parser_error = []
        monkeypatch.setattr(argparse.ArgumentParser, "error", lambda self, message: parser_error.append(message))
        monkeypatch.setattr(compare, "compare", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
        with pytest.raises(SystemExit):
            compare.main(words)
        assert not parser_error, f"{page}:{line}: aelab-compare {args}: {parser_error}"
        return
    overrides = [w for w in _first_values(words) if not w.startswith(("hydra/launcher=", "hydra.launcher."))]
    if page == "extending.md" and tool != "aelab-train" and not any(w.startswith("hydra.searchpath=") for w in words):
        overrides.append("hydra.searchpath=[pkg://newlab.conf]")  # what the page's run recorded (metrics.json)
    cfg = compose(CONFIGS.get(tool, "config"), overrides)
    problems = config_problems(cfg, overrides) if tool == "aelab-train" else entry_problems(tool, cfg, overrides)
    assert not problems, f"{page}:{line}: {tool} {args}: {problems}"


def test_the_extending_page_shows_the_extension_package_file_for_file():
    """Each code block of docs/extending.md headed ``# newlab/<file>`` is that file of tests/extension/newlab, whole."""
    page = (REPO / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```(?:python|yaml)\n# newlab/(\S+)\n(.*?)\n```", page, flags=re.S)
    package = REPO / "tests" / "extension" / "newlab"
    shown = {name for name, _ in blocks}
    assert shown == {"topk.py", "conf/model/topk.yaml", "digits.py", "conf/data/digits.yaml", "dead_units.py",
                     "conf/eval/dead_units.yaml"}  # fmt: skip
    for name, text in blocks:
        assert text == (package / name).read_text().rstrip("\n"), f"docs/extending.md's {name} differs from {package}"


def test_the_architecture_page_maps_every_module_with_its_one_job():
    """docs/architecture.md's module map is the code's: every module, the first line of its docstring."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import module_map
    finally:
        sys.path.remove(str(REPO / "scripts"))
    page = module_map.PAGE.read_text()
    assert module_map.page_with_table(page) == page, "run: python scripts/module_map.py --write"
    assert "|  |" not in module_map.table(), "a module without a docstring"
