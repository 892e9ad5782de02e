"""Start-up: ``--help`` and the refusals answer without importing torch or Lightning, and say what they said before.

Each check runs ``aelab-train``'s entry point in a fresh interpreter and reads back which top-level modules it
imported (``sys.modules`` at its exit): an answer that needs no model must not pay for torch (about 2 s) or
Lightning and what it pulls in (3 s more). The timings themselves are in docs/speed.md (scripts/bench_startup.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

HEAVY = ("torch", "lightning", "torchmetrics", "torchvision", "scipy", "matplotlib", "pandas")

# aelab-train's entry point (or, with "hydra", the bare @hydra.main function: Hydra's own answer, without aelab's
# wrapper); on stderr, the top-level modules the process imported and how many copies of Hydra's config repository
# it made
_WRAPPER = """
import sys
from hydra._internal import config_repository
from aelab.cli import train
copies = []
def counted(init):
    def wrapped(self, delegate):
        copies.append(1)
        init(self, delegate)
    return wrapped
config_repository.CachingConfigRepository.__init__ = counted(config_repository.CachingConfigRepository.__init__)
entry = train._hydra_main if sys.argv[1] == "hydra" else train.main
sys.argv = ["aelab-train", *sys.argv[2:]]
try:
    entry()
finally:
    print("MODULES " + " ".join(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
    print(f"REPOSITORY COPIES {len(copies)}", file=sys.stderr)
"""


def copies(result: subprocess.CompletedProcess) -> int:
    return int(next(s for s in result.stderr.splitlines() if s.startswith("REPOSITORY COPIES ")).split()[-1])


def run_train(cwd: Path, *args: str, hydra_only: bool = False) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "hydra" if hydra_only else "aelab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((s for s in result.stderr.splitlines() if s.startswith("MODULES ")), None)
    assert line is not None, result.stderr[-3000:]
    return result, set(line.split()[1:])


def test_help_is_hydras_help_and_imports_no_torch(tmp_path):
    """``aelab-train --help`` lists the config groups from one copy of Hydra's config repository
    (cli/common.py): the same text as Hydra's own help, which copies the repository once per group and option."""
    result, modules = run_train(tmp_path, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "== Configuration groups ==" in out and "== Config ==" in out
    assert "model: beta_vae, contractive, conv, conv_pool, conv_vae, iwae, linear, mlp," in out
    assert "model/net: conv, mlp, vae_conv, vae_mlp\n" in out
    assert "callbacks/early_stopping: plateau\n" in out
    assert "  bottleneck: 32\n" in out and "  _target_: aelab.models.Autoencoder\n" in out
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    hydras, _ = run_train(tmp_path, "--help", hydra_only=True)
    assert hydras.returncode == 0 and hydras.stdout == out
    assert copies(result) <= 3 < 50 < copies(hydras)  # composing the config, then one for the listing (Hydra: ~130)
    # with an override and Hydra's own help: the same as Hydra's too
    for args, shown in ((["model=mlp", "--help"], "_target_: aelab.nets.MLPEncoder"), (["--hydra-help"], "launcher:")):
        ours, modules = run_train(tmp_path, *args)
        hydras, _ = run_train(tmp_path, *args, hydra_only=True)
        assert ours.returncode == 0 and ours.stdout == hydras.stdout and shown in ours.stdout
        assert not modules & set(HEAVY)
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_unknown_key_is_refused_without_torch(tmp_path):
    result, modules = run_train(tmp_path, *TINY, "model.bottlenek=8")
    assert result.returncode == 1
    assert "model.bottlenek is not an option of model; did you mean model.bottleneck?" in result.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not (tmp_path / "outputs").exists()


def test_an_argument_the_optimizer_refuses_is_refused_without_torch(tmp_path):
    """torch's own check of ``lr`` is read from its source (aelab/config/signatures.py: the constructor's guards), so
    the answer needs neither torch nor the model it used to build to hear it."""
    result, modules = run_train(tmp_path, *TINY, "model.optimizer.lr=-1")
    assert result.returncode == 1
    assert "model.optimizer (lr=-1, weight_decay=0.0) cannot be built: Invalid learning rate: -1" in result.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not (tmp_path / "outputs").exists()


def test_a_live_run_folder_is_refused_without_torch(tmp_path):
    from aelab.store.locks import lock_folder, release_folder

    run_dir = tmp_path / "outputs" / "runs" / "busy"
    run_dir.mkdir(parents=True)
    lock_folder(run_dir)  # this process holds it, as a training run does
    try:
        result, modules = run_train(tmp_path, *TINY, "name=busy")
    finally:
        release_folder(run_dir)
    assert result.returncode == 1 and f"the run folder {run_dir} is in use by process" in result.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.slow  # a whole aelab-train process or a search's checks: 7-11 s (make test stays < 5 min)
def test_a_completed_run_is_skipped_without_torch(tmp_path):
    from conftest import run_cli

    first = run_cli([*TINY, "model=mlp", "name=done"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result, modules = run_train(tmp_path, *TINY, "model=mlp", "name=done")
    said = result.stdout + result.stderr
    assert result.returncode == 0 and "skipping done: completed earlier with this config" in said
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


_LIGHTNING = """
import sys
from aelab.run.imports import import_lightning
import_lightning()
loaded = "scipy.signal" in sys.modules
import scipy, scipy.signal
from torchmetrics.functional.audio import signal_noise_ratio  # torchmetrics' audio, after the stand-in left
signal = scipy.signal
print(loaded, "lightning.pytorch" in sys.modules, type(signal).__name__, signal is sys.modules["scipy.signal"],
      signal.find_peaks.__module__, signal.windows.hamming(3).round(2).tolist())
"""


def test_lightning_loads_for_a_run_without_scipy_signal_and_scipy_signal_imports_as_ever_after():
    out = subprocess.run([sys.executable, "-c", _LIGHTNING], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().split(maxsplit=5) == [
        "False",  # torchmetrics' import of it for SRMRpy's hamming (0.6 s) did not happen
        "True",
        "module",  # SciPy's own module, not the stand-in, once Lightning has loaded
        "True",
        "scipy.signal._peak_finding",
        "[0.08, 1.0, 0.08]",
    ]
