"""``seed`` varies initialisation, data order and corruption; ``data.split_seed`` fixes which images are held out.

The seeds of a study share one train/validation split (so the overfitting gap of seed 0 and seed 1 measures the
same images), and a run folder written before ``data.split_seed`` existed keeps the split it trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

FIXTURE = Path(__file__).parent / "fixtures" / "run_0.1"


def _split_ids(cfg) -> dict[str, list[int]]:
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    return {name: dm.splits[name].ids.tolist() for name in ("train", "val")}


def test_two_seeds_share_one_split_unless_split_seed_differs(make_cfg):
    seed0, seed1 = _split_ids(make_cfg("seed=0")), _split_ids(make_cfg("seed=1"))
    assert seed0 == seed1  # the same held-out images for every seed of a study
    other = _split_ids(make_cfg("seed=0", "data.split_seed=1"))
    assert other["val"] != seed0["val"]
    assert sorted(other["val"] + other["train"]) == sorted(seed0["val"] + seed0["train"])
    follows = _split_ids(make_cfg("seed=1", "data.split_seed=${seed}"))  # the old behaviour, on request
    assert follows == other


def test_seed_still_varies_the_batch_order(make_cfg):
    from hydra.utils import instantiate

    def first_batch(seed: int) -> list[int]:
        dm = instantiate(make_cfg(f"seed={seed}").data, _convert_="all")
        dm.setup()
        return next(iter(dm.train_dataloader()))["id"].tolist()

    assert first_batch(0) != first_batch(1)


def test_the_recorded_config_and_the_record_name_the_split(run_train):
    record, run_dir = run_train("seed=3")
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.split_seed == 0
    assert record["dataset_info"]["split_seed"] == 0


@pytest.fixture
def old_run_seed1(tmp_path) -> Path:
    """The aelab 0.1 fixture as if trained with seed=1: its config has no data.split_seed, so its split was seed 1's."""
    run_dir = tmp_path / "outputs" / "runs" / "old01"
    shutil.copytree(FIXTURE, run_dir)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0\n", "seed: 1\n", 1))
    assert "split_seed" not in config.read_text()
    return run_dir


def test_an_old_run_reloads_with_the_split_it_trained_on(old_run_seed1):
    import aelab

    run = aelab.load_run(old_run_seed1)
    assert run.datamodule().split_seed == 1


def test_an_old_run_folder_is_continued_with_its_own_split_not_refused_for_the_new_key(old_run_seed1):
    from aelab.run.precheck import adopt_recorded_split, folder_verdict
    from tests.conftest import compose_config

    trained_with = [
        "model=linear", "model.bottleneck=4", "data=sprites", "data.num_train=600", "data.num_test=200",
        "data.val_size=100", "trainer.max_epochs=1", "seed=1",
    ]  # fmt: skip
    cfg = compose_config(old_run_seed1, trained_with)
    assert cfg.data.split_seed == 0  # today's default ...
    adopted = adopt_recorded_split(cfg, old_run_seed1 / ".hydra" / "config.yaml", trained_with)
    assert adopted == {"data.split_seed": "${seed}"} and cfg.data.split_seed == 1  # ... gives way to the run's own
    skip, changes = folder_verdict(cfg, old_run_seed1)
    assert skip is not None and changes == []  # completed with this config: skipped, not refused
    # asked for explicitly, another split is a change the run folder refuses
    explicit = [*trained_with, "data.split_seed=0"]
    cfg = compose_config(old_run_seed1, explicit)
    assert adopt_recorded_split(cfg, old_run_seed1 / ".hydra" / "config.yaml", explicit) == {}
    from aelab.run.precheck import Refused

    with pytest.raises(Refused, match="data.split_seed"):
        folder_verdict(cfg, old_run_seed1)


def test_the_fingerprint_of_an_old_config_counts_its_split_as_the_seed():
    from aelab.store.fingerprint import config_changes

    old = {"seed": 1, "data": {"seed": "${seed}", "val_size": 100}}
    assert config_changes(old, {"seed": 1, "data": {"seed": "${seed}", "split_seed": "${seed}", "val_size": 100}}) == []
    assert config_changes(old, {"seed": 1, "data": {"seed": "${seed}", "split_seed": 0, "val_size": 100}}) == [
        ("data.split_seed", "${seed}", 0)
    ]
    assert json.dumps(old)  # (plain containers, as read from .hydra/config.yaml)


