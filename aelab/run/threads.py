"""CPU threads for one job, chosen so that jobs started independently on one machine share it.

Four things decide how fast a CPU job runs next to others:

* **how long OpenMP's threads spin** while they wait at a barrier. libgomp (PyTorch's OpenMP on Linux) spins
  300,000 rounds (about 3 ms) before it sleeps; with more threads than cores, a thread whose partner was
  descheduled by another process burns its whole slice, and jobs beside each other slow down by far more than
  their share. A job whose threads follow the machine (below) never has more threads than its share, and keeps
  libgomp's spin: bounding it costs a job alone 7-12 % (``scripts/bench_concurrent.py``). A process whose count
  cannot follow the machine (``threads=``, ``OMP_NUM_THREADS``, ``trainer.deterministic``, the other entry
  points) bounds it with :func:`bound_spin` before torch loads — ``GOMP_SPINCOUNT`` (:data:`SPIN_COUNT`), unless
  the user set a wait policy;
* **how many cores this process may use**: its CPU affinity and its cgroup's CPU quota (:func:`usable_cores`),
  not the machine's count;
* **how many aelab jobs share them**: each training job holds a lock on a file in a folder of this user's
  (:func:`jobs_folder`) while it runs; a job's threads are the usable cores divided by the live jobs (and by its
  own processes: joblib workers, DDP ranks on the CPU);
* **what other processes keep busy** (:class:`OtherLoad`): half a core or more counts as taken.

The job looks again every :data:`RECHECK_S` seconds while it trains (the ``ThreadShare`` callback,
:mod:`aelab.callbacks.threads`), so a job alone gets every core back when the others end.

Whatever the user sets wins: ``threads=`` fixes the count; ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` leave torch's
own choice (capped at the job's processes' share); ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT``/``KMP_BLOCKTIME`` leave
the spin alone; ``trainer.deterministic=true`` fixes the count at that share, whatever else runs.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("aelab.threads")

#: libgomp's spin rounds before a waiting thread sleeps (its default is 300,000): about a tenth of a millisecond
SPIN_COUNT = "10000"
#: the user's own OpenMP wait settings: any of them set, aelab leaves the spin alone
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: the user's own thread counts: any of them set (and no ``threads=``), aelab leaves torch's threads alone
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: seconds between two looks at how many jobs share the machine, while a job trains
RECHECK_S = 1.0


def bound_spin(environ: dict[str, str] | None = None) -> bool:
    """Bound OpenMP's spin before torch (and its libgomp) loads, for a process whose thread count cannot step
    aside for other jobs; True when set here.

    Too late once torch is imported (libgomp reads its settings when it loads), and left alone when the user
    set any of :data:`WAIT_SETTINGS`.
    """
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(key in environ for key in WAIT_SETTINGS):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by its cgroup's CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota() -> int | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    try:
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            return math.ceil(int(parts[0]) / int(parts[1]))
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return math.ceil(quota / period) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the jobs that share the machine
def jobs_folder() -> Path | None:
    """This user's folder of running aelab jobs (``AELAB_JOBS_DIR``, else ``$XDG_RUNTIME_DIR/aelab-jobs``, else
    ``<tmp>/aelab-jobs-<uid>``), made private; None when it is not a folder of this user's alone (a link, another
    owner, writable by others): jobs then do not count each other."""
    given = os.environ.get("AELAB_JOBS_DIR")
    if given:
        folder = Path(given)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "aelab-jobs"
    else:
        folder = Path(tempfile.gettempdir()) / f"aelab-jobs-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
    return folder if private else None


class JobSlot:
    """This process's entry among the running jobs: a file it holds locked while its job runs.

    The file is locked under a hidden name and then renamed, so another job never sees it unlocked; a job that
    died leaves its file unlocked (the kernel drops the lock), and the next count removes it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / f"{os.getpid()}-{time.monotonic_ns()}"
        hidden = folder / f".{self.path.name}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(hidden, flags, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.rename(hidden, self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def running_jobs(folder: Path) -> int:
    """How many jobs hold their file in ``folder`` now (this one included); the files of dead jobs are removed."""
    live = 0
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                live += 1  # held: that job runs
            continue
        else:
            os.unlink(entry.path)  # nobody holds it: its job died without removing it
        finally:
            os.close(fd)
    return live


_slot: JobSlot | None = None
#: the running job's plan (set by the pre-run step; the ThreadShare callback revises it)
current: Plan | None = None


def join() -> int:
    """Count this process's job among the running ones (once per job); the number of jobs running now, or 1."""
    global _slot
    if _slot is None:
        folder = jobs_folder()
        if folder is None:
            return 1
        try:
            _slot = JobSlot(folder)
        except OSError as exc:  # a folder we cannot use: the job runs as if alone
            log.debug("jobs folder %s unusable: %s", folder, exc)
            return 1
    return live_jobs()


def leave() -> None:
    """This process's job has ended: the others may take its cores."""
    global _slot
    if _slot is not None:
        _slot.release()
        _slot = None


