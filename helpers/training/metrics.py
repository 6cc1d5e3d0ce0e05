"""Segmentation metrics, all through per-image confusion counts.

Every score is computed the same way (as segmentation_models_pytorch does): binary predictions and
masks → per-image confusion counts ``tp, fp, fn, tn`` (int64, shape (B,)) → a reduction. Each
reduction takes ``reduction="per_image"`` (one fp32 value per image, shape (B,); the caller averages
them, which is how the study reports mean ± std) or ``reduction="pooled"`` (counts summed over all
images first, then one fp32 value: a dataset-level score that large lesions dominate).

Shapes: predictions and masks may each be (B, 1, H, W) or (B, H, W), in any mix. Nothing is ever
broadcast: shapes that do not describe the same B images of H × W raise ``ValueError`` naming both.
Inputs may be torch tensors or numpy arrays; counts are int64 and scores fp32 (never fp16).

Empty masks (no lesion pixels) have defined values, chosen so that a correct "no lesion here" is a
perfect score; each function's docstring says which value it uses.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

Array = torch.Tensor | np.ndarray
Counts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def binarize(x: Array, threshold: float = 0.5) -> torch.Tensor:
    """Foreground as a bool tensor of the same shape (numpy arrays become tensors).

    bool stays as is; integers are foreground where nonzero (so 0/1 and 0/255 masks both work);
    floats (probs, or 0./1. masks) are foreground where ``>= threshold``.
    """
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected a torch.Tensor or numpy array, got {type(x).__name__}.")
    if x.dtype == torch.bool:
        return x
    return x >= threshold if x.is_floating_point() else x != 0


def _drop_channel(x: torch.Tensor) -> torch.Tensor | None:
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]  # (B, H, W)
    return x if x.ndim == 3 else None


def as_batch_hw(preds: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as (B, H, W); accepts (B, 1, H, W) or (B, H, W) for either, never broadcasts."""
    p, m = _drop_channel(preds), _drop_channel(masks)
    if p is None or m is None or p.shape != m.shape:
        raise ValueError(
            f"preds have shape {tuple(preds.shape)} but masks have shape {tuple(masks.shape)}: "
            "expected (B, 1, H, W) or (B, H, W) for each, with the same B, H and W. For a single "
            "image add a batch axis (x[None]); resize predictions to the mask size first.")
    return p, m


def confusion_counts(preds: Array, masks: Array) -> Counts:
    """Per-image confusion counts of binary predictions against masks.

    Args:
        preds: binary predictions, (B, 1, H, W) or (B, H, W); bool, integer (nonzero = lesion) or
            float (>= 0.5 = lesion; to pick another threshold use ``per_image_metrics``).
        masks: ground-truth masks, (B, 1, H, W) or (B, H, W), same conventions.

    Returns:
        ``(tp, fp, fn, tn)``, each int64 of shape (B,), on the inputs' device.

    Raises:
        ValueError: if the shapes do not describe the same images (both shapes are in the message).
    """
    p, m = as_batch_hw(binarize(preds), binarize(masks))
    p, m = p.flatten(1), m.flatten(1).to(p.device)  # (B, H*W)
    tp = torch.count_nonzero(p & m, dim=1)
    predicted, actual = torch.count_nonzero(p, dim=1), torch.count_nonzero(m, dim=1)
    return tp, predicted - tp, actual - tp, p.shape[1] - predicted - actual + tp


def _reduce(counts: Sequence[torch.Tensor], reduction: str) -> list[torch.Tensor]:
    if reduction == "per_image":
        return list(counts)
    if reduction == "pooled":
        return [c.sum() for c in counts]
    raise ValueError(f"reduction must be 'per_image' or 'pooled', got {reduction!r}.")


def _ratio(num: torch.Tensor, den: torch.Tensor, empty_value: float) -> torch.Tensor:
    """num / den in fp32, with ``empty_value`` where den == 0."""
    num, den = num.float(), den.float()
    return torch.where(den > 0, num / den.clamp_min(1.0), torch.full_like(num, empty_value))


