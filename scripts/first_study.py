#!/usr/bin/env python
"""The README's first study: an MLP bottleneck sweep with two seeds, compared, its figures copied into docs/figures/.

    .venv/bin/python scripts/first_study.py              # the sweep (minutes on 2 cores), aelab-compare, the copies

The sweep lands in ``outputs/sweeps/first_study`` (a second call skips the jobs that completed), the comparison
in its ``comparison/`` folder (``report.html`` shows all of it), and ``docs/figures/first_study_{overview,curves,
recon_grid}.png`` are downscaled copies of ``overview.png``, ``curves.png`` and ``recon_grid.png`` for the README.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_results import shrink_copy  # noqa: E402 — a sibling script, found through the path set above

#: the study: MLP, bottleneck 2…64, seeds 0 and 1, 2,000 Fashion-MNIST training images (batches of 32: 63 steps an
#: epoch) and 2,000 held out for validation, the same split for both seeds; each run trains until its validation
#: error has not improved for 10 epochs (early stopping, at most 200 epochs); a linear probe and exact PCA at the same
#: code size after testing; two jobs at a time
SWEEP = [
    "model=mlp",
    "model.bottleneck=2,4,8,16,32,64",
    "seed=0,1",
    "data.limit_train=2000",
    "data.val_size=2000",
    "data.batch_size=32",
    "trainer.max_epochs=200",
    "callbacks/early_stopping=plateau",
    "callbacks.early_stopping.patience=10",
    "eval=[probe,pca]",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "sweep.name=first_study",
    "callbacks.progress_bar=null",
]
#: comparison figure → docs/figures/first_study_<name>.png, at most this wide (pixels)
FIGURES = {"overview.png": ("overview", 1400), "curves.png": ("curves", 1400), "recon_grid.png": ("recon_grid", 1000)}


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "aelab-train"), "-m", *SWEEP]
    started = time.time()
    print("$ aelab-train -m " + shlex.join(SWEEP), flush=True)
    if subprocess.run(command, cwd=root).returncode != 0:
        print("first_study.py: the sweep had failed jobs; the same command continues it", file=sys.stderr)
        return 1
    sweep = root / "outputs" / "sweeps" / "first_study"
    print(f"$ aelab-compare {sweep.relative_to(root)}", flush=True)
    if subprocess.run([str(bin_dir / "aelab-compare"), str(sweep)], cwd=root).returncode != 0:
        return 1
    print(f"the sweep and its comparison took {(time.time() - started) / 60:.1f} minutes", flush=True)
    for name, (short, width) in FIGURES.items():
        target = root / "docs" / "figures" / f"first_study_{short}.png"
        shrink_copy([sweep / "comparison" / name], target, max_width=width)
        print(f"wrote {target.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
