"""Figures, tables and report.html in the house style: made from hand-written run folders (no training), fast.

A sweep folder is written the way ``aelab-train -m`` leaves one (``aelab_sweep.yaml``, ``multirun.yaml``,
one folder per job with ``.hydra/``, ``metrics.json`` and ``csv/metrics.csv``), with numbers chosen so the
assertions can tell a right figure from a wrong one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from aelab.analysis import style
from aelab.analysis.compare import compare

BOTTLENECKS = (2, 4, 16)
BETAS = (0.5, 16, 4)  # as text, 16 sorts before 4: the figures must not
SEEDS = (0, 1)
EPOCHS = 3
INFO = {
    "test/recon_loss": {"label": "test reconstruction MSE", "higher_is_better": False, "column": True},
    "gap/recon_loss": {"label": "overfitting gap (val − train recon loss)", "column": True},
    "gap/recon_loss_ci95": {"label": "± (95 % interval of the gap)"},
    "val/recon_loss": {"label": "val reconstruction MSE", "higher_is_better": False},
    "train_eval/recon_loss": {"label": "train recon loss (eval mode)"},
    "eval/pca_recon_loss": {"label": "PCA test MSE", "higher_is_better": False, "column": True,
                            "baseline_for": "test/recon_loss"},
}  # fmt: skip


def loss(b: int, beta: float, seed: int) -> float:
    return 0.08 / b**0.5 * (1 + 0.1 * beta) + 0.0004 * seed


def write_sweep(root: Path, failed: tuple = (2, 16, 1), missing: tuple = (16, 4, 1)) -> Path:
    """A bottleneck × β × seed sweep; one job failed, one never started (no folder)."""
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    overrides = ["model=vae", "model.bottleneck=2,4,16", "model.beta=0.5,16,4", "seed=0,1", "trainer.max_epochs=3"]
    (sweep / "aelab_sweep.yaml").write_text(yaml.safe_dump({"overrides": overrides}))
    multirun = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=joblib"], "task": overrides}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for b in BOTTLENECKS:
        for beta in BETAS:
            for seed in SEEDS:
                if (b, beta, seed) == missing:
                    continue
                run = sweep / f"model.beta={beta},model.bottleneck={b},seed={seed}"
                (run / ".hydra").mkdir(parents=True)
                config = {"model": {"bottleneck": b, "beta": beta}, "seed": seed, "trainer": {"max_epochs": EPOCHS}}
                (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
                (run / ".hydra" / "overrides.yaml").write_text(
                    yaml.safe_dump([f"model.bottleneck={b}", f"model.beta={beta}", f"seed={seed}"])
                )
                final = {
                    "test/recon_loss": loss(b, beta, seed),
                    "gap/recon_loss": 0.001 * b + 0.0001 * seed,
                    "gap/recon_loss_ci95": 0.0005,
                    "eval/pca_recon_loss": 0.09 / b**0.5,
                }
                record = {
                    "status": "failed" if (b, beta, seed) == failed else "completed",
                    "error": "the training loss became nan" if (b, beta, seed) == failed else None,
                    "final": final,
                    "metric_info": INFO,
                    "params": 1_000_000 + 1000 * b,
                    "wall_time_s": 10.0 + seed,
                    "seed": seed,
                }
                (run / "metrics.json").write_text(json.dumps(record))
                (run / "csv").mkdir()
                lines = ["epoch,step,val/recon_loss,train_eval/recon_loss,train/recon_loss_epoch"]
                for epoch in range(EPOCHS):  # Lightning's epochs: 0, 1, 2
                    val = loss(b, beta, seed) * (1 + 0.5 / (epoch + 1))
                    lines.append(f"{epoch},{10 * epoch + 9},{val},{val * 0.9},")
                (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return sweep


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    sweep = write_sweep(tmp_path_factory.mktemp("figures"))
    result = compare([sweep], grid_images=0, command="aelab-compare sweep")
    return sweep, result


# ------------------------------------------------------------------------------------------------ tables
@pytest.mark.parametrize(
    "means, stds, expected",
    [
        ([0.0232, 0.0301], [0.0004, 0.0006], ["0.0232 ± 0.0004", "0.0301 ± 0.0006"]),
        ([13.8234], [0.1938], ["13.82 ± 0.19"]),  # a spread starting with 1 keeps two figures
        ([0.0462, 0.0108], None, ["0.0462", "0.0108"]),  # single runs: three significant figures of the largest
        ([1.39, 87.62], None, ["1.4", "87.6"]),
        ([1_068_306, 1_071_384], [0.0, 0.0], ["1,068,306", "1,071,384"]),  # no "± 0", no decimals
        ([0.5], [0.00003], ["0.50000 ± 0.00003"]),
        ([0.91, 0.85], [0.0, 0.0], ["0.910 ± 0", "0.850 ± 0"]),  # seeds that agree say so
        ([-0.00001, 0.0021], [0.0003, 0.0003], ["0.0000 ± 0.0003", "0.0021 ± 0.0003"]),  # no "-0.0000"
    ],
)
def test_table_rounds_each_column_by_its_spread(means, stds, expected):
    from aelab.analysis.table import column_decimals, format_cell

    places = column_decimals(means, stds or [])
    cells = [format_cell(m, s, 2 if stds else 1, places) for m, s in zip(means, stds or [None] * len(means))]
    assert cells == expected


def test_the_table_shows_the_studys_metrics_with_n_and_the_csv_every_digit(compared):
    _, result = compared
    md = result.files["comparison.md"].read_text()
    header = md.splitlines()[0]
    assert "params" not in header and "wall_time_s" not in header  # bookkeeping only on request
    assert header.endswith("| n |")
    row = next(line for line in md.splitlines() if line.startswith("| 2 | 0.5 |"))
    value = loss(2, 0.5, 0) + 0.0002  # mean of seeds 0 and 1
    assert f"| {value:.4f} ± 0.0003 |" in row and row.endswith("| 2 |")  # spread 0.00028: four decimals
    failed_row = next(line for line in md.splitlines() if line.startswith("| 2 | 16 |"))
    assert failed_row.endswith("| 1 |")  # the failed seed is not averaged
    import pandas as pd

    csv = pd.read_csv(result.files["comparison.csv"])
    assert "params" in csv.columns  # the CSV keeps every column and every digit
    value = csv.loc[(csv["model.bottleneck"] == 4) & (csv["model.beta"] == 4), "test/recon_loss"].item()
    assert value == pytest.approx((loss(4, 4, 0) + loss(4, 4, 1)) / 2, rel=1e-12)
    from aelab.analysis.plots import panels
    from aelab.analysis.table import markdown_table

    books = markdown_table(result.summary, result.table, bookkeeping=True).splitlines()[0]  # --bookkeeping
    assert books.endswith("| parameters | wall time (s) | at the end | n |") and "1,002,000 |" in markdown_table(
        result.summary, result.table, bookkeeping=True
    )
    assert [p.metric for p in panels(result.table, result.summary, bookkeeping=True)][-2:] == ["params", "wall_time_s"]


# ------------------------------------------------------------------------------------------------ figures
def test_panels_are_the_studys_metrics_with_baselines_on_their_axes(compared):
    from aelab.analysis.plots import panels

    _, result = compared
    chosen = panels(result.table, result.summary)
    assert [(p.metric, p.baselines) for p in chosen] == [
        ("test/recon_loss", ["eval/pca_recon_loss"]),  # PCA on the axes of what it is compared with
        ("gap/recon_loss", []),
    ]
    for name in ("overview", "test_recon_loss", "gap_recon_loss", "curves"):
        assert (result.out_dir / f"{name}.png").is_file() and (result.out_dir / f"{name}.pdf").is_file(), name
    assert not (result.out_dir / "params.png").exists() and not (result.out_dir / "eval_pca_recon_loss.png").exists()


def test_a_metric_panel_orders_and_colours_variants_by_value_and_says_n(compared):
    import matplotlib.pyplot as plt

    from aelab.analysis.plots import Panel, draw_metric

    _, result = compared
    fig, ax = plt.subplots()
    drawn = draw_metric(ax, result.table, Panel("test/recon_loss", ["eval/pca_recon_loss"]))
    counts = drawn.counts
    assert list(drawn.lines) == ["0.5", "4", "16"]  # numeric order (the figure's legend)
    expected = style.colors([0.5, 4, 16])
    assert [line.get_color() for line in drawn.lines.values()] == [expected[v] for v in (0.5, 4, 16)]
    pca = drawn.own["PCA test MSE"]  # the baseline, named in its own panel
    assert pca.get_linestyle() == "--" and pca.get_color() == "black"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PCA test MSE"]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "16"]
    # two seeds: the mean line and each seed's point (open circles), n written in the note
    assert sorted(set(counts)) == [1, 2]
    assert style.spread_note(counts) == "line: mean of n = 1–2 seeds; open points: each of them"
    points = [c for c in ax.collections if len(c.get_offsets()) == 2]
    assert points, "each seed's value is drawn"
    plt.close(fig)


def test_figures_have_nothing_clipped(compared):
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    from aelab.analysis.plots import metric_figures

    _, result = compared
    assert imread(result.out_dir / "overview.png").shape[1] > 1000  # 200 dpi
    checked = []
    original = style.save

    def check(fig, path):  # constrained layout: everything drawn lies inside the figure
        fig.canvas.draw()
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())
        width, height = fig.get_size_inches()
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01, (path, drawn)
        assert drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01, (path, drawn)
        checked.append(Path(path).name)
        plt.close(fig)
        return Path(path)

    style.save = check
    try:
        metric_figures(result.summary, result.table, result.out_dir / "check")
    finally:
        style.save = original
    assert checked == ["test_recon_loss.png", "gap_recon_loss.png", "overview.png"]


def test_learning_curves_count_epochs_from_one_with_validation_solid_and_training_dashed(compared):
    import matplotlib.pyplot as plt

    from aelab.analysis.plots import Panel, curves_figure

    _, result = compared
    drawn = {}
    original = style.save
    style.save = lambda fig, path: drawn.setdefault("fig", fig) and Path(path)
    try:
        curves_figure(result.table, [Panel("test/recon_loss")], result.out_dir / "c.png", limit=12)
    finally:
        style.save = original
    fig = drawn["fig"]
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(axes) == len(BETAS)  # one row per β, one column per quantity
    lines = axes[0].get_lines()
    solid = [line for line in lines if line.get_linestyle() == "-"]
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == len(BOTTLENECKS)
    # the same colour (a lighter tint of it, drawn on top: visible where training and validation coincide)
    assert [style.lighten(line.get_color()) for line in solid] == [line.get_color() for line in dashed]
    assert all(d.get_zorder() > s.get_zorder() for s, d in zip(solid, dashed))
    assert list(solid[0].get_xdata()) == [1, 2, 3]  # epoch 1 = the first epoch
    assert all(float(t).is_integer() for t in axes[0].get_xticks())
    plt.close(fig)


def test_save_figure_writes_png_and_pdf(tmp_path):
    import matplotlib.pyplot as plt

    from aelab.store.files import save_figure

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_evaluations_figures_are_in_the_house_style(tmp_path):
    import numpy as np

    from aelab.evaluation.disentanglement import heatmap
    from aelab.evaluation.features import scatter_codes

    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(300, 8)), rng.integers(0, 10, 300)
    scatter = scatter_codes(z, y, [f"class {i}" for i in range(10)], tmp_path / "codes.png")
    heat = heatmap(rng.random((6, 4)), ["shape", "scale", "x", "y"], tmp_path / "mi.png", "MI")
    for path in (scatter, heat):
        assert path.is_file() and path.with_suffix(".pdf").is_file()


# ------------------------------------------------------------------------------------------------ report.html
def test_report_html_is_one_self_contained_page_with_everything(compared):
    sweep, result = compared
    page = result.files["report.html"].read_text()
    # nothing from a network: every image is a data URI, no external script, style or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="([^"]{0,30})', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert len(images) >= 4  # overview, curves and each metric's own
    # the sortable table of settings, with its column names as sort keys
    assert 'table class="sortable" id="results-table"' in page and 'data-key="test/recon_loss"' in page
    # the study's command (with its launcher), this comparison's command, the config, each run and its status
    assert "aelab-train -m model=vae model.bottleneck=2,4,16 model.beta=0.5,16,4 seed=0,1" in page
    assert "hydra/launcher=joblib" in page and "aelab-compare sweep" in page
    # what the ± covers: these hand-made runs predate data.split_seed, so each seed drew its own split
    assert "± over seeds</i>: each seed drew its own train/validation split" in page
    assert "max_epochs: 3" in page
    for run in (p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("model.")):
        assert run.name in page, run.name
    assert "the training loss became nan" in page and "status-failed" in page
    assert "model.beta=16,model.bottleneck=4,seed=1" in page and "not started" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (Debian: apt-get install chromium)")
def test_report_html_opens_in_a_real_browser_without_errors(compared, tmp_path):
    import numpy as np
    from PIL import Image

    _, result = compared
    page = result.files["report.html"].resolve()
    base = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr"]
    started = time.time()
    dom = subprocess.run(
        [*base, "--virtual-time-budget=2000", "--dump-dom", f"{page.as_uri()}#sort=-test/recon_loss"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-ready="1"' in dom.stdout, "the page's script ran to its end"
    assert not re.search(r"<html[^>]*data-errors", dom.stdout), re.findall(r'data-errors="[^"]*"', dom.stdout)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    # #sort=-test/recon_loss sorted the results by that column, largest first
    body = dom.stdout.split('id="results-table"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = [re.findall(r'data-v="([^"]*)"', row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    values = [float(cells[2]) for cells in rows]  # bottleneck, β, test/recon_loss, ...
    assert len(values) == 9 and values == sorted(values, reverse=True), values

    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.005, "the screenshot shows text and figures"
    assert time.time() - started < 60


# ------------------------------------------------------------------------------------------------ epochs and grids
def test_progress_bar_counts_epochs_from_one():
    from aelab.callbacks.progress import ProgressBar

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(2).startswith("Epoch 3/3")  # the third of three (Lightning: "Epoch 2/2")
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(0).strip() == "Epoch 1"


def test_a_plain_run_grid_has_no_corrupted_row():
    import torch

    from aelab.callbacks.samples import ReconstructionGrid
    from aelab.data.noise import GaussianNoise, NoCorruption

    class Model(torch.nn.Module):
        device = torch.device("cpu")

        def __init__(self, noise):
            super().__init__()
            self.noise = noise

        def eval_generator(self):
            return torch.Generator().manual_seed(0)

        def per_sample_metrics(self, x, generator):
            noisy = self.noise(x, generator)
            return {}, noisy, noisy * 0.5

    images = torch.rand(16, 1, 28, 28)
    grid = ReconstructionGrid("unused")
    plain = grid.render(Model(NoCorruption()), images)
    noisy = grid.render(Model(GaussianNoise(0.3)), images)
    row = 28 * 3 + 2  # enlarged x3, 2 pixels of padding
    assert plain.shape[1] == 2 * row + 2 and noisy.shape[1] == 3 * row + 2
    assert plain.shape[2] > 16 * row  # 16 images a row, their labels left of them


def test_compare_reads_published_numbers_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    from aelab.cli.compare import main, parse_references

    assert parse_references(["test/nll_iwae=235:reported (Burda et al.)", "eval/auroc=0.9"]) == {
        "test/nll_iwae": (235.0, "reported (Burda et al.)"),
        "eval/auroc": (0.9, "published: 0.9"),
    }
    assert main([str(tmp_path), "--reference", "test/nll_iwae=lots"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("aelab-compare: error: --reference 'test/nll_iwae=lots' is not METRIC=VALUE")
        and err.count("\n") == 1
    )


def test_a_key_that_follows_another_one_to_one_is_not_a_second_setting():
    from aelab.analysis.table import table_from_records

    records = [
        {
            "run": f"{model}{b}",
            "status": "completed",
            "seed": 0,
            "test/recon_loss": 0.1,
            "_config": {"model.bottleneck": b, "seed": 0},
            "_choices": {"model": model, "model/net": model},  # model=conv brings model/net=conv
            "_overrides": ["model.bottleneck"],
        }
        for model in ("mlp", "conv")
        for b in (2, 8)
    ]
    table = table_from_records(records)
    assert table.setting_keys == ["model", "model.bottleneck"] and table.echoes == {"model/net": "model"}
    assert "model/net" in table.frame.columns  # runs.csv keeps it


def test_the_study_command_keeps_interpolations_as_typed(tmp_path):
    """A sweep started with ``+callbacks.fault.run_dir=${paths.run_dir}`` is shown as typed, not resolved."""
    from aelab.analysis.report import study_commands

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "aelab_sweep.yaml").write_text(yaml.safe_dump({"overrides": ["model=mlp", "+x.dir=${paths.run_dir}"]}))
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    hydra: ['hydra/launcher=joblib', 'x=${y}']\n")
    assert study_commands([sweep]) == ["aelab-train -m model=mlp '+x.dir=${paths.run_dir}' hydra/launcher=joblib"]
    (sweep / "aelab_sweep.yaml").write_text("overrides: [unclosed\n")
    assert study_commands([sweep]) == ["aelab-train -m hydra/launcher=joblib"]  # an unreadable file: no crash


def bottleneck_table(info: dict, values):
    """A table of two hand-made completed runs (bottleneck 2 and 4) with ``values(b)``'s metrics and ``info``."""
    from aelab.analysis.table import table_from_records

    records = [
        {"run": f"r{b}", "status": "completed", **values(b), "_config": {"model.bottleneck": b, "seed": 0},
         "_choices": {}, "_overrides": ["model.bottleneck"], "_info": info}
        for b in (2, 4)
    ]  # fmt: skip
    return table_from_records(records)


