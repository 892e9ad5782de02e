"""An extension works everywhere a built-in does: swept, checked early, evaluated, predicted, exported, loaded.

The package is ``tests/extension/newlab`` — a TopK sparse autoencoder, scikit-learn's digits and a
dead-unit evaluation — written from docs/extending.md with imports from ``aelab.extend`` only. It is
trained as a sweep (``-m`` over two values) with ``PYTHONPATH`` pointing at it; every later command
runs in a fresh process *without* ``PYTHONPATH``: the run folder recorded the search path and where the
package was imported from, so ``aelab-eval``, ``aelab-predict``, ``aelab-export``, ``aelab-compare`` and
``aelab.load_run`` find the same components when the user names the package (``AELAB_TRUST_PACKAGES=newlab``
or ``trust_packages=[newlab]``): a recorded folder is data, and code is imported from it only on request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, TINY

EXTENSION = Path(__file__).parent / "extension"
SEARCHPATH = "hydra.searchpath=[pkg://newlab.conf]"
QUICK = [o for o in TINY if o.startswith(("trainer.", "callbacks."))]


def run(args: list[str], cwd: Path, tool: str = "aelab-train", pythonpath: bool = True, trust: bool = True):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("WANDB_SERVICE", None)
    env.pop("PYTHONPATH", None)
    env.pop("AELAB_TRUST_PACKAGES", None)
    if pythonpath:
        env["PYTHONPATH"] = str(EXTENSION)
    elif trust:
        env["AELAB_TRUST_PACKAGES"] = "newlab"  # import it from the folder the run recorded
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The extension swept over two values of its own option, with its evaluation after testing."""
    root = tmp_path_factory.mktemp("newlab")
    args = ["-m", SEARCHPATH, "model=topk", "data=digits", "model.k=2,4", "eval=[dead_units]", *QUICK, "sweep.name=s"]
    result = run(args, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / "outputs" / "sweeps" / "s"


def test_an_extension_is_swept_and_each_job_records_its_search_path_and_package(sweep):
    _, sweep_dir = sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / "metrics.json").is_file())
    assert jobs == ["model.k=2", "model.k=4"]
    record = json.loads((sweep_dir / "model.k=2" / "metrics.json").read_text())
    assert record["status"] == "completed" and "eval/dead_units" in record["final"]
    assert record["search_path"] == ["pkg://newlab.conf"]
    assert record["extension_packages"] == {"newlab": str(EXTENSION.resolve())}
    assert record["eval"]["files"]["dead_units/dead_units"] == "eval/dead_units.txt"  # relative to the run folder


@pytest.mark.slow  # four tools as subprocesses, about a minute
def test_aelab_eval_predict_export_and_compare_need_no_pythonpath(sweep):
    root, sweep_dir = sweep
    job = sweep_dir / "model.k=4"
    evaluated = run([f"run={job}", "eval=[dead_units,probe]", "eval.probe.num_train=300"], root, "aelab-eval", False)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "eval/dead_units" in json.loads((job / "metrics.json").read_text())["eval"]["metrics"]
    predicted = run([f"run={job}", "input=digits", "outputs=[codes]"], root, "aelab-predict", False)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    exported = run([f"run={job}", "format=onnx", "part=encoder"], root, "aelab-export", False)
    assert exported.returncode == 0, exported.stderr[-2000:]
    compared = run([str(sweep_dir)], root, "aelab-compare", False)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "eval/dead_units" in (sweep_dir / "comparison" / "comparison.csv").read_text().splitlines()[0]
    assert "share of dead code units" in (sweep_dir / "comparison" / "comparison.md").read_text()


@pytest.mark.slow  # 16-31 s: runs with the slow checks (make test stays < 5 min)
def test_load_run_in_a_fresh_python_without_pythonpath_gives_the_sparse_codes(sweep):
    root, sweep_dir = sweep
    code = (
        f"import aelab, torch; r = aelab.load_run({str(sweep_dir / 'model.k=2')!r}); "
        "z = r.encode(torch.rand(5, 1, 8, 8)); print('NONZERO', int((z != 0).sum(1).max()))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AELAB_TRUST_PACKAGES")}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "not imported from there unless you name the package" in done.stderr
    assert "trust_packages=[newlab]" in done.stderr  # a recorded folder is data: its code runs only on request
    env["AELAB_TRUST_PACKAGES"] = "newlab"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NONZERO 2" in done.stdout  # the code path hook: encode() keeps the k = 2 largest units too


