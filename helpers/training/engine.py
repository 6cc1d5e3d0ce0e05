"""The engine around the loop: one run trained to the end, resumed after a disconnect, or skipped.

:func:`fit` builds a run from its spec (:mod:`helpers.training.state`) and calls the loop a student
reads (:mod:`helpers.training.loop`) once per epoch, through its hooks: the loader wrapped in a
progress bar, ``on_batch`` for the divergence check and mid-epoch checkpoints, ``reduce`` for the
sum over processes under torchrun. Around it: resume, checkpoints and their Drive copies
(:class:`~helpers.training.checkpointer.Checkpointer`), the sampler's epoch, early stopping and the
history. The grid of runs: :mod:`helpers.training.grid`.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from helpers.data.loaders import to_model_input
from helpers.data.prep import Prepared
from helpers.training import devices, loop, runs
from helpers.training.checkpointer import Callback, Checkpointer
from helpers.training.state import EpochProgress, RunState, build_run, init_from_imagenet


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; nothing from that epoch was saved."""


def train_epoch(run: RunState, saver: Checkpointer, epoch: int,
                show: bool = True) -> tuple[float, float]:
    """One epoch of :func:`helpers.training.loop.train_one_epoch` on the run's objects, from where a
    mid-epoch checkpoint stopped (the first epoch of a resumed run), else from its first batch.

    Returns:
        The mean training loss over all processes, and images per second.
    """
    loader = run.loaders.train
    loader.sampler.set_epoch(epoch, start=saver.progress.batches * loader.batch_size)  # the order
    tally = saver.start_epoch(run, epoch)
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show,
               initial=tally.batches, total=tally.total)
    loop.train_one_epoch(
        run.net, bar, run.criterion, run.optimizer, run.device, scaler=run.scaler,
        scheduler=run.scheduler, amp_dtype=run.dtype, on_batch=_after_batch(run, saver, tally, bar),
        to_input=lambda images: to_model_input(images, run.device, torch.channels_last))
    return tally.result(run.dist)


def _after_batch(run: RunState, saver: Checkpointer, tally: EpochProgress, bar) -> loop.OnBatch:
    """The loop's ``on_batch`` hook: count the batch and move the weights' average; every tenth of
    the epoch (reading the loss waits for the GPU) check it, show it, and save last.pt when
    ``checkpoint_minutes`` are due."""
    def after_batch(step: int, loss: torch.Tensor, count: int) -> None:
        tally.add(loss, count)
        if run.average is not None:
            run.average.update(run.model)  # before any mid-epoch save: a resume is exact
        if tally.time_to_look() or saver.mid_epoch_due():
            where = f"epoch {tally.epoch} (training, by batch {tally.batches})"
            check_finite(run, saver, tally.mean_loss(), where)
            bar.set_postfix(loss=f"{tally.mean_loss():.4f}")
            saver.maybe_save_mid_epoch(run, tally)
    return after_batch


def validate(run: RunState) -> tuple[float, float]:
    """:func:`helpers.training.loop.validate` of the run's evaluated model (the weights' average
    when there is one) on the validation images, summed over processes."""
    return loop.validate(run.evaluated, run.loaders.val, run.criterion, run.device, amp_dtype=run.dtype,
                         to_input=lambda images: to_model_input(images, run.device),
                         reduce=lambda totals: devices.all_reduce_sum(totals, run.dist))


def check_finite(run: RunState, saver: Checkpointer, loss: float, where: str) -> None:
    """Stop the run with :class:`TrainingDiverged` when ``loss`` is NaN or infinite."""
    if math.isfinite(loss):
        return
    history = saver.progress.history
    last = f"epoch {history[-1]['epoch']}" if history else "none yet"
    raise TrainingDiverged(
        f"Run {run.run_id}: the loss became NaN/inf in {where}. Nothing from this epoch was "
        f"saved; the last good checkpoint ({last}) and best.pt in {saver.checkpoint_dir} are "
        f"intact. Lower the learning rate (lr={run.optimizer.defaults['lr']}) or turn AMP off, "
        f"then run again: it resumes from that checkpoint.")