def test_the_best_validation_value_gets_no_panel_beside_the_test_value():
    from aelab.analysis.plots import panels
    from aelab.analysis.table import aggregate

    info = {
        "test/recon_loss": {"label": "test MSE", "higher_is_better": False, "column": True},
        "best/val/recon_loss": {"label": "best validation MSE", "higher_is_better": False, "column": True},
    }
    table = bottleneck_table(info, lambda b: {"test/recon_loss": 0.1 / b, "best/val/recon_loss": 0.1 / b})
    assert "best/val/recon_loss" in table.metrics  # the table keeps it
    assert [p.metric for p in panels(table, aggregate(table))] == ["test/recon_loss"]


def test_the_report_shows_the_config_of_the_first_run_in_value_order(compared):
    from aelab.analysis.report import _config_text

    _, result = compared
    _, whose = _config_text(result.table)
    assert Path(whose).name == "model.beta=0.5,model.bottleneck=2,seed=0"  # not bottleneck 16 (text order)


def test_psnr_of_the_same_squared_error_gets_no_panel_and_unknown_info_fields_are_ignored():
    from aelab.analysis.plots import panels
    from aelab.analysis.table import aggregate
    from aelab.models import Autoencoder

    declared = {i.key: i.to_json() for i in Autoencoder(input_shape=[1, 8, 8], bottleneck=2).metric_info()}
    assert declared["test/psnr"]["restates"] == "test/recon_loss"
    info = {k: declared[k] for k in ("test/recon_loss", "test/psnr")}
    info["test/recon_loss"] = {**info["test/recon_loss"], "a_newer_field": 1}  # a record from a newer aelab
    table = bottleneck_table(info, lambda b: {"test/recon_loss": 0.1 / b, "test/psnr": 10 + b})
    assert "test/psnr" in table.metrics  # the table keeps it
    assert [p.metric for p in panels(table, aggregate(table))] == ["test/recon_loss"]


