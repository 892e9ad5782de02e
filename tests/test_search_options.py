"""An Optuna search's own options, sampler, search space and storage are checked before its sweep folder exists
(issue 34, review item 10): one line naming the key, not a Hydra traceback after the folder was made."""

from __future__ import annotations

import pytest
from conftest import TINY


def problems(*overrides: str) -> list[str]:
    """:func:`aelab.run.search.search_problems` of ``hparams_search=bottleneck_optuna`` with ``overrides``: the
    swept ones (``choice``, ``interval``) as the search reads them, the config composed with the others."""
    from aelab.run.compose import compose
    from aelab.run.search import search_problems

    given = ["hparams_search=bottleneck_optuna", *TINY, *overrides]
    plain = [o for o in given if "(" not in o]  # a search's swept values are the sweeper's, not the config's
    cfg = compose("config", plain, hydra=True)
    return search_problems(cfg, given)


@pytest.mark.slow  # a whole aelab-train process or a search's checks: 7-11 s (make test stays < 5 min)
def test_the_search_as_shipped_has_no_problems():
    assert problems() == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("hydra.sweeper.heartbeat_interval=0", "hydra.sweeper.heartbeat_interval=0: a whole number of seconds, >= 1"),
        ("hydra.sweeper.heartbeat_interval=abc", "hydra.sweeper.heartbeat_interval=abc: a whole number of seconds"),
        ("hydra.sweeper.grace_period=5", "hydra.sweeper.grace_period=5: whole seconds, more than heartbeat_interval"),
        ("hydra.sweeper.n_trials=-3", "hydra.sweeper.n_trials=-3: a whole number of trials, >= 1"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0: a whole number of trials at once, >= 1"),
        ("hydra.sweeper.max_retry=-1", "hydra.sweeper.max_retry=-1: a whole number of times, >= 0"),
        ("hydra.sweeper.max_failure_rate=2", "hydra.sweeper.max_failure_rate=2: a fraction between 0 and 1"),
        ("hydra.sweeper.direction=upward", "hydra.sweeper.direction=upward: minimize or maximize"),
        # the grid sampler needs every value: the shipped search's learning rate is an interval
        ("hydra/sweeper/sampler=grid", "hydra.sweeper.params.model.optimizer.lr: the grid sampler takes choice(...)"),
        ("model.bottlenek=choice(2,4)", "model.bottlenek (searched by hydra.sweeper.params or the command line) is "),
        ("model.bottleneck=choice(0,4)", "model.bottleneck is the size of the code and must be a positive integer"),
    ],
)
def test_a_search_option_error_is_one_line_naming_the_key(override, expected):
    (problem,) = problems(override)
    assert problem.startswith(expected), problem
    assert "\n" not in problem
    if "bottlenek" in override:
        assert problem.endswith("did you mean model.bottleneck?")


def test_an_unreachable_search_database_is_named_before_any_folder():
    (problem,) = problems("hydra.sweeper.storage=sqlite:////nonexistent-folder/x/study.db")
    assert problem.startswith("hydra.sweeper.storage=sqlite:////nonexistent-folder/x/study.db cannot be opened: ")


@pytest.mark.slow  # a whole aelab-train process or a search's checks: 7-11 s (make test stays < 5 min)
def test_a_search_option_error_leaves_no_sweep_folder(cli, tmp_path):
    result = cli("-m", "hparams_search=bottleneck_optuna", *TINY, "sweep.name=s", "hydra.sweeper.heartbeat_interval=0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hydra.sweeper.heartbeat_interval=0: a whole number of seconds, >= 1" in result.stderr
    assert not (tmp_path / "outputs" / "sweeps").exists()  # nothing made: no sweep folder, no journal