@pytest.mark.parametrize("where", ["relative", "in_sweep", "in_run"])
def test_a_recorded_package_folder_that_is_relative_or_inside_a_run_or_sweep_folder_is_never_imported(
    sweep, tmp_path, where, monkeypatch
):
    """issue 34: ``"extension_packages": {"sharedrun": "shared"}`` made aelab-eval import the run folder's own
    ``__init__.py``; a sweep folder holding a package beside its job folders did the same."""
    root, sweep_dir = sweep
    shared = tmp_path / "shared"
    shared.mkdir()
    run_dir = shutil.copytree(sweep_dir / "model.k=2", shared / "sharedrun")
    (shared / "multirun.yaml").write_text("{}\n")  # the shared folder is a sweep folder
    marker = tmp_path / "ran"
    package = {"relative": run_dir, "in_run": run_dir, "in_sweep": shared / "sharedpkg"}[where]
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    record = json.loads((run_dir / "metrics.json").read_text())
    top = package.name
    folder = "shared" if where == "relative" else str(package.parent)
    record["extension_packages"] = {top: folder}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    from aelab.errors import ConfigError
    from aelab.run.extensions import run_context

    with pytest.raises(ConfigError, match=f"package '{top}'.*(relative path|inside)"):
        monkeypatch.chdir(tmp_path)  # the relative path would resolve to tmp_path/shared
        run_context(run_dir, trusted=[top])
    assert not marker.exists()


def test_a_package_that_is_gone_is_one_line_naming_it(sweep, tmp_path):
    root, sweep_dir = sweep
    moved = tmp_path / "run"
    shutil.copytree(sweep_dir / "model.k=2", moved)
    record = json.loads((moved / "metrics.json").read_text())
    record["extension_packages"] = {"newlab": str(tmp_path / "nowhere")}
    (moved / "metrics.json").write_text(json.dumps(record))
    result = run([f"run={moved}", "eval=[probe]"], root, "aelab-eval", False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "trained with the package 'newlab'" in result.stderr and "PYTHONPATH" in result.stderr


def test_a_cross_field_rule_of_the_extension_refuses_the_sweep_before_its_first_job(tmp_path):
    started = time.time()
    args = ["-m", SEARCHPATH, "model=topk", "data=digits", "model.bottleneck=16", "model.k=4,32", *QUICK]
    result = run(args, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "model.k=32 must not exceed model.bottleneck=16 (in the sweep's job model.k=32)" in result.stderr
    assert not (tmp_path / "outputs").exists() and time.time() - started < 60  # a few seconds on an idle machine


def test_the_base_data_options_work_on_an_extension_dataset(tmp_path):
    args = [SEARCHPATH, "model=mlp", "data=digits", "data.limit_train=500", "model.bottleneck=8", *QUICK, "name=lim"]
    result = run(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "outputs" / "runs" / "lim" / "metrics.json").read_text())
    assert record["dataset_info"]["sizes"]["train"] == 500


@pytest.mark.parametrize(
    "tool, args, message",
    [
        (
            "aelab-train",
            ["model.bottelneck=8"],
            "model.bottelneck is not an option of model; did you mean model.bottleneck?",
        ),
        ("aelab-eval", ["run=x", "tasks=[probe]"], "tasks is not an option of aelab-eval; did you mean auto_tasks?"),
        (
            "aelab-predict",
            ["run=x", "input=y", "ouputs=[codes]"],
            "ouputs is not an option of aelab-predict; did you mean outputs?",
        ),
        ("aelab-export", ["run=x", "fromat=onnx"], "fromat is not an option of aelab-export; did you mean format?"),
    ],
)
def test_a_misspelt_key_without_plus_is_aelabs_message_on_every_entry_point(tool, args, message, tmp_path):
    started = time.time()
    result = run(args, tmp_path, tool, pythonpath=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "To append to your config" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists() and time.time() - started < 30  # ~1 s on an idle machine
