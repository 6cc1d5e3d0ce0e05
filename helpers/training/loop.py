"""The training loop: notebook 02's five steps on every batch, plus epochs, validation and saving.

``train_one_epoch`` is 02's step written out (forward, loss, ``zero_grad``, ``backward``, optimiser ``step``),
mixed precision a thin wrapper around it: ``run.autocast()`` and the gradient ``scaler`` (fp16 on a T4; a
pass-through in bf16 and fp32). ``validate`` scores the validation images (mean per-image Dice); ``fit`` does
both every epoch. The run's parts: :mod:`helpers.training.state`; resume, checkpoints and Drive copies:
:class:`~helpers.training.checkpointer.Checkpointer`; the grid of runs: :mod:`helpers.training.grid`.
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
from helpers.training import devices, runs
from helpers.training.checkpointer import Callback, Checkpointer
from helpers.training.metrics import MetricAccumulator, dice
from helpers.training.state import RunState, build_run, init_from_imagenet


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; nothing from that epoch was saved."""


def train_one_epoch(run: RunState, saver: Checkpointer, epoch: int, show: bool = True) -> tuple[float, float]:
    """Notebook 02's five steps on every training batch; returns (mean loss over all processes, images/s)."""
    run.net.train()
    tally = saver.start_epoch(run, epoch)  # from the first batch, or where a mid-epoch checkpoint stopped
    bar = tqdm(run.loaders.train, desc=f"epoch {epoch}", leave=False, disable=not show,
               initial=tally.batches, total=tally.total)
    for images, masks in bar:  # uint8 (B, H, W, 3); (B, 1, H, W)
        images = to_model_input(images, run.device, torch.channels_last)  # float (B, 3, H, W)
        masks = masks.to(run.device, non_blocking=True)
        with run.autocast():
            logits = run.net(images)                # 1 forward: (B, 1, H, W), or one per head
        loss = run.criterion(logits, masks)         # 2 loss, in fp32
        run.optimizer.zero_grad(set_to_none=True)   # 3 forget the last step's gradients
        run.scaler.scale(loss).backward()           # 4 backward (scaled up in fp16, so they do not underflow)
        run.scaler.step(run.optimizer)              # 5 AdamW updates the weights
        run.scaler.update()
        run.scheduler.step()                        # the learning rate of the next step
        tally.add(loss.detach(), len(masks))
        if tally.time_to_look() or saver.mid_epoch_due():  # reading the loss waits for the GPU: not always
            check_finite(run, saver, tally.mean_loss(), f"epoch {epoch} (training, by batch {tally.batches})")
            bar.set_postfix(loss=f"{tally.mean_loss():.4f}")
            saver.maybe_save_mid_epoch(run, tally)  # last.pt every checkpoint_minutes
    return tally.result(run.dist)


@torch.no_grad()
def validate(run: RunState) -> tuple[float, float]:
    """Mean validation loss and mean per-image Dice, over every process's share of the validation images."""
    run.model.eval()
    metrics = MetricAccumulator()
    loss_sum = torch.zeros((), device=run.device)
    for images, masks in run.loaders.val:
        masks = masks.to(run.device, non_blocking=True)  # (B, 1, H, W)
        with run.autocast():
            logits = run.model(to_model_input(images, run.device))  # (B, 1, H, W)
        loss_sum += run.criterion(logits, masks) * len(masks)
        metrics.update(torch.sigmoid(logits.float()), masks)
    dice_sum = dice(*metrics.counts()).sum() if len(metrics) else torch.zeros((), device=run.device)
    count = torch.tensor(float(len(metrics)), device=run.device)
    totals = devices.all_reduce_sum(torch.stack([loss_sum, dice_sum.to(loss_sum), count]), run.dist)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def check_finite(run: RunState, saver: Checkpointer, loss: float, where: str) -> None:
    """Stop the run with :class:`TrainingDiverged` when ``loss`` is NaN or infinite."""
    if math.isfinite(loss):
        return
    history = saver.progress.history
    last = f"epoch {history[-1]['epoch']}" if history else "none yet"
    raise TrainingDiverged(
        f"Run {run.run_id}: the loss became NaN/inf in {where}. Nothing from this epoch was saved; the last "
        f"good checkpoint ({last}) and best.pt in {saver.checkpoint_dir} are intact. Lower the learning rate "
        f"(lr={run.optimizer.defaults['lr']}) or turn AMP off, then run again: it resumes from that "
        f"checkpoint.")


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

    Every setting that changes the result is in ``spec`` (from :func:`helpers.training.runs.make_spec`);
    the keyword arguments only say how to run it.

    Args:
        spec, prepared: the run, and the prepared dataset it names.
        num_workers: DataLoader worker processes.
        checkpoint_dir, checkpoint_minutes, keep_last, local_fallback, callbacks: how checkpoints are
            saved and who hears of each epoch (:class:`~helpers.training.checkpointer.Checkpointer`).
        restart: start the run over, deleting its history and checkpoints, instead of resuming or skipping it.
        gpu_memory_gb: on CUDA, use at most this many GB of GPU memory (15: a T4's; None: no cap).
        progress: show progress bars.

    Returns:
        ``run_id``, ``run_dir``, ``status`` (trained, resumed or skipped) and the fields of done.json.

    Raises:
        TrainingDiverged: the loss became NaN/inf (checkpoints of earlier epochs stay as they were).
        SettingsChanged: the run folder holds a result or checkpoint made with other settings.
        CheckpointWriteError: a checkpoint could not be written (e.g. Drive full), and no ``local_fallback``.
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
    bar = tqdm(epochs, desc=run.run_id, disable=not show, initial=so_far.epochs_done, total=spec.num_epochs)
    for epoch in bar:
        started = time.perf_counter()
        devices.reset_peak_memory(run.device)
        train_loss, images_per_s = train_one_epoch(run, saver, epoch, show)
        val_loss, val_dice = validate(run)
        check_finite(run, saver, val_loss, f"epoch {epoch} (validation)")  # NaN weights after a finite loss
        so_far.history.append({
            "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
            "lr": run.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - started,
            "images_per_s": images_per_s, "peak_gpu_gb": devices.peak_memory_gb(run.device)})
        so_far.finished = epoch == spec.num_epochs or out_of_patience(so_far.history, spec.early_stopping)
        saver.end_epoch(run)  # best.pt when the Dice is the best so far, last.pt, history.csv
        bar.set_postfix(val_dice=f"{val_dice:.4f}", best=f"{so_far.best:.4f}")
        if so_far.finished:
            break
    bar.close()
    return saver.finish(run)  # done.json