def dice(tp, fp, fn, tn, reduction: str = "per_image") -> torch.Tensor:
    """Dice = 2·TP / (2·TP + FP + FN), per image (B,) or pooled (scalar); both empty → 1."""
    tp, fp, fn, tn = _reduce((tp, fp, fn, tn), reduction)
    return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


def iou(tp, fp, fn, tn, reduction: str = "per_image") -> torch.Tensor:
    """IoU (Jaccard) = TP / (TP + FP + FN), per image (B,) or pooled (scalar); both empty → 1."""
    tp, fp, fn, tn = _reduce((tp, fp, fn, tn), reduction)
    return _ratio(tp, tp + fp + fn, 1.0)


def accuracy(tp, fp, fn, tn, reduction: str = "per_image") -> torch.Tensor:
    """Pixel accuracy = (TP + TN) / all pixels, per image (B,) or pooled (scalar)."""
    tp, fp, fn, tn = _reduce((tp, fp, fn, tn), reduction)
    return _ratio(tp + tn, tp + fp + fn + tn, 1.0)


def sensitivity(tp, fp, fn, tn, reduction: str = "per_image") -> torch.Tensor:
    """Sensitivity (recall) = TP / (TP + FN), per image (B,) or pooled (scalar).

    Empty mask → 1.0 whatever the prediction (no lesion pixel could be missed); false alarms on
    such images show in Dice, IoU and specificity instead.
    """
    tp, fp, fn, tn = _reduce((tp, fp, fn, tn), reduction)
    return _ratio(tp, tp + fn, 1.0)


def specificity(tp, fp, fn, tn, reduction: str = "per_image") -> torch.Tensor:
    """Specificity = TN / (TN + FP), per image (B,) or pooled (scalar).

    Mask covering the whole image (no background) → 1.0 whatever the prediction.
    """
    tp, fp, fn, tn = _reduce((tp, fp, fn, tn), reduction)
    return _ratio(tn, tn + fp, 1.0)


SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "dice": dice, "iou": iou, "accuracy": accuracy,
    "sensitivity": sensitivity, "specificity": specificity,
}


def jaccard_thresholded(iou_values, threshold: float = 0.65) -> torch.Tensor:
    """ISIC 2018 Task 1 score, per image: IoU, set to 0 where it is below ``threshold``.

    The challenge averages these per-image values (the caller does that); it is never pooled.
    An IoU exactly at the threshold is kept. Returns fp32, shape of ``iou_values``.
    """
    values = torch.as_tensor(iou_values, dtype=torch.float32)
    return torch.where(values >= threshold, values, torch.zeros_like(values))


def scores_from_counts(tp, fp, fn, tn, reduction: str = "per_image") -> dict[str, torch.Tensor]:
    """Every score from confusion counts: per image, (B,) each, or pooled, scalars.

    Per image also includes ``jaccard_thresholded`` (which has no pooled form).
    """
    out = {name: score(tp, fp, fn, tn, reduction) for name, score in SCORES.items()}
    if reduction == "per_image":
        out["jaccard_thresholded"] = jaccard_thresholded(out["iou"])
    return out