def test_the_chance_line_is_drawn_on_both_classifiers_panels_and_the_knn_label_names_k():
    import json

    from aelab.analysis.plots import panels
    from aelab.analysis.table import aggregate
    from aelab.evaluation.features import ProbeTask

    info = json.loads(json.dumps({i.key: i.to_json() for i in ProbeTask(knn_k=7).metric_info()}))  # as recorded
    table = bottleneck_table(
        info, lambda b: {"eval/probe_acc": 0.5 + b / 100, "eval/knn_acc": 0.6, "eval/chance_acc": 0.1}
    )
    assert {p.metric: p.baselines for p in panels(table, aggregate(table))} == {
        "eval/probe_acc": ["eval/chance_acc"],
        "eval/knn_acc": ["eval/chance_acc"],
    }
    assert table.info.label("eval/knn_acc") == "k-NN accuracy (k = 7)"


def test_a_figure_of_panels_leaves_as_few_cells_empty_as_it_can():
    from aelab.analysis.plots import grid_columns

    for n in range(1, 13):
        cols = grid_columns(n)
        assert cols <= 4 and (-n % cols) <= min(-n % c for c in (2, 3, 4)) if n > 3 else cols == n
    assert grid_columns(7) == 4 and grid_columns(6) == 3  # 7 panels: 4 + 3, not 3 + 3 + 1
