"""CPU threads of jobs that share a machine (aelab.run.threads): the spin bounded where the count is fixed, each job's
share of the usable cores among the aelab jobs running, looked at again while training; the user's settings win."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aelab.run import threads as cpu

HOLD = textwrap.dedent(
    """
    import sys, time
    from aelab.run import threads
    threads.join()
    print("joined", flush=True)
    time.sleep(float(sys.argv[1]))
    """
)


@pytest.fixture
def jobs_dir(tmp_path, monkeypatch):
    folder = tmp_path / "jobs"
    cpu.leave()  # a job this test process ran before (an in-process training test) is over
    monkeypatch.setenv("AELAB_JOBS_DIR", str(folder))
    for key in cpu.THREAD_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    yield folder
    cpu.leave()
    cpu.current = None


def other_job(seconds: float = 60) -> subprocess.Popen:
    """Another process on this machine that runs an aelab job (holds its slot) for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "joined"
    return proc


SPIN = textwrap.dedent(
    """
    import os, sys
    from omegaconf import OmegaConf
    from aelab.run.session import plan_threads
    cfg = OmegaConf.create(sys.argv[1])
    plan_threads(cfg)
    print(os.environ.get("GOMP_SPINCOUNT"), "torch" in sys.modules)
    """
)


def spin_after_plan(config: str, **env: str) -> list[str]:
    """``GOMP_SPINCOUNT`` once a fresh process planned a job's threads from ``config``; whether torch had loaded."""
    clean = {k: v for k, v in os.environ.items() if k not in cpu.WAIT_SETTINGS + cpu.THREAD_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", SPIN, config], env=dict(clean, **env), capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_the_spin_is_bounded_before_torch_loads_only_where_the_thread_count_cannot_follow_the_machine():
    # threads shared with the other jobs: libgomp's own spin (bounding it costs a job alone 7-12 %)
    assert spin_after_plan("{trainer: {accelerator: cpu}}") == ["None", "False"]
    # a count that cannot step aside: bounded, before torch loads
    for config in ("{threads: 2}", "{trainer: {deterministic: true}}"):
        assert spin_after_plan(config) == [cpu.SPIN_COUNT, "False"], config
    assert spin_after_plan("{}", OMP_NUM_THREADS="2") == [cpu.SPIN_COUNT, "False"]
    # the user's own wait setting wins
    assert spin_after_plan("{threads: 2}", GOMP_SPINCOUNT="300000") == ["300000", "False"]
    assert spin_after_plan("{threads: 2}", OMP_WAIT_POLICY="PASSIVE") == ["None", "False"]
    # the other entry points (their threads are torch's default) bound it at their start; torch first: too late
    clean = {k: v for k, v in os.environ.items() if k not in cpu.WAIT_SETTINGS}
    for code, expected in (
        ("from aelab.run.threads import bound_spin; bound_spin()", cpu.SPIN_COUNT),
        ("import torch; from aelab.run.threads import bound_spin; bound_spin()", "None"),
    ):
        show = f"import os; {code}; print(os.environ.get('GOMP_SPINCOUNT'))"
        out = subprocess.run([sys.executable, "-c", show], env=clean, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, code


FIRST_TORCH = textwrap.dedent(
    """
    import importlib.machinery, os, sys
    class Watch:  # says the spin setting when torch's module runs (a find_spec alone does not load it)
        def find_spec(self, name, path=None, target=None):
            if name != "torch":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            run = spec.loader.exec_module
            def exec_module(module):
                print("TORCH LOADS WITH GOMP_SPINCOUNT", os.environ.get("GOMP_SPINCOUNT"), file=sys.stderr)
                run(module)
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, Watch())
    from aelab.cli.train import main
    sys.argv = ["aelab-train", *sys.argv[1:]]
    main()
    """
)


def test_a_fixed_count_bounds_the_spin_before_the_accelerator_check_loads_torch(tmp_path):
    # trainer.accelerator=gpu: the pre-run check imports torch to look for a GPU (here it refuses the run: none)
    env = {k: v for k, v in os.environ.items() if k not in cpu.WAIT_SETTINGS + cpu.THREAD_SETTINGS}
    args = ["data=sprites", "model=mlp", "trainer.accelerator=gpu", f"paths.output_dir={tmp_path}", "name=g"]
    for extra, expected in (("threads=2", cpu.SPIN_COUNT), ("trainer.deterministic=true", cpu.SPIN_COUNT)):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_TORCH, *args, extra], env=env, capture_output=True, text=True, timeout=120
        )
        line = next((s for s in out.stderr.splitlines() if s.startswith("TORCH LOADS")), out.stderr[-2000:])
        assert line.split()[-1] == expected, (extra, line)


def test_running_jobs_counts_live_holders_and_clears_dead_ones(jobs_dir):
    assert cpu.join() == 1
    other = other_job()
    try:
        assert cpu.running_jobs(jobs_dir) == 2
    finally:
        other.kill()
        other.wait()
    assert len(list(jobs_dir.iterdir())) == 2  # the killed job's file is still there, unlocked
    assert cpu.running_jobs(jobs_dir) == 1
    assert len(list(jobs_dir.iterdir())) == 1  # ... and the count removed it
    cpu.leave()
    assert cpu.running_jobs(jobs_dir) == 0 and not list(jobs_dir.iterdir())