def _boundary(x: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background or outside the image."""
    return x & ~ndimage.binary_erosion(x, structure=ndimage.generate_binary_structure(2, 1))


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distance from each boundary pixel of ``a`` to the nearest boundary pixel of ``b``."""
    return ndimage.distance_transform_edt(~_boundary(b), sampling=spacing)[_boundary(a)]


def _as_hw(x: Array) -> np.ndarray:
    x = binarize(x).detach().cpu().numpy()
    return x[0] if x.ndim == 3 and x.shape[0] == 1 else x


def hd95(pred: Array, mask: Array, spacing: float | Sequence[float] = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance of one image, in units of ``spacing``.

    Boundaries are the foreground pixels with a 4-connected background neighbour (or on the image
    edge); distances come from ``scipy.ndimage.distance_transform_edt``. As MedPy's ``hd95``, the
    95th percentile (numpy's linear interpolation) is taken over the distances of both directions
    pooled: pred boundary → mask boundary and mask boundary → pred boundary.

    Empty cases: both empty → 0.0; exactly one empty → the image diagonal (the largest distance
    possible in the image, so failures are penalised and means stay finite; never NaN).

    Args:
        pred: binary prediction, (H, W) or (1, H, W); numpy or torch.
        mask: binary mask, same shape.
        spacing: pixel size, one number or (row, column).

    Returns:
        HD95 as a Python float.
    """
    p, m = _as_hw(pred), _as_hw(mask)
    if p.ndim != 2 or p.shape != m.shape:
        raise ValueError(f"hd95 takes one image: pred {tuple(np.shape(pred))} and mask "
                         f"{tuple(np.shape(mask))} must both be (H, W) or (1, H, W), the same.")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    if not p.any() and not m.any():
        return 0.0
    if not p.any() or not m.any():
        return float(np.hypot(*(np.asarray(p.shape) * spacing)))
    distances = np.concatenate([_surface_distances(p, m, spacing),  # pred → mask
                                _surface_distances(m, p, spacing)])  # mask → pred
    return float(np.percentile(distances, 95))


def per_image_metrics(probs_or_preds: Array, masks: Array, threshold: float = 0.5,
                      with_hd95: bool = False) -> dict[str, torch.Tensor]:
    """All per-image scores of one batch: a dict of fp32 tensors of shape (B,).

    Keys: dice, iou, accuracy, sensitivity, specificity, jaccard_thresholded (and hd95 in
    pixels when ``with_hd95``; that one runs on the CPU). ``pandas.DataFrame({k: v.cpu().numpy()})``
    turns the result into a per-image table.

    Args:
        probs_or_preds: probs (float, thresholded at ``threshold``) or binary preds,
            (B, 1, H, W) or (B, H, W). Pass probs, not logits.
        masks: ground-truth masks, (B, 1, H, W) or (B, H, W).
        threshold: probability at or above which a pixel is lesion.
        with_hd95: also compute HD95 per image (slower: two distance transforms per image).
    """
    preds = binarize(probs_or_preds, threshold)
    counts = confusion_counts(preds, masks)
    out = scores_from_counts(*counts)
    if with_hd95:
        p, m = as_batch_hw(preds, binarize(masks))
        values = [hd95(a, b) for a, b in zip(p.cpu().numpy(), m.cpu().numpy())]
        out["hd95"] = torch.tensor(values, dtype=torch.float32, device=counts[0].device)
    return out


class MetricAccumulator:
    """Per-image confusion counts gathered across batches, kept on the batches' device.

    ``update`` only queues tensor operations (no ``.item()``, no host sync), so it can run inside
    the validation loop; ``per_image``, ``means`` and ``pooled`` sync once at the end.
    HD95 is not accumulated (it needs the masks on the CPU): use ``per_image_metrics``.

    Args:
        threshold: probability at or above which a pixel is lesion.
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self._counts: list[torch.Tensor] = []  # each (4, B)

    def update(self, probs_or_preds: Array, masks: Array) -> None:
        """Add one batch: probs or preds and masks, (B, 1, H, W) or (B, H, W)."""
        counts = confusion_counts(binarize(probs_or_preds, self.threshold), masks)
        self._counts.append(torch.stack(counts))

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._counts.clear()

    def __len__(self) -> int:
        return sum(c.shape[1] for c in self._counts)

    def counts(self) -> Counts:
        """``(tp, fp, fn, tn)`` of every image seen, each int64 of shape (N,)."""
        if not self._counts:
            raise ValueError("MetricAccumulator is empty: call update() with a batch first.")
        tp, fp, fn, tn = torch.cat(self._counts, dim=1)
        return tp, fp, fn, tn

    def per_image(self) -> dict[str, torch.Tensor]:
        """Per-image scores of every image seen, fp32 tensors of shape (N,) on the CPU."""
        return {k: v.cpu() for k, v in scores_from_counts(*self.counts()).items()}

    def means(self) -> dict[str, float]:
        """Mean over images of each per-image score (what the study reports)."""
        return {k: float(v.mean()) for k, v in self.per_image().items()}

    def pooled(self) -> dict[str, float]:
        """Each score from the counts summed over all images (dataset-level, pooled)."""
        return {k: float(v) for k, v in scores_from_counts(*self.counts(), "pooled").items()}
