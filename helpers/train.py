"""The one training loop: ``fit()`` trains one run, ``run_grid()`` models × fractions.

AdamW with a per-step cosine schedule (optional warm-up); 0.5·Dice + 0.5·BCE in fp32 (averaged over
deep-supervision heads); ``torch.autocast`` mixed precision on CUDA (bf16 where supported, else fp16
with a ``GradScaler``; fp32 on the CPU); validation (mean per-image Dice) every epoch; ``best.pt``,
``history.csv``, and ``last.pt`` with everything a resume needs, after every epoch and optionally
every few minutes. Calling it again resumes an interrupted run exactly and skips a finished one; a
NaN/inf loss stops it before anything of that epoch is saved. Folders: :mod:`helpers.runs`;
several GPUs: :mod:`helpers.distributed`.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import distributed, runs
from helpers.checkpoints import save_weights_atomic
from helpers.data import to_model_input
from helpers.distributed import amp_dtype, pick_device  # noqa: F401  (part of this module's API)
from helpers.metrics import MetricAccumulator, dice
from helpers.session import (RunState, cosine_schedule, init_from_imagenet,  # noqa: F401  (API)
                             seed_everything, start_run)


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; nothing from that epoch was saved."""


def _diverged(run: RunState, epoch: int, where: str) -> TrainingDiverged:
    last = f"epoch {run.history[-1]['epoch']}" if run.history else "none yet"
    return TrainingDiverged(
        f"Run {run.config['run_id']}: the loss became NaN/inf in epoch {epoch} ({where}). Nothing "
        f"from this epoch was saved; the last good checkpoint ({last}) and best.pt in {run.checkpoint_dir} are intact. "
        f"Lower the learning rate (lr={run.optimizer.defaults['lr']}) or turn AMP off, then run again: it resumes "
        f"from that checkpoint.")


def _step(run: RunState, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a batch: uint8 images (B, H, W, 3), masks (B, 1, H, W); returns the loss."""
    inputs, masks = to_model_input(images, run.device, torch.channels_last), masks.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
        logits = run.net(inputs)  # (B, 1, H, W), or a list of them (deep supervision)
    loss = run.criterion(logits, masks)  # fp32
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach()


def _train_epoch(run: RunState, epoch: int, progress: bool) -> tuple[float, float]:
    """One pass over this process's training batches; returns (mean loss over all processes, images/s)."""
    run.net.train()
    loader, skip = run.loaders.train, run.skip if epoch == run.start_epoch else 0
    loader.sampler.set_epoch(epoch, start=skip * loader.batch_size)
    loss_sum, count = run.partial if skip else (0.0, 0)
    loss_sum, seen, last = torch.tensor(loss_sum, device=run.device), 0, skip + len(loader)
    sync_every, start = max(1, len(loader) // 10), time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, initial=skip, total=last)
    for step, (images, masks) in enumerate(bar, start=skip + 1):
        loss_sum += _step(run, images, masks) * len(masks)
        count, seen = count + len(masks), seen + len(masks)
        due = run.save_every_s is not None and time.monotonic() - run.last_save > run.save_every_s
        if step % sync_every == 0 or due or step == last:
            mean = float(loss_sum) / count  # the only host sync: progress bar and NaN check
            if not math.isfinite(mean):
                raise _diverged(run, epoch, f"training, by batch {step}")
            bar.set_postfix(loss=f"{mean:.4f}")
            if due and run.dist.is_main:
                run.checkpoint(epoch - 1, step, (float(loss_sum), count))
    seconds = time.perf_counter() - start
    totals = torch.stack([loss_sum, torch.tensor(float(count), device=run.device)])
    totals = distributed.all_reduce_sum(totals, run.dist)
    return float(totals[0] / totals[1]), seen * run.dist.world_size / seconds


@torch.no_grad()
def _validate(run: RunState) -> tuple[float, float]:
    """Mean validation loss and mean per-image Dice, over all processes' shards."""
    run.model.eval()
    metrics, loss_sum = MetricAccumulator(), torch.zeros((), device=run.device)
    for images, masks in run.loaders.val:
        masks = masks.to(run.device, non_blocking=True)  # (B, 1, H, W)
        with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
            logits = run.model(to_model_input(images, run.device))  # (B, 1, H, W)
        loss_sum += run.criterion(logits, masks) * len(masks)
        metrics.update(torch.sigmoid(logits.float()), masks)
    dice_sum = dice(*metrics.counts()).sum() if len(metrics) else torch.zeros((), device=run.device)
    totals = torch.stack([loss_sum, dice_sum.to(loss_sum), torch.tensor(float(len(metrics)), device=run.device)])
    totals = distributed.all_reduce_sum(totals, run.dist)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _skip(spec: runs.RunSpec, callbacks) -> dict:
    folder, name = runs.run_dir(spec), runs.run_id(spec)
    done = runs.load_done(folder)
    print(f"{name}: finished earlier ({done['epochs']} epochs, best val Dice {done['best_val_dice']:.4f} "
          f"at epoch {done['best_epoch']}); skipped.")
    for callback in callbacks:
        callback(name, pd.read_csv(folder / "history.csv").to_dict("records"))
    return {"run_id": name, "run_dir": str(folder), **done, "status": "skipped"}


def fit(spec: runs.RunSpec, prepared, profile, *, checkpoint_dir: str | os.PathLike | None = None,
        num_epochs: Optional[int] = None, warmup_epochs: float = 0.0, early_stopping: Optional[int] = None,
        checkpoint_every_minutes: Optional[float] = None, criterion: Optional[Callable] = None,
        callbacks: tuple = (), progress: bool = True) -> dict:
    """Train one run to the end, resuming it if it was interrupted; skip it if it has finished.

    Args:
        spec: the run (see :func:`helpers.runs.make_spec`).
        prepared: the prepared dataset the spec names.
        profile: batch size (global), lr, weight decay, AMP, loader workers and default epochs.
        checkpoint_dir: where last.pt / best.pt go (e.g. on Drive); default ``<run folder>/checkpoints``.
            A failed write there is retried, then goes to ``<run folder>/checkpoints`` (with a warning).
        num_epochs: epochs (default: the profile's).
        warmup_epochs: linear learning-rate warm-up, in epochs (may be fractional).
        early_stopping: stop after this many epochs without a better validation Dice (None: never).
        checkpoint_every_minutes: also save last.pt within an epoch this often (resumes mid-epoch).
        criterion: loss of (logits, masks); default ``DiceBCELoss()`` (0.5·Dice + 0.5·BCE, fp32).
        callbacks: called on rank 0 after every epoch as ``callback(run_id, history)``.
        progress: show progress bars.

    Returns:
        ``run_id``, ``run_dir``, ``status`` (trained, resumed or skipped) and the fields of done.json.

    Raises:
        TrainingDiverged: the loss became NaN/inf (checkpoints of earlier epochs stay as they were).
    """
    num_epochs = num_epochs or profile.num_epochs
    if runs.is_finished(runs.run_dir(spec)):
        return _skip(spec, callbacks)
    run = start_run(spec, prepared, profile, checkpoint_dir, num_epochs, warmup_epochs, checkpoint_every_minutes,
                 criterion)
    status, main = "resumed" if run.history or run.skip else "trained", run.dist.is_main
    epochs = range(run.start_epoch, 1 if run.finished else num_epochs + 1)
    bar = tqdm(epochs, desc=run.config["run_id"], disable=not (progress and main), initial=run.start_epoch - 1,
               total=num_epochs)
    for epoch in bar:
        started = time.perf_counter()
        train_loss, images_per_s = _train_epoch(run, epoch, progress and main)
        val_loss, val_dice = _validate(run)
        if not math.isfinite(val_loss):  # e.g. NaN weights after a finite last training loss
            raise _diverged(run, epoch, "validation")
        run.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                            "lr": run.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - started,
                            "images_per_s": images_per_s})
        improved, run.best = val_dice > run.best, max(run.best, val_dice)
        stale = epoch - runs.summarize(run.history, False)["best_epoch"]
        run.finished = epoch == num_epochs or bool(early_stopping and stale >= early_stopping)
        if main:
            if improved:  # best.pt before last.pt: a crash in between only repeats this epoch
                save_weights_atomic(run.model, run.checkpoint_dir / "best.pt", metric=val_dice, epoch=epoch,
                                    fallback_dir=run.fallback_dir)
            run.checkpoint(epoch)
            runs.write_history(run.folder, run.history)
            for callback in callbacks:
                callback(run.config["run_id"], run.history)
        bar.set_postfix(val_dice=f"{val_dice:.4f}", best=f"{run.best:.4f}")
        if run.finished:
            break
    bar.close()
    done = runs.summarize(run.history, len(run.history) < num_epochs)
    if main:
        runs.write_history(run.folder, run.history)
        runs.write_json(run.folder / "done.json", done)
    distributed.barrier(run.dist)
    return {"run_id": run.config["run_id"], "run_dir": str(run.folder), **done, "status": status}


