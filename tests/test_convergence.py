"""Whether runs were still improving at their end: the rule, where it is shown, the findings, early stopping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from aelab.analysis import style
from aelab.convergence import IMPROVING, PLATEAU, TOO_SHORT, WORSENING, assess

INFO = {
    "test/recon_loss": {"label": "test reconstruction MSE", "higher_is_better": False, "column": True},
    "val/recon_loss": {"label": "val reconstruction MSE", "higher_is_better": False},
}


# ------------------------------------------------------------------------------------------------ the rule
def test_the_rule_tells_a_falling_curve_from_a_noisy_plateau():
    falling = assess([0.1 * 0.95**e for e in range(8)], "val/recon_loss")  # −5 % per epoch
    assert falling["verdict"] == IMPROVING and falling["still_improving"]
    assert falling["rate_pct_per_epoch"] == pytest.approx(5.0, abs=0.5)
    flat = assess([0.05, 0.0505, 0.0496, 0.0504, 0.0497, 0.0503, 0.0498, 0.0502], "val/recon_loss")  # noise, no trend
    assert flat["verdict"] == PLATEAU and not flat["still_improving"]
    assert flat["noise_pct"] > 0 and flat["rule"]["window"] == 10 and flat["window"] == 8  # all 8 when fewer than 10
    rising = assess([0.05, 0.051, 0.053, 0.055, 0.058], "val/recon_loss")
    assert rising["verdict"] == WORSENING and not rising["still_improving"]
    psnr = assess([20, 21, 22, 23], "val/psnr", higher_is_better=True)  # the direction follows the metric
    assert psnr["verdict"] == IMPROVING and psnr["rate_pct_per_epoch"] > 0
    for short in ([0.1], [0.1, 0.1]):  # one or two validations cannot show a plateau
        verdict = assess(short, "val/recon_loss")
        assert verdict["verdict"] == TOO_SHORT and verdict["still_improving"]


def test_a_spike_that_the_curve_recovers_from_is_not_read_as_improvement():
    """The README study's bottleneck-64 run (seed 1), stopped by early stopping after 5 epochs without a new best:
    a 5-epoch line started on the spike and read +0.6 % per epoch (2.4 standard errors)."""
    tail = [0.01581, 0.01583, 0.01573, 0.01585, 0.01576, 0.01563, 0.01561, 0.01593, 0.01605, 0.01568, 0.01566, 0.01565]
    assert assess(tail, "val/recon_loss")["verdict"] == PLATEAU


def test_a_record_without_the_field_is_assessed_from_its_csv_log():
    from aelab.store.record import RunRecord

    record = RunRecord.read(Path(__file__).parent / "fixtures" / "run_0.1")  # aelab 0.1: one epoch, no field
    assert "convergence" not in record.data
    verdict = record.convergence()
    assert verdict["metric"] == "val/recon_loss" and verdict["validations"] == 1 and verdict["still_improving"]


# ------------------------------------------------------------------------------------------------ hand-made sweeps
def write_sweep(root: Path, curve, bottlenecks=(2, 4, 8), seeds=(0, 1), test=None) -> Path:
    """A bottleneck × seed sweep whose runs' validation curves are ``curve(b, seed)`` (one value per epoch)."""
    sweep = root / "sweep"
    overrides = [f"model.bottleneck={','.join(map(str, bottlenecks))}", f"seed={','.join(map(str, seeds))}"]
    sweep.mkdir(parents=True)
    (sweep / "aelab_sweep.yaml").write_text(yaml.safe_dump({"overrides": overrides}))
    for b in bottlenecks:
        for seed in seeds:
            run = sweep / f"model.bottleneck={b},seed={seed}"
            (run / ".hydra").mkdir(parents=True)
            config = {"model": {"bottleneck": b, "monitor": "val/recon_loss", "monitor_mode": "min"}, "seed": seed}
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.bottleneck={b}", f"seed={seed}"]))
            values = curve(b, seed)
            final = {"test/recon_loss": test(b, seed) if test else values[-1]}
            record = {"status": "completed", "final": final, "metric_info": INFO, "seed": seed}
            (run / "metrics.json").write_text(json.dumps(record))
            (run / "csv").mkdir()
            lines = ["epoch,step,val/recon_loss"] + [f"{e},{10 * e + 9},{v}" for e, v in enumerate(values)]
            (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return sweep


def one_epoch(b, seed):
    return [0.1 / b + 0.001 * seed]


def flat(b, seed):  # converged: ten epochs at the same level, a little noise
    return [0.1 / b + 0.001 * seed + 1e-6 * ((e * 7 + seed) % 3) for e in range(10)]


def _compare(sweep: Path, capture: dict):
    from aelab.analysis.compare import compare

    original = style.save

    def keep(fig, path):  # the figures' text, read from matplotlib's objects
        texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
        capture[Path(path).name] = " ".join(" ".join(texts).split())  # wrapped lines joined
        return original(fig, path)

    style.save = keep
    try:
        return compare([sweep], grid_images=0)
    finally:
        style.save = original


def test_a_sweep_stopped_after_one_epoch_is_flagged_everywhere_and_a_converged_one_nowhere(tmp_path):
    figures: dict[str, str] = {}
    result = _compare(write_sweep(tmp_path / "short", one_epoch), figures)
    md = result.files["comparison.md"].read_text()
    assert md.count("still improving: 2 of 2") == 3  # every setting's "at the end" cell
    assert "Not settled: 6 of 6 runs were still improving" in md
    html = result.files["report.html"].read_text()
    assert "still improving: 2 of 2" in html and "Not settled: 6 of 6" in html
    for name in ("overview.png", "test_recon_loss.png", "curves.png"):
        assert "NOT SETTLED: 6 of 6 runs still improving at their end" in figures[name], name
    csv = pd.read_csv(result.files["comparison.csv"])
    assert list(csv["still improving"]) == [2, 2, 2]
    runs = pd.read_csv(result.files["runs.csv"])
    assert set(runs["at_end"]) == {TOO_SHORT}

    figures.clear()
    result = _compare(write_sweep(tmp_path / "long", flat), figures)
    md = result.files["comparison.md"].read_text()
    assert "still improving:" not in md and "Not settled" not in md and md.count("| settled |") == 3
    assert "Not settled" not in result.files["report.html"].read_text()
    assert figures and not any("NOT SETTLED" in text for text in figures.values())


def test_a_setting_with_an_improving_run_gets_an_open_ring_in_its_panel(tmp_path):
    import matplotlib.pyplot as plt

    from aelab.analysis.plots import Panel, draw_metric
    from aelab.analysis.table import build_table

    def mixed(b, seed):
        return one_epoch(b, seed) if b == 8 else flat(b, seed)

    table = build_table([write_sweep(tmp_path, mixed)])
    fig, ax = plt.subplots()
    draw_metric(ax, table, Panel("test/recon_loss"))
    rings = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_markerfacecolor() == "none"]
    assert len(rings) == 1 and list(rings[0].get_xdata()) == [8.0]
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ findings
def _table(values: dict[int, list[float]], improving: bool = False):
    from aelab.analysis.table import table_from_records

    records = []
    for b, seeds in values.items():
        for seed, v in enumerate(seeds):
            records.append(
                {
                    "run": f"b{b}s{seed}",
                    "status": "completed",
                    "test/recon_loss": v,
                    "still_improving": improving,
                    "improvement_pct_per_epoch": 3.0 if improving else 0.1,
                    "_config": {"model.bottleneck": b, "seed": seed},
                    "_choices": {},
                    "_overrides": ["model.bottleneck", "seed"],
                    "_info": INFO,
                }
            )
    return table_from_records(records)


