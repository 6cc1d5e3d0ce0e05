"""The training loop a student reads: notebook 02's five steps on every batch, and validation.

``train_one_epoch`` is the step written out (forward, loss, ``zero_grad``, ``backward``, optimiser
``step``) over every batch of a loader; ``validate`` scores the validation images (mean per-image
Dice). Both take the plain torch objects a notebook builds. Mixed precision is a thin wrapper:
``torch.autocast`` with ``amp_dtype`` and a gradient ``scaler`` (fp16 on a T4; a pass-through
otherwise). Hooks do the rest: ``to_input`` turns a loader's images into model input, ``on_batch``
hears of every step, ``reduce`` sums over processes. :func:`helpers.training.engine.fit` wraps
this loop with resume, checkpoints, progress bars and several GPUs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from helpers.training.metrics import MetricAccumulator, dice

OnBatch = Callable[[int, torch.Tensor, int], object]  # on_batch(step, loss, images in the batch)


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """Mixed precision for a forward pass: ``torch.autocast`` with ``amp_dtype``, off when None."""
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def train_one_epoch(model: torch.nn.Module, loader: Iterable, loss_fn: Callable,
                    optimizer: torch.optim.Optimizer, device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, scheduler=None,
                    amp_dtype: torch.dtype | None = None, to_input: Callable | None = None,
                    on_batch: OnBatch | None = None) -> float:
    """Train ``model`` on every batch of ``loader`` once; returns the mean training loss.

    Args:
        model, loader, loss_fn, optimizer, device: what the notebook built; the loader yields
            ``(images, masks)``.
        scaler: a ``torch.amp.GradScaler`` (fp16); None: none needed.
        scheduler: stepped after every batch (a per-step learning-rate schedule); None: none.
        amp_dtype: mixed precision (``torch.float16``, ``torch.bfloat16``); None: fp32.
        to_input: images as the loader gives them → the model's input on ``device``.
        on_batch: called after every step as ``on_batch(step, loss, images in the batch)``.
    """
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)  # a pass-through
    to_input = to_input or (lambda images: images.to(device))
    model.train()
    loss_sum, count = torch.zeros((), device=device), 0
    for step, (images, masks) in enumerate(loader, 1):
        images = to_input(images)                     # float (B, 3, H, W)
        masks = masks.to(device, non_blocking=True)   # (B, 1, H, W)
        with autocast(device, amp_dtype):
            logits = model(images)                    # 1 forward: (B, 1, H, W), or one per head
        loss = loss_fn(logits, masks)                 # 2 loss, in fp32
        optimizer.zero_grad(set_to_none=True)         # 3 forget the last step's gradients
        scaler.scale(loss).backward()                 # 4 backward (scaled up in fp16: no underflow)
        scaler.step(optimizer)                        # 5 AdamW updates the weights
        scaler.update()
        if scheduler is not None:
            scheduler.step()                          # the learning rate of the next step
        loss_sum, count = loss_sum + loss.detach() * len(masks), count + len(masks)
        if on_batch is not None:
            on_batch(step, loss.detach(), len(masks))
    return float(loss_sum) / max(count, 1)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: Iterable, loss_fn: Callable, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, to_input: Callable | None = None,
             reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float]:
    """Mean validation loss and mean per-image Dice (at 0.5) of ``model`` over ``loader``.

    Args:
        model, loader, loss_fn, device, amp_dtype, to_input: as for :func:`train_one_epoch`.
        reduce: sums a tensor over every process's share of the images (DDP); None: one process.
    """
    to_input = to_input or (lambda images: images.to(device))
    model.eval()
    metrics = MetricAccumulator()
    loss_sum = torch.zeros((), device=device)
    for images, masks in loader:
        masks = masks.to(device, non_blocking=True)  # (B, 1, H, W)
        with autocast(device, amp_dtype):
            logits = model(to_input(images))  # (B, 1, H, W)
        loss_sum += loss_fn(logits, masks) * len(masks)
        metrics.update(torch.sigmoid(logits.float()), masks)
    dice_sum = dice(*metrics.counts()).sum() if len(metrics) else torch.zeros((), device=device)
    count = torch.tensor(float(len(metrics)), device=device)
    totals = torch.stack([loss_sum, dice_sum.to(loss_sum), count])
    totals = reduce(totals) if reduce is not None else totals
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])