def test_a_jobs_folder_that_is_not_private_is_not_used(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    monkeypatch.setenv("AELAB_JOBS_DIR", str(tmp_path / "link"))
    assert cpu.jobs_folder() is None and cpu.join() == 1 and not list(target.iterdir())
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("AELAB_JOBS_DIR", str(shared))
    assert cpu.jobs_folder() is None


def test_the_share_follows_the_jobs_and_the_user_settings_win(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
    plan = cpu.choose(None, processes=1, environ={})
    assert [plan.threads(k) for k in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1] and plan.adapts
    assert cpu.choose(None, processes=2, environ={}).threads(1) == 2  # two joblib workers / DDP ranks of its own
    fixed = cpu.choose(3, processes=1, environ={})
    assert fixed.threads(8) == 3 and not fixed.adapts  # threads= wins
    env_set = cpu.choose(None, processes=1, environ={"OMP_NUM_THREADS": "2"})
    assert env_set.threads(1) is None and not env_set.adapts  # the environment's count: torch's choice stands
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert cpu.choose(None, processes=2, environ={"OMP_NUM_THREADS": "4"}).apply(1) == 2  # ... within its share
        torch.set_num_threads(1)
        assert cpu.choose(None, processes=2, environ={"OMP_NUM_THREADS": "1"}).apply(1) == 1
    finally:
        torch.set_num_threads(before)
    exact = cpu.choose(None, processes=1, deterministic=True, environ={})
    assert exact.threads(1) == exact.threads(8) == 4 and not exact.adapts  # the same numbers whatever else runs


def test_the_share_leaves_the_cores_other_processes_keep_busy(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)
    plan = cpu.choose(None, processes=1, environ={})
    assert [plan.threads(1, others) for others in (None, 0.0, 0.4, 0.6, 1.3, 2.0)] == [2, 2, 2, 1, 1, 1]
    assert cpu.choose(2, processes=1, environ={}).threads(1, 2.0) == 2  # threads= still wins


def test_other_load_sees_a_busy_process_and_not_its_own_work():
    if not Path("/proc/stat").is_file() or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs Linux's /proc/stat")
    load = cpu.OtherLoad(len(os.sched_getaffinity(0)))
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)
    busy = load.cores_busy()
    assert busy is not None and busy >= 0.6, busy  # about one core, for all but the start-up of the interpreter


def test_usable_cores_follow_the_affinity():
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process that may run on two cores")
    one = next(iter(os.sched_getaffinity(0)))
    code = (
        f"import os; os.sched_setaffinity(0, {{{one}}}); from aelab.run import threads; print(threads.usable_cores())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_a_training_job_takes_its_share_and_gets_the_cores_back(jobs_dir, run_train, monkeypatch, caplog):
    """A job beside another aelab job trains with half the cores; when the other ends it takes them all again."""
    import logging

    import torch

    monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
    monkeypatch.setattr(cpu, "RECHECK_S", 0.0)
    monkeypatch.setattr(cpu.OtherLoad, "cores_busy", lambda self: None)  # the jobs alone decide here
    other = other_job()
    seen: list[int] = []
    revise = cpu.Plan.revise

    def watched(self, force=False):  # the ThreadShare callback's look; the other job ends after the third
        revise(self, force)
        seen.append(torch.get_num_threads())
        if len(seen) == 3:
            other.kill()
            other.wait()

    monkeypatch.setattr(cpu.Plan, "revise", watched)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="aelab.threads"):
            record, _ = run_train("trainer.max_epochs=4", "data.num_train=400")
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(before)
    assert record["status"] == "completed"
    assert seen[:3] == [2, 2, 2] and seen[-1] == 4, seen  # 4 cores, 2 jobs → 2 threads; alone again → 4
    assert "CPU threads 2 → 4: 1 aelab job on 4 cores" in caplog.text
    assert record["timing"]["threads"] == [2, 4]  # the record says what it ran with
    assert not list(Path(jobs_dir).iterdir())  # the job left the folder when it ended


def test_threads_given_are_kept_beside_other_jobs(jobs_dir, run_train, monkeypatch):
    import torch

    monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
    other = other_job()
    before = torch.get_num_threads()
    try:
        record, _ = run_train("threads=3", "trainer.max_epochs=1")
        assert torch.get_num_threads() == 3 and record["status"] == "completed"
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(before)


def test_a_run_refused_after_its_parts_were_built_no_longer_counts_as_a_running_job(jobs_dir, tmp_path):
    from conftest import TINY

    import aelab
    from aelab.errors import AelabError

    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")  # read after the parts are built (and the job counted)
    with pytest.raises(AelabError, match="cannot be read"):
        aelab.train([*TINY, "model=mlp", f"paths.output_dir={tmp_path}", "name=r", f"ckpt_path={bad}"], verbose=False)
    assert cpu.live_jobs() == 1 and not list(jobs_dir.iterdir())  # a notebook's process is not a job any more
