"""The training loss: weighted soft Dice + binary cross-entropy on logits, in fp32.

``DiceBCELoss`` is the study's ``0.5·Dice + 0.5·BCE``. It always computes in fp32, even when the
logits come out of ``torch.autocast`` in fp16/bf16 (it casts them and turns autocast off inside).
Soft Dice is computed per image and then averaged over the batch (so a small lesion counts as much
as a large one, matching the per-image Dice we report); BCE is the mean over all pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Logits = torch.Tensor | Sequence[torch.Tensor]


def align_masks(masks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Masks as fp32 targets with exactly the shape and device of ``logits``.

    Args:
        masks: (B, 1, H, W) or (B, H, W); bool, integer (nonzero = lesion, so 0/255 works) or
            float (kept as is: soft targets in [0, 1] are allowed).
        logits: (B, 1, H, W) or (B, H, W).

    Raises:
        ValueError: if the shapes do not describe the same images (both shapes in the message).
    """
    if masks.dtype == torch.bool or not masks.is_floating_point():
        masks = masks != 0
    masks = masks.to(device=logits.device, dtype=torch.float32)
    if logits.ndim == 4 and masks.ndim == 3 and logits.shape[1] == 1:
        masks = masks.unsqueeze(1)  # (B, H, W) → (B, 1, H, W)
    elif logits.ndim == 3 and masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks.squeeze(1)  # (B, 1, H, W) → (B, H, W)
    if masks.shape != logits.shape:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)} but masks have shape {tuple(masks.shape)}: "
            "expected (B, 1, H, W) or (B, H, W) with the same B, H and W (one lesion channel). "
            "Resize masks to the model's output size, or check the model's out_channels.")
    return masks


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor,
                   smooth: float = 1.0) -> torch.Tensor:
    """1 − soft Dice of sigmoid(logits) against targets, per image, averaged over the batch.

    ``(2·Σ p·t + smooth) / (Σ p + Σ t + smooth)`` over each image's pixels; ``smooth`` keeps an
    empty mask with an empty prediction at loss 0 and the gradient finite.

    Args:
        logits: fp32 logits, (B, ...).
        targets: fp32 targets of the same shape.
        smooth: additive smoothing in numerator and denominator.

    Returns:
        Scalar tensor.
    """
    probs = torch.sigmoid(logits).flatten(1)  # (B, N)
    targets = targets.flatten(1)  # (B, N)
    intersection = (probs * targets).sum(1)
    total = probs.sum(1) + targets.sum(1)
    return (1 - (2 * intersection + smooth) / (total + smooth)).mean()


class DiceBCELoss(nn.Module):
    """``dice_weight · soft Dice loss + bce_weight · BCEWithLogits``, in fp32.

    Call it with ``(logits, masks)``; logits may be one tensor or a list/tuple of tensors (deep
    supervision heads, e.g. UNet++), whose losses are averaged: ``head_losses`` gives each head's.

    Args:
        dice_weight: weight of the soft Dice loss (per image, averaged over the batch).
        bce_weight: weight of the binary cross-entropy (mean over all pixels).
        smooth: Dice smoothing constant.
    """

    def __init__(self, dice_weight: float = 0.5, bce_weight: float = 0.5, smooth: float = 1.0):
        super().__init__()
        if dice_weight < 0 or bce_weight < 0 or dice_weight + bce_weight <= 0:
            raise ValueError(f"DiceBCELoss needs non-negative weights, not both 0; got "
                             f"dice_weight={dice_weight}, bce_weight={bce_weight}.")
        self.dice_weight, self.bce_weight, self.smooth = dice_weight, bce_weight, smooth

    def forward(self, logits: Logits, masks: torch.Tensor) -> torch.Tensor:
        """Loss of one output or the mean over deep-supervision outputs.

        Args:
            logits: (B, 1, H, W) or (B, H, W), any float dtype; or a list/tuple of them.
            masks: (B, 1, H, W) or (B, H, W); float, uint8 or bool.

        Returns:
            Scalar fp32 tensor.
        """
        return self.head_losses(logits, masks).mean()

    def head_losses(self, logits: Logits, masks: torch.Tensor) -> torch.Tensor:
        """The loss of each output: ``forward`` is their mean (deep supervision weighs every head
        equally).

        Args:
            logits: one output or a list/tuple of them (UNet++'s heads ``x_0_1`` ... ``x_0_4`` in
                training).
            masks: as for ``forward``.

        Returns:
            fp32 tensor (heads,): ``dice_weight · soft Dice loss + bce_weight · BCE`` of each
            output.
        """
        heads = list(logits) if isinstance(logits, (list, tuple)) else [logits]
        if not heads:
            raise ValueError("DiceBCELoss got an empty list of logits: pass at least one output.")
        return torch.stack([self._one_head(head, masks) for head in heads])

    def _one_head(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            targets = align_masks(masks, logits)
            bce = F.binary_cross_entropy_with_logits(logits, targets)
            dice = soft_dice_loss(logits, targets, self.smooth)
            return self.dice_weight * dice + self.bce_weight * bce

    def extra_repr(self) -> str:
        return f"dice_weight={self.dice_weight}, bce_weight={self.bce_weight}, smooth={self.smooth}"