def out_of_patience(history: list[dict], patience: int | None) -> bool:
    """Early stopping: the best validation Dice is ``patience`` or more epochs old (None: never)."""
    best = max(history, key=lambda row: row["val_dice"])  # the first of equals, as in done.json
    return patience is not None and history[-1]["epoch"] - best["epoch"] >= max(patience, 1)


def fit(spec: runs.RunSpec, prepared: Prepared, *, num_workers: int = 0,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_minutes: float | None = None,
        restart: bool = False, keep_last: bool = False, local_fallback: bool = False,
        gpu_memory_gb: float | None = None, callbacks: Sequence[Callback] = (),
        progress: bool = True) -> dict:
    """Train one run to the end, resuming it if it was interrupted; skip it if it has finished.

    Every setting that changes the result is in ``spec`` (from
    :func:`helpers.training.runs.make_spec`); the keyword arguments only say how to run it.

    Args:
        spec, prepared: the run, and the prepared dataset it names.
        num_workers: DataLoader worker processes.
        checkpoint_dir, checkpoint_minutes, keep_last, local_fallback, callbacks: how checkpoints
            are saved and who hears of each epoch
            (:class:`~helpers.training.checkpointer.Checkpointer`).
        restart: start the run over, deleting its history and checkpoints, instead of resuming or
            skipping it.
        gpu_memory_gb: on CUDA, use at most this many GB of GPU memory (15: a T4's; None: no cap).
        progress: show progress bars.

    Returns:
        ``run_id``, ``run_dir``, ``status`` (trained, resumed or skipped) and the fields of
        done.json.

    Raises:
        TrainingDiverged: the loss became NaN/inf (checkpoints of earlier epochs stay as they were).
        SettingsChanged: the run folder holds a result or checkpoint made with other settings.
        CheckpointWriteError: a checkpoint could not be written (e.g. Drive full), and no
            ``local_fallback``.
    """
    saver = Checkpointer(spec, checkpoint_dir=checkpoint_dir, checkpoint_minutes=checkpoint_minutes,
                         keep_last=keep_last, local_fallback=local_fallback, callbacks=callbacks)
    if restart:
        saver.start_over()
    if (earlier := saver.finished_earlier()) is not None:
        return earlier
    run = build_run(spec, prepared, checkpoint_dir=saver.checkpoint_dir, num_workers=num_workers,
                    gpu_memory_gb=gpu_memory_gb)
    so_far = saver.resume(run)  # epochs done, their history and best Dice (none for a fresh start)
    if spec.pretrained and not so_far.started:
        init_from_imagenet(run.model)
    show = progress and run.dist.is_main
    epochs = range(so_far.epochs_done + 1, 1 if so_far.finished else spec.num_epochs + 1)
    bar = tqdm(epochs, desc=run.run_id, disable=not show, initial=so_far.epochs_done,
               total=spec.num_epochs)
    for epoch in bar:
        _one_epoch(run, saver, epoch, show)
        bar.set_postfix(val_dice=f"{so_far.history[-1]['val_dice']:.4f}", best=f"{so_far.best:.4f}")
        if so_far.finished:
            break
    bar.close()
    return saver.finish(run)  # done.json


def _one_epoch(run: RunState, saver: Checkpointer, epoch: int, show: bool) -> None:
    """Train and validate one epoch, append its row to the history, then save (best.pt, last.pt)."""
    started = time.perf_counter()
    devices.reset_peak_memory(run.device)
    train_loss, images_per_s = train_epoch(run, saver, epoch, show)
    val_loss, val_dice = validate(run)
    check_finite(run, saver, val_loss, f"epoch {epoch} (validation)")  # NaN weights, finite loss
    so_far = saver.progress
    so_far.history.append({
        "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
        "lr": run.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - started,
        "images_per_s": images_per_s, "peak_gpu_gb": devices.peak_memory_gb(run.device)})
    so_far.finished = (epoch == run.spec.num_epochs
                       or out_of_patience(so_far.history, run.spec.early_stopping))
    saver.end_epoch(run)  # best.pt when the Dice is the best so far, last.pt, history.csv
