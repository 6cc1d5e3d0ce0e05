"""The threshold and the calibration of a model's probabilities (notebook 04).

    curve = dice_by_threshold(probs, masks)  # mean per-image Dice at each threshold
    table = reliability(probs, masks)        # predicted probability against observed lesion share

A model outputs a probability per pixel; a threshold turns it into a mask. 0.5 is a convention, not
a law: the threshold that maximises the mean Dice on the **validation** images is the one to carry
to the test images. A model is *calibrated* when, of all pixels given probability p, a share p
really is lesion: the reliability diagram plots that share against p, and the expected calibration
error (ECE) is the pixel-weighted mean gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.training import metrics

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)  # 0.05, 0.10, ..., 0.95


def dice_by_threshold(probs: np.ndarray, masks: np.ndarray, thresholds=THRESHOLDS) -> pd.DataFrame:
    """Mean per-image Dice of ``probs >= t`` for each threshold t.

    Args:
        probs: float (N, H, W) in [0, 1].
        masks: binary (N, H, W).
        thresholds: the thresholds to try.

    Returns:
        ``threshold`` and ``dice`` (the mean over images of each image's Dice), a row each.
    """
    masks = np.asarray(masks).astype(bool)
    rows = []
    for t in thresholds:
        counts = metrics.confusion_counts(np.asarray(probs) >= t, masks)  # each (N,)
        rows.append({"threshold": float(t), "dice": float(metrics.dice(*counts).mean())})
    return pd.DataFrame(rows)


def best_threshold(curve: pd.DataFrame) -> tuple[float, float]:
    """``(threshold, dice)`` of the highest mean Dice in a :func:`dice_by_threshold` table (the
    lowest threshold on ties)."""
    best = curve.loc[curve["dice"].idxmax()]
    return float(best["threshold"]), float(best["dice"])


def reliability(probs: np.ndarray, masks: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Pixels binned by predicted probability: each bin's mean probability and observed lesion
    share.

    Args:
        probs: float (N, H, W) in [0, 1].
        masks: binary (N, H, W).
        n_bins: equal-width bins over [0, 1].

    Returns:
        One row per bin: ``low``, ``high``, ``pixels``, ``predicted`` (mean probability) and
        ``observed`` (share of lesion pixels); NaN in an empty bin.
    """
    p = np.asarray(probs, np.float64).ravel()
    y = np.asarray(masks).astype(bool).ravel()
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(
        np.digitize(p, edges[1:-1]), 0, n_bins - 1
    )  # bin of each pixel; 1.0 in the last
    pixels = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(which, p, n_bins) / pixels
        observed = np.bincount(which, y, n_bins) / pixels
    return pd.DataFrame(
        {
            "low": edges[:-1],
            "high": edges[1:],
            "pixels": pixels,
            "predicted": predicted,
            "observed": observed,
        }
    )


def calibration_error(table: pd.DataFrame) -> float:
    """Expected calibration error: the pixel-weighted mean of |observed - predicted| over bins."""
    full = table[table["pixels"] > 0]
    gaps = (full["observed"] - full["predicted"]).abs()
    return float((gaps * full["pixels"]).sum() / full["pixels"].sum())
