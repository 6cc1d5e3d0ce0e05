"""A run's checkpoints and records, behind the one object that :func:`helpers.training.engine.fit` calls.

:class:`Checkpointer` knows where a run's files are and when each is written:

- ``finished_earlier``: the result of a run that finished with the same settings (it is then skipped);
- ``resume``: go on from the newest readable ``last.pt`` (in the checkpoint folder, e.g. on Drive, in this
  runtime's local copy of it, or in ``<run>/checkpoints``), within an epoch if it was saved there;
  a checkpoint made with other settings is never resumed silently (:class:`SettingsChanged`);
- ``start_epoch`` and ``maybe_save_mid_epoch``: where an epoch starts, and ``last.pt`` every
  ``checkpoint_minutes`` within it;
- ``end_epoch``: ``best.pt`` when the validation Dice is the best so far, then ``last.pt``, ``history.csv``, and
  TensorBoard event files where ``tensorboard`` is installed (:mod:`helpers.training.tensorboard`);
- ``finish``: ``done.json``; a finished run keeps ``best.pt`` only (``keep_last`` keeps ``last.pt`` too).

Each file is written atomically (:mod:`helpers.training.checkpoints`), through a local copy when the folder
is on Drive. A write that keeps failing stops training, or with ``local_fallback`` goes on with the local
copies only, loudly. Under torchrun only rank 0 writes.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from helpers import paths
from helpers.training import devices, runs, stops
from helpers.training.checkpoints import (
    CheckpointError,
    CheckpointWriteError,
    load_latest,
    make_state,
    restore_state,
    save_checkpoint,
    save_weights_atomic,
)
from helpers.training.state import EpochProgress, RunProgress, RunState
from helpers.training.tensorboard import EpochBoard

Callback = Callable[[str, list[dict]], object]  # called as callback(run_id, history) after every epoch


class SettingsChanged(RuntimeError):
    """A run folder's checkpoint or finished result was made with other settings than the ones asked for."""


