"""A grid shared by workers: each run is claimed by one process at a time, through a claim file in
its run folder.

Any number of training processes (``python -m helpers.training``) started on one results folder
share the grid. Before a worker trains a run it writes ``<run folder>/claim.json`` (its name, and a
token of its own). While it trains, a thread touches the file every :data:`HEARTBEAT_S` seconds; the
claim is released (the file removed) when the run ends. A worker that dies leaves its claim behind,
and the claim goes *stale* once its heartbeat is older than ``stale_after_s``: another worker then
takes the run over and resumes it from its last checkpoint.

Exactly one worker wins a claim, whatever the interleaving: every claim, takeover and release
happens under an exclusive lock that the file system keeps (``fcntl.lockf`` on
``<runs>/.claims/<run>.lock``; the kernel drops it when its process dies, so it never goes stale
itself). Where the file system has no locks, a takeover moves the stale claim to a name of its own
and checks that what it moved is the claim it read (inode and content), putting it back otherwise,
and a fresh claim is an exclusive create.

A claim's age is the time since its heartbeat by the clock, or the time this worker has seen it
unchanged, whichever is longer: a claim that cannot be read, or whose time lies in the future
(clocks of two hosts that disagree), is stale once it has not changed for ``stale_after_s`` since
this worker first saw it.

A worker whose claim was taken over (its heartbeat finds the file gone, or another worker's) stops
training that run before its next save: :func:`check_held` raises :class:`ClaimLost`.

What the shared folder must offer: atomic renames and exclusive creates, and POSIX locks, as local
disks and POSIX network file systems (NFS v3+ with its lock service, Lustre, GPFS, CephFS) do.
Google Drive, mounted in Colab, offers none of these, and two Colab runtimes would not see each
other's writes in time: keep one runtime per grid there.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; the rename check alone fences a takeover
    fcntl = None

CLAIM_NAME = "claim.json"
LOCK_FOLDER = ".claims"  # beside the run folders: <runs>/.claims/<run>.lock, never removed
HEARTBEAT_S = 10.0   # how often a worker that trains a run touches its claim
STALE_AFTER_S = 60.0  # a claim whose heartbeat is older than this belongs to a dead worker
STALE_ENV = "KIT_CLAIM_STALE_S"  # a shorter staleness for tests (seconds)

_first_seen: dict[tuple, float] = {}  # (claim file, what it was) → when this process saw it so
_held: dict[Path, Claim] = {}         # run folder → this process's claim on it


class ClaimLost(RuntimeError):
    """Another worker took over a run this worker was training: it stops training that run."""


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim is stale (``$KIT_CLAIM_STALE_S``, else
    60)."""
    return float(os.environ.get(STALE_ENV) or STALE_AFTER_S)


def heartbeat_every() -> float:
    """Seconds between heartbeats: :data:`HEARTBEAT_S`, or a quarter of a shorter staleness."""
    return min(HEARTBEAT_S, stale_after() / 4)


def worker_name() -> str:
    """This process, as people read it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Claim:
    """This worker's claim on one run: a heartbeat while it is held, released by :meth:`release`.

    Use it as a context manager: ``with claim_run(folder) as held: ...``; ``held`` is None when
    another live worker holds the run.
    """

    def __init__(self, path: Path, token: str, heartbeat_s: float | None = None):
        self.path, self.token, self.heartbeat_s = path, token, heartbeat_s or heartbeat_every()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {path.parent.name}",
                                        daemon=True)
        _held[path.parent.resolve()] = self
        self._thread.start()

    def held(self) -> bool:
        """Whether the claim file is still this worker's (False once another worker took the run
        over)."""
        if not self.lost and _token(self.path) != self.token:
            self.lost = True
        return not self.lost

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():  # taken over after a long stall: the next save stops the run
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def check(self) -> None:
        """Raise :class:`ClaimLost` when another worker has taken this run over."""
        if not self.held():
            raise ClaimLost(f"{self.path.parent.name}: another worker took this run over (its "
                            f"claim {self.path} is no longer this worker's, {worker_name()}), so "
                            f"this worker stops training it without saving; the other worker goes "
                            f"on from the last checkpoint.")

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, if it is still this worker's."""
        self._stop.set()
        self._thread.join(timeout=5)
        _held.pop(self.path.parent.resolve(), None)
        with _locked(self.path.parent):
            if _token(self.path) == self.token:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_held(run_folder: str | os.PathLike) -> None:
    """Before a save: raise :class:`ClaimLost` when this process claimed the run and another worker
    took it over (nothing happens for a run this process did not claim, e.g. in a notebook)."""
    claim = _held.get(Path(run_folder).resolve())
    if claim is not None:
        claim.check()


