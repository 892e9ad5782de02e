"""aelab's Optuna search (aelab.run.search.OptunaSearch) with a launcher whose jobs only sleep: the search's own
behaviour — slots, workers, heartbeats — measured without training anything. Also a worker process of its own:

    python tests/search_workers.py RESULTS STORAGE N_TRIALS N_JOBS [DIE_IN_ITS_NTH_TRIAL]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

#: how long trial N's job sleeps by default: DURATIONS[N % len(DURATIONS)] (a short and a long trial, by turns)
DURATIONS = (0.4, 2.0)


class SleepLauncher:
    """Runs one job per ``launch``: sleeps as long as its trial's number says, returns ``x`` of its overrides, and
    writes ``<results>/<trial>.json`` (its start, end, process) — exclusively, so a trial run twice fails."""

    def __init__(self, results: Path, die_in: int | None = None, durations: tuple[float, ...] = DURATIONS):
        self.results, self.die_in, self.durations, self.launched = Path(results), die_in, durations, 0
        self.lock = threading.Lock()

    def launch(self, job_overrides, initial_job_idx):
        (overrides,) = job_overrides
        values = dict(o.split("=", 1) for o in overrides)
        trial = int(values["search.trial"])
        assert trial == initial_job_idx
        with self.lock:
            self.launched += 1
            dying = self.launched == self.die_in
        start = time.time()
        (self.results / f"{trial}.started").write_text(str(os.getpid()))
        if dying:  # this worker's machine dies in the middle of the trial
            time.sleep(self.durations[trial % len(self.durations)] / 2)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.durations[trial % len(self.durations)])
        record = {"trial": trial, "start": start, "end": time.time(), "pid": os.getpid(), "x": float(values["x"])}
        with open(self.results / f"{trial}.json", "x") as f:
            json.dump(record, f)
        return [JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=(record["x"] - 3) ** 2)]


def make_search(
    results: Path, storage: str, n_trials: int, n_jobs: int, die_in: int | None = None, durations=DURATIONS, **options
):
    """An OptunaSearch over ``x=interval(0, 10)`` with a :class:`SleepLauncher`, set up as Hydra would."""
    import optuna

    from aelab.run.search import OptunaSearch

    options = {"heartbeat_interval": 1, "grace_period": 3, **options}
    search = OptunaSearch(
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=storage,
        study_name="sleep",
        n_trials=n_trials,
        n_jobs=n_jobs,
        params={"x": "interval(0, 10)"},
        **options,
    )
    search.config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(results)}}, "search": {"pruner": "none"}, "optimized_metric": "x"}
    )
    search.launcher = SleepLauncher(results, die_in, durations)
    return search


def jobs(results: Path) -> list[dict]:
    """The jobs that ran to their end, by trial number."""
    return sorted((json.loads(p.read_text()) for p in Path(results).glob("*.json")), key=lambda r: r["trial"])


def idle_fraction(records: list[dict], slots: int) -> float:
    """The share of the slots' time in which a slot ran no job while trials were still to start: from the first
    job's start to the last one's (after that, a slot with nothing left to run idles under any schedule)."""
    first, last = min(r["start"] for r in records), max(r["start"] for r in records)
    busy = sum(max(0.0, min(r["end"], last) - max(r["start"], first)) for r in records)
    return 1 - busy / (slots * (last - first))


if __name__ == "__main__":
    results, storage, n_trials, n_jobs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    die_in = int(sys.argv[5]) if len(sys.argv) > 5 else None
    make_search(results, storage, n_trials, n_jobs, die_in).sweep([])