class Checkpointer:
    """Resume, checkpoints, history and result of one run.

    Args:
        spec: the run.
        checkpoint_dir: where last.pt / best.pt go (e.g. on Drive); default ``<run folder>/checkpoints``.
        checkpoint_minutes: also save last.pt within an epoch this often (None: after every epoch only).
        keep_last: keep last.pt when the run has finished (default: best.pt only, a third of the size).
        local_fallback: when writes to ``checkpoint_dir`` keep failing, go on with checkpoints on local disk.
        callbacks: called after every epoch (rank 0) as ``callback(run_id, history)``.
    """

    def __init__(self, spec: runs.RunSpec, *, checkpoint_dir: str | os.PathLike | None = None,
                 checkpoint_minutes: float | None = None, keep_last: bool = False,
                 local_fallback: bool = False, callbacks: Sequence[Callback] = ()):
        self.spec = spec
        self.run_id = runs.run_id(spec)
        self.folder = runs.run_dir(spec)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else self.folder / "checkpoints"
        self.local_dir = paths.mirror(self.checkpoint_dir)  # this runtime's copy of a Drive folder, or None
        self.checkpoint_minutes = checkpoint_minutes
        self.keep_last = keep_last
        self.local_fallback = local_fallback
        self.callbacks = tuple(callbacks)
        self.board = EpochBoard(self.folder)  # TensorBoard event files, where tensorboard is installed
        self.progress = RunProgress()
        self.local_only = False    # a checkpoint went to local disk only (local_fallback): keep them all
        self.status = "trained"    # or "resumed"
        self.last_save = time.monotonic()

    # ---- before training ----------------------------------------------------------------------------------

    def start_over(self) -> None:
        """Delete the run's history, result and checkpoints, local copies too (config.json is rewritten)."""
        for name in ("history.csv", "done.json"):
            (self.folder / name).unlink(missing_ok=True)
        shutil.rmtree(self.board.folder, ignore_errors=True)  # TensorBoard's event files
        places = {self.folder / "checkpoints", self.checkpoint_dir}
        for where in places | {paths.mirror(p) for p in places if paths.mirror(p)}:
            for file in where.glob("*.pt") if where.is_dir() else ():
                file.unlink()

    def finished_earlier(self) -> dict | None:
        """The result of the run if it finished earlier with these settings, else None; the callbacks see
        its history.

        Raises:
            SettingsChanged: it finished with other settings.
        """
        if not runs.is_finished(self.folder):
            return None
        if changed := runs.differing_settings(runs.load_run_config(self.folder), self.spec):
            raise SettingsChanged(
                f"{self.folder} holds a finished run made with other settings ({', '.join(changed)}); "
                f"start it over (RESTART = True, or --restart) or ask for the recorded settings.")
        done = runs.load_done(self.folder)
        print(f"{self.run_id}: finished earlier with these settings ({done['epochs']} epochs, best val Dice "
              f"{done['best_val_dice']:.4f} at epoch {done['best_epoch']}); skipped.")
        for callback in self.callbacks:
            callback(self.run_id, runs.read_history(self.folder).to_dict("records"))
        return {"run_id": self.run_id, "run_dir": str(self.folder), **done, "status": "skipped"}

    def resume(self, run: RunState) -> RunProgress:
        """Load the newest readable checkpoint into ``run``, if there is one; record ``config.json`` (rank 0).

        Returns:
            Where the run stands (nothing done yet for a fresh start).

        Raises:
            SettingsChanged: the checkpoint's recorded settings differ from the run's.
            CheckpointError: checkpoints exist but none of them is readable.
        """
        state, path = self._newest_checkpoint(run.device)
        if state is not None:
            if changed := runs.differing_settings(state["config"], self.spec):
                raise SettingsChanged(
                    f"{path} was written with other settings than this run's ({', '.join(changed)}), so it "
                    f"is not resumed. Start this run over (RESTART = True in the notebook, --restart on the "
                    f"command line), or ask for the settings it was made with.")
            info = restore_state(state, run.model, run.optimizer, run.scheduler, run.scaler)
            if run.average is not None:
                if "average" not in state:
                    raise CheckpointError(f"{path} holds no weight average, which this run keeps "
                                          f"(ema_epochs = {self.spec.ema_epochs}): start the run over.")
                run.average.load_state_dict(state["average"])
            self.progress = RunProgress(epochs_done=info["epoch"], history=info["history"],
                                        best=info["best_metric"], finished=state["finished"],
                                        batches=state["batches_done"], loss_sum=state["partial"][0],
                                        images=state["partial"][1])
            if run.dist.is_main:
                self._say_resumed(path)
        self.status = "resumed" if self.progress.started else "trained"
        self.last_save = time.monotonic()
        if run.dist.is_main:
            runs.write_json(self.folder / "config.json", run.config)
        return self.progress

    def _say_resumed(self, path: Path) -> None:
        done = self.progress.epochs_done
        at = f", batch {self.progress.batches} of epoch {done + 1}" if self.progress.batches else ""
        print(f"Resuming {self.run_id} from {path} (epoch {done} done{at}).")

    def _places(self) -> list[Path]:
        """Where the checkpoints may be: their folder, this runtime's local copy, ``<run>/checkpoints``."""
        found = (self.checkpoint_dir, self.local_dir, self.folder / "checkpoints")
        return list(dict.fromkeys(p for p in found if p))

    def _newest_checkpoint(self, device: torch.device) -> tuple[dict | None, Path | None]:
        found, problems = [], []
        for place in self._places():  # one unreadable place (a half-synced last.pt on Drive) stops nothing
            try:
                found.append(load_latest(place, device))
            except CheckpointError as err:
                problems.append(str(err))
        readable = [(state, path) for state, path in found if state]
        if problems and not readable:
            raise CheckpointError(" | ".join(problems))
        return max(readable, key=lambda sp: (sp[0]["epoch"], sp[0]["batches_done"]), default=(None, None))

    # ---- while training -----------------------------------------------------------------------------------

    def start_epoch(self, run: RunState, epoch: int) -> EpochProgress:
        """Count the epoch from where a mid-epoch checkpoint stopped (the first epoch of a resumed run),
        else from its first batch; the training loader is already set to that batch."""
        loader = run.loaders.train
        so_far = self.progress
        tally = EpochProgress(epoch=epoch, batches=so_far.batches, total=so_far.batches + len(loader),
                              loss_sum=torch.tensor(so_far.loss_sum, device=run.device), images=so_far.images,
                              look_every=max(1, len(loader) // 10))
        so_far.batches = 0  # later epochs start at their first batch
        so_far.loss_sum = 0.0
        so_far.images = 0
        return tally

    def mid_epoch_due(self) -> bool:
        """True when ``checkpoint_minutes`` have passed since the last save, or a signal asked to
        stop (:mod:`helpers.training.stops`)."""
        minutes = self.checkpoint_minutes
        due = minutes is not None and time.monotonic() - self.last_save > minutes * 60
        return due or stops.requested() is not None

    def maybe_save_mid_epoch(self, run: RunState, tally: EpochProgress) -> None:
        """Save last.pt within an epoch when it is due (rank 0): a resume goes on after its last
        batch.

        Raises:
            stops.Preempted: a signal asked to stop; last.pt was saved first.
        """
        if self.mid_epoch_due() and run.dist.is_main:
            self._save_last(run, tally.epoch - 1, batches=tally.batches,
                            partial=[float(tally.loss_sum), tally.images])
        stops.stop_if_requested(f"{self.run_id} saved in {self.checkpoint_dir / 'last.pt'} at "
                                f"epoch {tally.epoch}, batch {tally.batches} of {tally.total}")

    def end_epoch(self, run: RunState) -> None:
        """After an epoch (its row appended to the history): best.pt if its Dice is the best so far, then
        last.pt and history.csv, then the TensorBoard event files and the callbacks (rank 0)."""
        so_far = self.progress
        row = so_far.history[-1]
        so_far.epochs_done = row["epoch"]
        improved = row["val_dice"] > so_far.best
        so_far.best = max(so_far.best, row["val_dice"])
        if not run.dist.is_main:
            return
        if improved:  # best.pt before last.pt: a crash in between only repeats this epoch
            self._save("best.pt", lambda path, local: save_weights_atomic(
                run.evaluated, path, metric=row["val_dice"], epoch=row["epoch"], run_id=self.run_id,
                local_copy=local))
        self._save_last(run, row["epoch"])
        runs.write_history(self.folder, so_far.history)
        self.board.log_epoch(run, row, last=so_far.finished)  # after last.pt: a logged epoch never trains again
        for callback in self.callbacks:
            callback(self.run_id, so_far.history)

    def _save_last(self, run: RunState, epoch: int, batches: int = 0, partial: Sequence = (0.0, 0)) -> None:
        """last.pt: ``epoch`` done, and ``batches`` batches of the next (their loss sum and image count)."""
        so_far = self.progress
        state = make_state(run.model, run.optimizer, run.scheduler, run.scaler, epoch=epoch,
                           best_metric=so_far.best, history=so_far.history, config=run.config)
        state.update(batches_done=batches, partial=list(partial), finished=so_far.finished)
        if run.average is not None:
            state["average"] = run.average.state_dict()
        self._save("last.pt", lambda path, local: save_checkpoint(state, path, local_copy=local))
        self.last_save = time.monotonic()

    def _save(self, name: str, save: Callable[[Path, Path | None], object]) -> None:
        """``save(path, local_copy)`` into the checkpoint folder; with ``local_fallback``, else
        locally.

        Raises:
            stops.TakenOver: a save guard stopped the run first (another worker took it over).
        """
        stops.check_guards(self.folder)
        try:
            save(self.checkpoint_dir / name, self.local_dir)
        except CheckpointWriteError as err:
            local = self.local_dir or self.folder / "checkpoints"
            if not self.local_fallback or local == self.checkpoint_dir:
                raise
            if self.local_dir is None:
                save(local / name, None)
            self.local_only = True
            message = (f"⚠ LOCAL_FALLBACK: {name} is only on this runtime's disk ({local}); a disconnect "
                       f"loses it. Writing {self.checkpoint_dir / name} failed: {err.__cause__ or err}")
            print(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # ---- after training -----------------------------------------------------------------------------------

    def finish(self, run: RunState) -> dict:
        """Write history.csv and done.json (rank 0); a finished run keeps best.pt only, unless ``keep_last``.

        Returns:
            ``run_id``, ``run_dir``, ``status`` (trained or resumed) and the fields of done.json.
        """
        history = self.progress.history
        done = runs.summarize(history, len(history) < self.spec.num_epochs)
        if run.dist.is_main:
            stops.check_guards(self.folder)  # a run taken over is not marked done here
            runs.write_history(self.folder, history)
            if self.local_only:  # LOCAL_FALLBACK was used: say so where notebook 04 and a later runtime look
                local = self.local_dir or self.folder / "checkpoints"
                done["checkpoints"] = (f"local only, in {local}: copy them to {self.checkpoint_dir} before "
                                       f"this runtime ends")
                print(f"⚠ {self.run_id}: {done['checkpoints']}.")
            runs.write_json(self.folder / "done.json", done)
            self.board.close()
            if not self.keep_last and not self.local_only:
                self._drop_last()
        devices.barrier(run.dist)
        return {"run_id": self.run_id, "run_dir": str(self.folder), **done, "status": self.status}

    def _drop_last(self) -> None:
        """Delete last.pt (and its previous copies) everywhere: a finished run keeps best.pt only."""
        for place in self._places():
            for name in ("last.pt", "last.prev.pt"):
                try:
                    (place / name).unlink(missing_ok=True)
                except OSError as err:  # e.g. Drive gone: the file stays, which costs space, not results
                    print(f"Could not delete {place / name} ({err}); delete it by hand to free its space.")