def _records(splits: list) -> list[dict]:
    out = []
    for i, split in enumerate(splits):
        config = {"seed": i % 2, "model.bottleneck": 2 + 2 * (i // 2)}
        if split != "old":
            config["data.split_seed"] = split
        out.append(
            {
                "run": f"r{i}", "status": "completed", "_config": config, "_choices": {},
                "_overrides": ["seed", "model.bottleneck"], "_info": None, "test/recon_loss": 0.1 + 0.01 * i,
                "split_seed": run_split_of(config),
            }
        )  # fmt: skip
    return out


def run_split_of(config: dict):
    from aelab.analysis.table import run_split

    return run_split(config, {"dataset_info": {"split_seed": config.get("data.split_seed")}})


def test_the_comparison_says_what_the_spread_over_seeds_covers():
    from aelab.analysis.table import split_text, table_from_records

    shared = split_text(table_from_records(_records([0, 0, 0, 0])))
    assert "share one train/validation split (data.split_seed=0)" in shared
    assert "own train/validation split" in split_text(table_from_records(_records(["old", "old", "old", "old"])))
    assert "own train/validation split" in split_text(table_from_records(_records(["${seed}"] * 4)))
    assert "differ" in split_text(table_from_records(_records([0, 1, 0, 1])))


def test_every_later_sitting_of_an_old_run_keeps_its_split(old_run_seed1):
    """A continued old run records ``split_seed: ${seed}`` (what it adopted): the next sitting adopts it again instead
    of refusing it as changed to today's default."""
    from aelab.run.precheck import adopt_recorded_split, folder_verdict
    from tests.conftest import compose_config

    config = old_run_seed1 / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("  seed: ${seed}\n", "  seed: ${seed}\n  split_seed: ${seed}\n", 1))
    assert "split_seed: ${seed}" in config.read_text()
    args = ["model=linear", "model.bottleneck=4", "data=sprites", "data.num_train=600", "data.num_test=200",
            "data.val_size=100", "trainer.max_epochs=1", "seed=1"]  # fmt: skip
    cfg = compose_config(old_run_seed1, args)
    assert adopt_recorded_split(cfg, config, args) == {"data.split_seed": "${seed}"} and cfg.data.split_seed == 1
    skip, changes = folder_verdict(cfg, old_run_seed1)
    assert skip is not None and changes == []


def test_an_old_run_continued_with_another_seed_keeps_its_split(old_run_seed1, tmp_path):
    """Review item 11: the adopted ${seed} resolved to the new seed, so the split changed silently with it."""
    from aelab.run.precheck import adopt_recorded_split, folder_verdict
    from tests.conftest import compose_config

    config = old_run_seed1 / ".hydra" / "config.yaml"
    again = [
        "model=linear", "model.bottleneck=4", "data=sprites", "data.num_train=600", "data.num_test=200",
        "data.val_size=100", "trainer.max_epochs=1", "seed=2", "on_config_change=continue",
    ]  # fmt: skip
    cfg = compose_config(old_run_seed1, again)
    assert adopt_recorded_split(cfg, config, again) == {"data.split_seed": 1}
    assert cfg.data.split_seed == 1  # the recorded run's split, not seed 2's
    _, changes = folder_verdict(cfg, old_run_seed1)
    assert [key for key, _, _ in changes] == ["seed"]  # the split is not a change: it is kept

    # a later sitting reads the fixed split back (the record names it), and keeps it too
    from omegaconf import OmegaConf

    from aelab.store.record import RunRecord

    written = OmegaConf.load(config)
    written.seed, written.data.split_seed = 2, 1
    OmegaConf.save(written, config)
    RunRecord.read(old_run_seed1).update(split_seed_adopted=1).save()
    cfg = compose_config(old_run_seed1, again)
    assert adopt_recorded_split(cfg, config, again) == {"data.split_seed": 1} and cfg.data.split_seed == 1
    _, changes = folder_verdict(cfg, old_run_seed1)
    assert changes == []
