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

import dataclasses
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import distributed, runs
from helpers.checkpoints import load_latest, make_state, restore_state, save_checkpoint, save_weights_atomic
from helpers.data import make_loaders, to_model_input
from helpers.distributed import amp_dtype, pick_device  # noqa: F401  (part of this module's API)
from helpers.losses import DiceBCELoss
from helpers.metrics import MetricAccumulator, dice
from helpers.models import build_model
from helpers.models.summary import count_parameters


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; nothing from that epoch was saved."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally insist on deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def cosine_schedule(optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up to the base lr, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def init_from_imagenet(model: torch.nn.Module) -> None:
    """Start a TransUNet from torchvision's ImageNet weights: ResNet-50 always, ViT-B/16 where it fits."""
    from torchvision.models import ResNet50_Weights
    from helpers.models import load_pretrained

    if model.config.hidden_size == 768 and model.config.mlp_dim == 3072:  # ViT-B/16 sized
        report = load_pretrained(model, download=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True), Path(tmp) / "r50.pt")
            report = load_pretrained(model, resnet_weights=Path(tmp) / "r50.pt")
    print(f"ImageNet initialisation: {report}")


@dataclasses.dataclass
class _Run:
    """Everything one ``fit`` call works with."""

    folder: Path
    checkpoint_dir: Path
    fallback_dir: Optional[Path]
    device: torch.device
    dtype: Optional[torch.dtype]
    dist: distributed.DistInfo
    model: torch.nn.Module
    net: torch.nn.Module  # the model, in DistributedDataParallel under torchrun
    loaders: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    criterion: Callable
    config: dict
    save_every_s: Optional[float]
    history: list = dataclasses.field(default_factory=list)
    best: float = -math.inf
    start_epoch: int = 1
    skip: int = 0              # batches of start_epoch done before a mid-epoch checkpoint
    partial: tuple = (0.0, 0)  # their loss sum and image count
    finished: bool = False
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    def checkpoint(self, epoch: int, batches_done: int = 0, partial=(0.0, 0)) -> None:
        """Save last.pt: ``epoch`` finished, plus ``batches_done`` batches of the next one."""
        state = make_state(self.model, self.optimizer, self.scheduler, self.scaler, epoch, self.best,
                           self.history, self.config)
        state.update(batches_done=batches_done, partial=list(partial), finished=self.finished)
        save_checkpoint(state, self.checkpoint_dir / "last.pt", fallback_dir=self.fallback_dir)
        self.last_save = time.monotonic()


def _setup(spec, prepared, profile, checkpoint_dir, num_epochs, warmup_epochs, minutes, criterion) -> _Run:
    """Build model, loaders, optimizer, schedule and scaler; resume from the newest checkpoint."""
    info, device, folder = distributed.setup(), pick_device(), runs.run_dir(spec)
    seed_everything(spec.seed)  # the same start whatever ran before in this process
    model = build_model(spec.model, spec.model_config, **spec.model_overrides)
    if spec.pretrained:
        init_from_imagenet(model)
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    net = distributed.wrap(model, device, info)
    loaders = make_loaders(prepared, spec.fraction, profile.batch_size, profile.num_workers, spec.seed,
                           distributed=info.world_size > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    steps, dtype, local = len(loaders.train), amp_dtype(device) if profile.amp else None, folder / "checkpoints"
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else local
    config = {"run_id": runs.run_id(spec), **dataclasses.asdict(spec), "prepared_dir": str(prepared.root),
              "checkpoint_dir": str(checkpoint_dir), "profile": profile.as_dict(), "num_epochs": num_epochs,
              "batch_size": profile.batch_size, "lr": profile.lr, "weight_decay": profile.weight_decay,
              "amp": str(dtype).removeprefix("torch.") if dtype else "off", "device": str(device),
              "hardware": distributed.hardware(device, info), "torch_version": str(torch.__version__),
              "params": count_parameters(model), "train_images": len(loaders.train.dataset),
              "warmup_epochs": warmup_epochs}
    run = _Run(folder, checkpoint_dir, local if checkpoint_dir != local else None, device, dtype, info, model, net,
               loaders, optimizer, cosine_schedule(optimizer, num_epochs * steps, round(warmup_epochs * steps)),
               torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), criterion or DiceBCELoss(),
               config, minutes * 60 if minutes else None)
    _resume(run)
    if info.is_main:
        runs.write_json(folder / "config.json", config)
    return run


def _resume(run: _Run) -> None:
    """Continue from the newest readable checkpoint (Drive or its local fallback), if there is one."""
    found = [load_latest(d, run.device) for d in (run.checkpoint_dir, run.fallback_dir) if d]
    state, path = max(((s, p) for s, p in found if s), key=lambda sp: (sp[0]["epoch"], sp[0]["batches_done"]),
                      default=(None, None))
    if state is None:
        return
    info = restore_state(state, run.model, run.optimizer, run.scheduler, run.scaler)
    run.history, run.best, run.finished = info["history"], info["best_metric"], state["finished"]
    run.start_epoch, run.skip, run.partial = info["epoch"] + 1, state["batches_done"], tuple(state["partial"])
    changed = [k for k in ("num_epochs", "batch_size", "lr", "amp") if info["config"].get(k) != run.config[k]]
    if run.dist.is_main:
        at = f", batch {run.skip} of epoch {run.start_epoch}" if run.skip else ""
        print(f"Resuming {run.config['run_id']} from {path} (epoch {info['epoch']} done{at})."
              + (f" Note: {', '.join(changed)} differ from the interrupted session's." if changed else ""))


def _diverged(run: _Run, epoch: int, where: str) -> TrainingDiverged:
    last = f"epoch {run.history[-1]['epoch']}" if run.history else "none yet"
    return TrainingDiverged(
        f"Run {run.config['run_id']}: the loss became NaN/inf in epoch {epoch} ({where}). Nothing "
        f"from this epoch was saved; the last good checkpoint ({last}) and best.pt in {run.checkpoint_dir} are intact. "
        f"Lower the learning rate (lr={run.optimizer.defaults['lr']}) or turn AMP off, then run again: it resumes "
        f"from that checkpoint.")


def _step(run: _Run, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a batch: uint8 images (B, H, W, 3), masks (B, 1, H, W); returns the loss."""
    fmt = torch.channels_last if run.device.type == "cuda" else torch.contiguous_format
    inputs, masks = to_model_input(images, run.device, fmt), masks.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
        logits = run.net(inputs)  # (B, 1, H, W), or a list of them (deep supervision)
    loss = run.criterion(logits, masks)  # fp32
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach()


def _train_epoch(run: _Run, epoch: int, progress: bool) -> tuple[float, float]:
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
def _validate(run: _Run) -> tuple[float, float]:
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
    run = _setup(spec, prepared, profile, checkpoint_dir, num_epochs, warmup_epochs, checkpoint_every_minutes,
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