def lost_message(run_folder: str | os.PathLike) -> str | None:
    """Why this process must stop training a run it claimed (another worker took it over), or
    None."""
    try:
        check_held(run_folder)
    except ClaimLost as err:
        return str(err)
    return None


@contextlib.contextmanager
def _locked(run_folder: Path) -> Iterator[None]:
    """Hold the run's claim lock (a POSIX lock the kernel drops when its process dies); without lock
    support (Windows, some network mounts), go on without it."""
    if fcntl is None:
        yield
        return
    folder = run_folder.parent / LOCK_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder / f"{run_folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # no locks on this file system
            fcntl.lockf(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing drops the lock


def _read(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The claim file's bytes and status, read through one handle; None when there is none."""
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None


def _token(path: Path) -> str | None:
    found = _read(path)
    try:
        return json.loads(found[0]).get("token") if found else None
    except (ValueError, AttributeError):
        return None


def _age(path: Path, raw: bytes, status: os.stat_result) -> float:
    """Seconds since the claim's heartbeat by the clock, or since this process first saw it as it is
    now, whichever is longer (an unreadable or future-dated claim ages from when it was first
    seen)."""
    key = (str(path), status.st_ino, status.st_mtime_ns, hashlib.sha1(raw).hexdigest())
    first = _first_seen.setdefault(key, time.monotonic())
    return max(time.time() - status.st_mtime, time.monotonic() - first)


def holder(run_folder: str | os.PathLike) -> dict | None:
    """Who holds a run (``worker``, ``claimed_at``, ``age_s`` since its last heartbeat), or None.

    A claim that cannot be read is held by worker ``"?"``; its age counts as :func:`_age` says.
    """
    path = Path(run_folder) / CLAIM_NAME
    found = _read(path)
    if found is None:
        return None
    raw, status = found
    try:
        info = json.loads(raw)
        info = info if isinstance(info, dict) else {"worker": "?"}
    except ValueError:
        info = {"worker": "?"}
    return {**info, "age_s": _age(path, raw, status)}


def _dead(worker: str) -> bool:
    """Whether ``host:pid`` names a process of this machine that no longer runs."""
    host, _, pid = str(worker).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _create(path: Path, token: str) -> bool:
    """Create the claim file if there is none, complete at once: True for the one process whose
    create wins."""
    text = json.dumps({"worker": worker_name(), "claimed_at": time.time(), "token": token})
    tmp = path.with_name(f".{CLAIM_NAME}.{token}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)  # fails when a claim exists: never replaces one
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network mounts): an exclusive create
        return _create_exclusive(path, text)
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    return True


def _take_over(path: Path, seen: tuple[bytes, os.stat_result], token: str) -> bool:
    """Replace the stale claim ``seen`` by this worker's: move it to a name of its own, check that
    what was moved is that claim (inode and content), and put it back when it is not (another
    worker's fresh claim)."""
    moved = path.with_name(f"{CLAIM_NAME}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return False
    found = _read(moved)
    same = found is not None and found[0] == seen[0] and found[1].st_ino == seen[1].st_ino
    if not same:
        with contextlib.suppress(OSError):
            os.link(moved, path)  # put it back, never over a claim made since
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return _create(path, token)


def claim_run(run_folder: str | os.PathLike, heartbeat_s: float | None = None) -> Claim | None:
    """Claim a run for this worker, taking over a stale claim; None when a live worker holds it.

    Args:
        run_folder: the run's folder (created if needed).
        heartbeat_s: seconds between heartbeats (default :func:`heartbeat_every`).

    A claim is stale when its heartbeat is older than :func:`stale_after` (see :func:`_age`), or at
    once when its worker was a process of this machine that has ended.
    """
    folder = Path(run_folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, token = folder / CLAIM_NAME, uuid.uuid4().hex
    with _locked(folder):
        seen = None
        for _ in range(3):  # a claim released between our create and our look: create again
            if _create(path, token):
                return Claim(path, token, heartbeat_s)
            if (seen := _read(path)) is not None:
                break
        if seen is None:
            return None
        held = holder(folder) or {}
        if held.get("age_s", 0.0) <= stale_after() and not _dead(held.get("worker", "")):
            return None
        if not _take_over(path, seen, token):
            return None
    print(f"Taking over {folder.name}: its worker {held.get('worker', '?')} stopped (no heartbeat "
          f"for {held['age_s']:.0f} s).", flush=True)
    return Claim(path, token, heartbeat_s)


def in_shard(index: int, shard: tuple[int, int] | None) -> bool:
    """Whether grid cell ``index`` belongs to shard ``(i, n)`` (cells i, i + n, i + 2n, ...); None:
    every cell."""
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