def live_jobs() -> int:
    """The aelab jobs running now, this one included (1 when this job holds no slot)."""
    if _slot is None:
        return 1
    try:
        return max(1, running_jobs(_slot.folder))
    except OSError:
        return 1


# ----------------------------------------------------------------------------- the choice, and its revision
class OtherLoad:
    """How many of this process's cores other processes kept busy since the last look: the busy time of the CPUs in
    its affinity (``/proc/stat``) less its own CPU time. None where that cannot be told: no ``/proc/stat``, or a
    cgroup quota below the CPUs (the host's counts then say nothing of this process's share)."""

    FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest time is inside user)

    def __init__(self, cores: int):
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except (AttributeError, OSError):
            self.cpus = set()
        self.usable = bool(self.cpus) and cores >= len(self.cpus)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self.sample()

    def sample(self) -> tuple[float, float, float] | None:
        if not self.usable:
            return None
        try:
            with open("/proc/stat", encoding="ascii") as f:
                rows = [line.split() for line in f if line.startswith("cpu")]
        except OSError:
            return None
        busy = sum(sum(int(row[1 + i]) for i in self.FIELDS) for row in rows if row[0] in self.cpus) / self.hz
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def cores_busy(self) -> float | None:
        """Cores other processes kept busy, on average, since the last call (or since this was made)."""
        now = self.sample()
        last, self.last = self.last, now
        if now is None or last is None or now[2] - last[2] < 0.5:
            return None
        return max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2])


class Plan:
    """How one job picks its threads: ``fixed`` (the user's), or a share of ``cores`` capped at ``cap``; with
    ``automatic`` false (the user's environment sets a count) torch's own choice stands."""

    def __init__(self, fixed: int | None, cores: int, cap: int, automatic: bool):
        self.fixed, self.cores, self.cap, self.automatic = fixed, cores, cap, automatic
        self.checked = time.monotonic()
        self.load = OtherLoad(cores) if self.adapts else None
        self.used: list[int] = []  # the thread counts this job ran with, in order (``metrics.json`` → timing)

    @property
    def adapts(self) -> bool:
        """Whether the count follows the machine's load (neither ``threads=`` nor the environment fixes it)."""
        return self.fixed is None and self.automatic

    def threads(self, jobs: int, others: float | None = None) -> int | None:
        """The threads for this job when ``jobs`` aelab jobs run and other processes keep ``others`` cores busy
        (half a core or more counts as one); None: leave torch's choice."""
        if self.fixed is not None:
            return self.fixed
        if not self.automatic:
            return None
        share = self.cores // max(1, jobs)
        if others is not None:
            share = min(share, self.cores - math.floor(others + 0.5))
        return max(1, min(self.cap, share))

    def apply(self, jobs: int, others: float | None = None) -> int:
        """Set torch's threads for ``jobs`` running jobs; torch's thread count after it."""
        import torch

        wanted, current = self.threads(jobs, others), torch.get_num_threads()
        if wanted is None and self.cap < self.cores:  # the environment's count, within this job's processes' share
            wanted = min(current, self.cap)
        if wanted is not None and wanted != current:
            torch.set_num_threads(wanted)
        now = torch.get_num_threads()
        if not self.used or self.used[-1] != now:
            self.used.append(now)
        return now

    def revise(self, force: bool = False) -> None:
        """Look again at the jobs and the load sharing the cores (at most every :data:`RECHECK_S` seconds) and take
        this job's share; said in the log when it changes."""
        now = time.monotonic()
        if not self.adapts or (not force and now - self.checked < RECHECK_S):
            return
        self.checked = now
        import torch

        others = self.load.cores_busy() if self.load is not None else None
        before, jobs = torch.get_num_threads(), live_jobs()
        after = self.apply(jobs, others)
        if after != before:
            load = f"; other processes kept {others:.1f} of them busy" if others is not None else ""
            log.info(
                "CPU threads %d → %d: %d aelab job%s on %d core%s%s",
                before, after, jobs, "s" if jobs != 1 else "", self.cores, "s" if self.cores != 1 else "", load,
            )  # fmt: skip


def choose(threads: Any, processes: int, deterministic: bool = False, environ: dict[str, str] | None = None) -> Plan:
    """The plan for a job: ``threads=`` as given; else, unless the user's environment sets a thread count, the
    usable cores shared by this job's ``processes`` (DDP ranks, joblib workers) and the other running jobs.

    ``deterministic`` (``trainer.deterministic=true``): a CPU reduction's result depends on how many threads share
    it, so the count is the usable cores over this job's processes alone, the same whatever else runs — the same
    command gives the same numbers, and a resumed run ends bit-identical to an uninterrupted one.
    """
    environ = os.environ if environ is None else environ
    cores = usable_cores()
    share = max(1, cores // max(1, processes))
    if threads is not None:
        return Plan(max(1, int(threads)), cores, cores, automatic=False)
    if deterministic:
        return Plan(None if any(key in environ for key in THREAD_SETTINGS) else share, cores, share, automatic=False)
    automatic = not any(key in environ for key in THREAD_SETTINGS)
    return Plan(None, cores, share, automatic)