def run_grid(models, fractions, prepared, profile, *, seed: int = 42, checkpoint_root: str | os.PathLike | None = None,
             model_overrides: Optional[dict] = None, pretrained=(), **fit_kwargs) -> pd.DataFrame:
    """Train every model on every fraction: finished runs are skipped, interrupted ones resumed.

    Args:
        models: model names, e.g. ``["unet"]``.
        fractions: training fractions, e.g. ``[0.1, 0.25, 0.5, 1.0]``.
        prepared, profile: as for :func:`fit`.
        seed: run seed.
        checkpoint_root: folder for one checkpoint folder per run (e.g. on Drive); default: in each run folder.
        model_overrides: model name -> config fields, e.g. ``{"unetpp": {"deep_supervision": True}}``.
        pretrained: names of the models to start from ImageNet weights (TransUNet).
        **fit_kwargs: passed to :func:`fit` (num_epochs, early_stopping, callbacks, progress, ...).

    Returns:
        One row per run: run_id, model, fraction, status (trained, resumed, skipped, diverged), done.json's fields.
    """
    rows = []
    for model in models:
        for fraction in fractions:
            spec = runs.make_spec(model, fraction, prepared, profile, seed, (model_overrides or {}).get(model),
                                  model in pretrained)
            where = Path(checkpoint_root) / runs.run_id(spec) if checkpoint_root else None
            try:
                result = fit(spec, prepared, profile, checkpoint_dir=where, **fit_kwargs)
            except TrainingDiverged as err:
                print(err)
                result = {"run_id": runs.run_id(spec), "run_dir": str(runs.run_dir(spec)), "status": "diverged"}
            rows.append({"model": model, "fraction": fraction, **result})
    return pd.DataFrame(rows).reindex(columns=["run_id", "model", "fraction", "status", *runs.DONE_KEYS, "run_dir"])


if __name__ == "__main__":
    import sys

    sys.exit(distributed.main())
