"""Stopping a run before its end, from outside the loop: a scheduler's signal, or another worker.

- **Signals.** Under :func:`on_signals` (the training command line), SIGTERM (a scheduler's
  preemption, ``kill``) and SIGUSR1 (Slurm's ``--signal``, a warning before the time limit) do not
  kill the process: the run in training saves ``last.pt`` at its next batch (a mid-epoch checkpoint
  a resume goes on from), releases its claim, and the command prints one line saying how to resume
  and exits with :data:`EXIT_CODE` (75, "try again"). Further signals wait for that save (a
  scheduler may send SIGTERM to every process of a job, and the batch script pass it on as well).
- **Save guards.** Before every save the checkpointer asks the :data:`guards` (e.g. "is this run
  still this worker's?", :func:`helpers.training.claims.lost_message`); one that answers with a
  message stops the run without saving (:class:`TakenOver`), and the grid goes on with the others.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_CODE = 75  # BSD's EX_TEMPFAIL: stopped early, everything saved; run the same command again
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))

# guard(run folder) → why the run must stop, or None
guards: list[Callable[[Path], str | None]] = []
_received: list[str] = []  # the signal that asked this process to stop (at most one)


class RunStopped(RuntimeError):
    """A run stopped before its end (the message says why and what happens next)."""


class Preempted(RunStopped):
    """A signal asked the process to stop: the run saved ``last.pt`` first (exit with
    :data:`EXIT_CODE`)."""


class TakenOver(RunStopped):
    """A save guard stopped the run before a save: another worker took it over."""


def requested() -> str | None:
    """The name of the signal that asked this process to stop (e.g. ``"SIGTERM"``), or None."""
    return _received[0] if _received else None


def _on_signal(number: int, frame) -> None:
    if not _received:  # the first one counts; the others wait for its save
        _received.append(signal.Signals(number).name)


@contextlib.contextmanager
def on_signals() -> Iterator[None]:
    """While inside: SIGTERM and SIGUSR1 ask the run in training to save and stop (see the module's
    docstring); outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {each: signal.signal(each, _on_signal) for each in SIGNALS}
    try:
        yield
    finally:
        for each, handler in before.items():
            signal.signal(each, handler)
        _received.clear()


def check_guards(run_folder: Path) -> None:
    """Before a save: raise :class:`TakenOver` when a guard says the run must stop."""
    for guard in guards:
        if why := guard(run_folder):
            raise TakenOver(why)


def add_guard(guard: Callable[[Path], str | None]) -> None:
    """Ask ``guard`` before every save of this process (once, however often it is added)."""
    if guard not in guards:
        guards.append(guard)


def stop_if_requested(where: str) -> None:
    """Raise :class:`Preempted` when a signal asked to stop; ``where`` says what was saved (or that
    nothing needed to be)."""
    if (name := requested()) is not None:
        raise Preempted(f"⏸ Stopped by {name} (process {os.getpid()}): {where}. Run the same "
                        f"command again to resume (exit code {EXIT_CODE}).")
