"""One preparation at a time: workers that start together on a fresh home prepare each dataset once.

:func:`preparing` holds an exclusive POSIX lock on ``<prepared>/.<name>.lock`` while one process
gets and prepares a dataset. The others wait for it, saying so in one line, and then use its
preparation. The kernel drops a lock when its process dies, so the preparation of a worker that was
killed is taken over by the next one at once; a worker that is alive but stuck is waited for
``$KIT_PREP_WAIT_S`` seconds (default 3 hours), then named in the error. Where the file system has
no locks (Google Drive in Colab: one runtime per home), a preparation goes on without one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from helpers.data.isic import DataError

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks
    fcntl = None

WAIT_ENV = "KIT_PREP_WAIT_S"
WAIT_S = 3 * 3600.0
POLL_S = 0.2
BUSY = (errno.EAGAIN, errno.EACCES)  # what a lock held by another process answers


def lock_path(out_dir: Path) -> Path:
    """The lock file of a prepared dataset's folder: beside it, hidden."""
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def preparing(out_dir: str | os.PathLike, wait_s: float | None = None) -> Iterator[None]:
    """Hold the preparation of ``out_dir`` for this process; wait while another process holds it.

    Raises:
        DataError: another process held it for longer than ``wait_s`` (default
            ``$KIT_PREP_WAIT_S``); the message names it, the lock file and what to do.
    """
    path = lock_path(Path(out_dir))
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        limit = float(os.environ.get(WAIT_ENV) or WAIT_S) if wait_s is None else wait_s
        if _acquire(handle, path, limit):
            os.ftruncate(handle, 0)
            holder = f"{socket.gethostname()}:{os.getpid()} since {time.ctime()}\n"
            os.pwrite(handle, holder.encode(), 0)
        yield
    finally:
        os.close(handle)  # closing drops the lock


def _acquire(handle: int, path: Path, wait_s: float) -> bool:
    """Take the lock, waiting for another holder up to ``wait_s``; False where locks are not
    supported."""
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno not in BUSY:  # no locks on this file system: go on without
                return False
        holder = _holder(path)
        if time.monotonic() > deadline:
            raise DataError(f"{path.name[1:-5]}: another process ({holder}) has been preparing "
                            f"it for longer than {wait_s:.0f} s (lock file {path}). If that "
                            f"process is stuck, stop it and run again (its lock goes with it); to "
                            f"wait longer, set {WAIT_ENV}.")
        if not said:
            print(f"Waiting for another process ({holder}) that prepares {path.name[1:-5]}; its "
                  f"preparation is used when it is done.", flush=True)
            said = True
        time.sleep(POLL_S)


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"
