"""A grid shared by workers: each run is claimed by one process at a time, through a lock file in its run folder.

Any number of training processes (``python -m helpers.training``) started on one results folder share the grid.
Before a worker trains a run it creates ``<run folder>/claim.json`` with ``O_CREAT | O_EXCL``: the one atomic
step that only one process can win. While it trains, a thread touches the file every
:data:`HEARTBEAT_S` seconds; the claim is released (the file removed) when the run ends. A worker that dies
leaves its claim behind, and the claim goes *stale* once its heartbeat is older than ``stale_after_s``: another
worker then takes the run over, renaming the stale file away first (a rename succeeds for one process only), and
resumes it from its last checkpoint.

What the shared folder must offer: an atomic exclusive create and an atomic rename, as local disks and POSIX
network file systems (NFS v3+, Lustre, GPFS, CephFS) do. Google Drive, mounted in Colab, offers neither, and two
Colab runtimes would not see each other's writes in time: keep one runtime per grid there.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

CLAIM_NAME = "claim.json"
HEARTBEAT_S = 10.0   # how often a worker that trains a run touches its claim
STALE_AFTER_S = 60.0  # a claim whose heartbeat is older than this belongs to a dead worker
STALE_ENV = "KIT_CLAIM_STALE_S"  # a shorter staleness for tests (seconds)


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim is stale (``$KIT_CLAIM_STALE_S``, else 60)."""
    return float(os.environ.get(STALE_ENV) or STALE_AFTER_S)


def heartbeat_every() -> float:
    """Seconds between heartbeats: :data:`HEARTBEAT_S`, or a quarter of a shorter staleness."""
    return min(HEARTBEAT_S, stale_after() / 4)


def worker_name() -> str:
    """This process, as people read it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Claim:
    """This worker's claim on one run: a heartbeat while it is held, released by :meth:`release`.

    Use it as a context manager: ``with claim_run(folder) as held: ...``; ``held`` is None when another live
    worker holds the run.
    """

    def __init__(self, path: Path, heartbeat_s: float | None = None):
        self.path, self.heartbeat_s = path, heartbeat_s or heartbeat_every()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:  # the claim was taken over after a long stall: the next save will show it
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the claim."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path) -> bool:
    """Create the claim file if there is none: True for the one process whose create wins."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"worker": worker_name(), "claimed_at": time.time()}, out)
    return True


def holder(run_folder: str | os.PathLike) -> dict | None:
    """Who holds a run (``worker``, ``claimed_at``, ``age_s`` since its last heartbeat), or None."""
    path = Path(run_folder) / CLAIM_NAME
    try:
        age = time.time() - path.stat().st_mtime
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        return None if not path.exists() else {"worker": "?", "age_s": 0.0}
    return {**info, "age_s": age}


def _dead(worker: str) -> bool:
    """Whether ``host:pid`` names a process of this machine that no longer runs."""
    host, _, pid = str(worker).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_run(run_folder: str | os.PathLike, heartbeat_s: float | None = None) -> Claim | None:
    """Claim a run for this worker, taking over a stale claim; None when a live worker holds it.

    Args:
        run_folder: the run's folder (created if needed).
        heartbeat_s: seconds between heartbeats (default :func:`heartbeat_every`).

    A claim is stale when its heartbeat is older than :func:`stale_after`, or at once when its worker was a
    process of this machine that has ended.
    """
    folder = Path(run_folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_NAME
    if _create(path):
        return Claim(path, heartbeat_s)
    held = holder(folder)
    if held is None:  # released between our create and our look: try again
        return claim_run(folder, heartbeat_s)
    if held["age_s"] <= stale_after() and not _dead(held.get("worker", "")):
        return None
    try:  # stale: move it away; of several workers that try at once, one rename wins
        path.rename(folder / f"{CLAIM_NAME}.stale-{os.getpid()}")
    except FileNotFoundError:
        return None
    print(f"Taking over {folder.name}: its worker {held.get('worker', '?')} stopped (no heartbeat for "
          f"{held['age_s']:.0f} s).", flush=True)
    for stale in folder.glob(f"{CLAIM_NAME}.stale-*"):
        stale.unlink(missing_ok=True)
    return Claim(path, heartbeat_s) if _create(path) else None


def in_shard(index: int, shard: tuple[int, int] | None) -> bool:
    """Whether grid cell ``index`` belongs to shard ``(i, n)`` (cells i, i + n, i + 2n, ...); None: every cell."""
    return shard is None or index % shard[1] == shard[0]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 ≤ I < N) as ``(I, N)``; None or "" for no shard.

    Raises:
        ValueError: not of that form; the message shows one that is.
    """
    if not text:
        return None
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r} is not I/N with 0 ≤ I < N, e.g. 0/4 for the first of four shards "
                         f"(a Slurm array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
    return index, count