def test_findings_state_a_plateau_only_when_the_seeds_show_it():
    from aelab.analysis.findings import findings

    tight = {2: [0.100, 0.1001, 0.0999], 4: [0.050, 0.0501, 0.0499], 8: [0.030, 0.03001, 0.02999],
             16: [0.030, 0.03002, 0.02998], 32: [0.03001, 0.03, 0.02999]}  # fmt: skip
    said = findings(_table(tight))
    assert any("stops improving at bottleneck size 8" in s for s in said), said
    assert not any("Not settled" in s for s in said)

    overlapping = {2: [0.10, 0.06, 0.14], 4: [0.05, 0.09, 0.02], 8: [0.03, 0.06, 0.01], 16: [0.03, 0.05, 0.02]}
    said = findings(_table(overlapping))
    assert not any("stops improving" in s for s in said) and any("No plateau shown" in s for s in said), said

    two_seeds = findings(_table({2: [0.1, 0.1001], 4: [0.05, 0.0501], 8: [0.03, 0.03001]}))
    assert any("1 degree of freedom (t = 12.7)" in s for s in two_seeds), two_seeds

    said = findings(_table(tight, improving=True))
    assert said[0].startswith("Not settled: 15 of 15 runs were still improving at their end, largest 3.0 % per epoch")


def test_findings_say_an_improvement_at_every_step_is_no_plateau():
    from aelab.analysis.findings import findings

    said = findings(_table({2: [0.1, 0.101, 0.099], 4: [0.05, 0.051, 0.049], 8: [0.03, 0.031, 0.029]}))
    assert any("improves at every step up to bottleneck size 8" in s for s in said), said


# ------------------------------------------------------------------------------------------------ the run's own words
@pytest.mark.slow  # two tiny epochs, test and grids: ~20-30 s on two shared cores
def test_early_stopping_by_one_override_stops_a_tiny_run_and_records_it(run_train, make_cfg):
    from aelab.run.summary import run_summary
    from aelab.store.record import RunRecord

    overrides = ("model=mlp", "trainer.max_epochs=6", "callbacks/early_stopping=plateau", "name=es")
    # min_delta larger than any change: no improvement after the first validation, patience 1 → stops after epoch 2
    record, run_dir = run_train(
        *overrides, "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1"
    )
    assert record["status"] == "completed" and record["epochs"] == 2
    assert record["stopped_early"]["epoch"] == 2 and "did not improve" in record["stopped_early"]["reason"]
    verdict = record["convergence"]
    assert verdict["metric"] == "val/recon_loss" and verdict["validations"] == 2 and verdict["still_improving"]
    _, plain = run_summary(RunRecord.read(run_dir))
    assert "stopped early at epoch 2" in plain
    assert re.search(r"counted as still improving: too few epochs .* \(val/recon_loss\)", plain)

    from aelab.run.precheck import folder_verdict

    skip, changes = folder_verdict(
        make_cfg(*overrides, "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1"), run_dir
    )
    assert skip is not None and not changes  # completed: the same command skips it (as aelab-train's pre-run step)


def test_the_sweep_table_says_which_jobs_were_still_improving(tmp_path):
    from aelab.run.summary import render_plain, sweep_summary

    def mixed(b, seed):
        return one_epoch(b, seed) if b == 8 else flat(b, seed)

    sweep = write_sweep(tmp_path, mixed)
    jobs = [{"job": p.name, "status": "completed"} for p in sorted(sweep.glob("model.*"))]
    renderable, plain = sweep_summary(sweep, jobs, "val/recon_loss")
    assert "2 of 6 jobs were still improving at their end" in plain
    assert plain.count("still improving?") == 2 and plain.count("(plateau (") == 4
    assert "still improving" in render_plain(renderable)
