"""The one training loop: ``fit()`` trains one run (the grid of runs: :mod:`helpers.training.grid`).

AdamW with a per-step cosine (or constant) schedule and optional warm-up; 0.5·Dice + 0.5·BCE in fp32
(averaged over deep-supervision heads); ``torch.autocast`` mixed precision on CUDA (bf16 where
supported, else fp16 with a ``GradScaler``, also when ``amp="fp16"`` asks for it; fp32 on the CPU), optionally
within a cap on GPU memory (15 GB and fp16: the T4 path, emulated); validation (mean per-image Dice) every
epoch; ``best.pt``, ``history.csv`` (with images/s and peak GPU memory per epoch), and ``last.pt`` with
everything a resume needs (the scaler's state included), after every
epoch and optionally every few minutes. Calling it again resumes an interrupted run exactly and
skips a finished one whose recorded settings are the same; a NaN/inf loss stops it before anything
of that epoch is saved. Folders: :mod:`helpers.training.runs`; several GPUs: :mod:`helpers.training.devices`.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from helpers import paths
from helpers.data.loaders import to_model_input
from helpers.training import devices, runs
from helpers.training.metrics import MetricAccumulator, dice
from helpers.training.state import RunState, SettingsChanged, start_run


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
    totals = devices.all_reduce_sum(totals, run.dist)
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
    totals = devices.all_reduce_sum(totals, run.dist)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _skip(spec: runs.RunSpec, callbacks) -> dict:
    folder, name = runs.run_dir(spec), runs.run_id(spec)
    done = runs.load_done(folder)
    print(f"{name}: finished earlier with these settings ({done['epochs']} epochs, best val Dice "
          f"{done['best_val_dice']:.4f} at epoch {done['best_epoch']}); skipped.")
    for callback in callbacks:
        callback(name, runs.read_history(folder).to_dict("records"))
    return {"run_id": name, "run_dir": str(folder), **done, "status": "skipped"}


def start_over(folder: Path, checkpoint_dir: Path | None = None) -> None:
    """Delete a run's history, result and checkpoints, local copies included (config.json is rewritten when it
    starts again)."""
    for name in ("history.csv", "done.json"):
        (folder / name).unlink(missing_ok=True)
    places = {folder / "checkpoints", *([Path(checkpoint_dir)] if checkpoint_dir else [])}
    for where in places | {paths.mirror(p) for p in places if paths.mirror(p)}:  # this runtime's local copies too
        for file in where.glob("*.pt") if where.is_dir() else ():
            file.unlink()


def fit(spec: runs.RunSpec, prepared, *, num_workers: int = 0, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_minutes: float | None = None, restart: bool = False, keep_last: bool = False,
        local_fallback: bool = False, gpu_memory_gb: float | None = None, callbacks: tuple = (),
        progress: bool = True) -> dict:
    """Train one run to the end, resuming it if it was interrupted; skip it if it has finished.

    Every setting that changes the result comes from ``spec`` (:func:`helpers.training.runs.make_spec`
    fills it from the run config); the keyword arguments only say how to run it.

    Args:
        spec: the run.
        prepared: the prepared dataset the spec names.
        num_workers: DataLoader worker processes.
        checkpoint_dir: where last.pt / best.pt go (e.g. on Drive); default ``<run folder>/checkpoints``.
            A failed write there is retried, then stops training with :class:`CheckpointWriteError`.
        checkpoint_minutes: also save last.pt within an epoch this often (resumes mid-epoch).
        restart: start the run over, deleting its history and checkpoints, instead of resuming or skipping it.
        keep_last: keep last.pt when the run has finished (default: best.pt only, a third of the size).
        local_fallback: go on with checkpoints on local disk only when writes to ``checkpoint_dir`` keep failing.
        gpu_memory_gb: on CUDA, use at most this many GB of GPU memory (15: a T4's; None: no cap; ignored on the CPU).
        callbacks: called on rank 0 after every epoch as ``callback(run_id, history)``.
        progress: show progress bars.

    Returns:
        ``run_id``, ``run_dir``, ``status`` (trained, resumed or skipped) and the fields of done.json.

    Raises:
        TrainingDiverged: the loss became NaN/inf (checkpoints of earlier epochs stay as they were).
        SettingsChanged: the run folder holds a result or checkpoint made with other settings
            (``restart=True`` starts it over).
        CheckpointWriteError: a checkpoint could not be written (e.g. Drive full), and no ``local_fallback``.
    """
    folder, num_epochs = runs.run_dir(spec), spec.num_epochs
    if restart:
        start_over(folder, checkpoint_dir)
    if runs.is_finished(folder):
        if changed := runs.differing_settings(runs.load_run_config(folder), spec):
            raise SettingsChanged(f"{folder} holds a finished run made with other settings ({', '.join(changed)}); "
                                  f"start it over (RESTART = True, or --restart) or ask for the recorded settings.")
        return _skip(spec, callbacks)
    run = start_run(spec, prepared, checkpoint_dir, num_workers, checkpoint_minutes, local_fallback, gpu_memory_gb)
    status, main = "resumed" if run.history or run.skip else "trained", run.dist.is_main
    epochs = range(run.start_epoch, 1 if run.finished else num_epochs + 1)
    bar = tqdm(epochs, desc=run.config["run_id"], disable=not (progress and main), initial=run.start_epoch - 1,
               total=num_epochs)
    for epoch in bar:
        started = time.perf_counter()
        devices.reset_peak_memory(run.device)
        train_loss, images_per_s = _train_epoch(run, epoch, progress and main)
        val_loss, val_dice = _validate(run)
        if not math.isfinite(val_loss):  # e.g. NaN weights after a finite last training loss
            raise _diverged(run, epoch, "validation")
        run.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                            "lr": run.scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - started,
                            "images_per_s": images_per_s, "peak_gpu_gb": devices.peak_memory_gb(run.device)})
        improved, run.best = val_dice > run.best, max(run.best, val_dice)
        stale = epoch - runs.summarize(run.history, False)["best_epoch"]
        patience = spec.early_stopping
        run.finished = epoch == num_epochs or (patience is not None and not improved and stale >= patience)
        if main:
            if improved:  # best.pt before last.pt: a crash in between only repeats this epoch
                run.save_best(val_dice, epoch)
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
        if run.local_only:  # LOCAL_FALLBACK was used: say so where notebook 04 and a later runtime look
            done["checkpoints"] = f"local only, in {run.local_dir or run.folder / 'checkpoints'}: copy them to " \
                                  f"{run.checkpoint_dir} before this runtime ends"
            print(f"⚠ {run.config['run_id']}: {done['checkpoints']}.")
        runs.write_json(run.folder / "done.json", done)
        if not keep_last and not run.local_only:
            run.drop_last()
    devices.barrier(run.dist)
    return {"run_id": run.config["run_id"], "run_dir": str(run.folder), **done, "status": status}
