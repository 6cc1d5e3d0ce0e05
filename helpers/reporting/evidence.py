"""Figures of notebook 04's real evidence: Dice by image factor, skin tone, threshold, calibration.

Each function returns a matplotlib Figure and draws nothing on import. Colours come from the kit's
colour-vision-safe palette (``figures.SERIES``, ``figures.outlined``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from helpers.evaluation import image_factors
from helpers.reporting.figures import SERIES, outline_legend, outlined

FONT = 10  # readable at notebook width


def dice_by_groups(tables: dict[str, pd.DataFrame], title: str = "Test Dice by group") -> Figure:
    """One panel per factor: each group's mean Dice with its 95 % CI, labelled with its n.

    Args:
        tables: factor name → :func:`~helpers.evaluation.image_factors.by_group` table.
        title: the figure's title.
    """
    fig = Figure(figsize=(4.2 * len(tables), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tables), sharex=True))
    for ax, (factor, table) in zip(axes, tables.items()):
        shown = table[table["n"] > 0].reset_index(drop=True)
        y = np.arange(len(shown))
        err = np.vstack([shown["mean"] - shown["ci_low"], shown["ci_high"] - shown["mean"]])
        ax.errorbar(shown["mean"], y, xerr=err, fmt="o", color=SERIES[0], capsize=3)
        ax.set_yticks(
            y, [f"{g} (n={n})" for g, n in zip(shown["group"], shown["n"])], fontsize=FONT - 1
        )
        ax.invert_yaxis()
        ax.set_title(factor, fontsize=FONT)
        ax.set_xlabel("mean Dice, 95 % CI", fontsize=FONT - 1)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=FONT + 1)
    return fig


def ita_histogram(
    factors: pd.DataFrame, title: str = "Skin tone around the lesions (ITA)"
) -> Figure:
    """Left: images per standard ITA group; right: the angles, with the groups' boundaries."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.4))
    counts = factors["ita_group"].value_counts().reindex(image_factors.ITA_GROUPS, fill_value=0)
    bars = left.bar(range(len(counts)), counts.to_numpy(), color=SERIES[0])
    left.bar_label(bars, fontsize=FONT - 1)
    left.set_xticks(range(len(counts)), counts.index, rotation=30, ha="right", fontsize=FONT - 1)
    left.set(ylabel="images", title="images per ITA group")
    right.hist(factors["ita"].dropna(), bins=np.arange(-90, 181, 5), color=SERIES[0])
    for edge in image_factors.ITA_EDGES:
        right.axvline(edge, color=SERIES[1], ls="--", lw=1)
    right.set(
        xlabel="ITA in degrees (dashed: group boundaries; darker skin to the left)",
        ylabel="images",
        title="ITA of each image's skin ring",
    )
    fig.suptitle(title, fontsize=FONT + 1)
    return fig


def threshold_and_reliability(
    curve: pd.DataFrame, table: pd.DataFrame, model: str = "UNet++"
) -> Figure:
    """Left: mean validation Dice against the threshold; right: the reliability diagram.

    Args:
        curve: :func:`~helpers.evaluation.calibration.dice_by_threshold` table.
        table: :func:`~helpers.evaluation.calibration.reliability` table.
        model: the model's name, for the titles.
    """
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(curve["threshold"], curve["dice"], "o-", color=SERIES[0], markersize=3)
    best = curve.loc[curve["dice"].idxmax()]
    left.axvline(0.5, color="0.5", ls=":", label="0.5")
    left.plot(
        best["threshold"],
        best["dice"],
        "D",
        color=SERIES[1],
        label=f"best: {best['threshold']:.2f}",
    )
    left.set(
        xlabel="threshold", ylabel="mean validation Dice", title=f"{model}: Dice against threshold"
    )
    left.legend(fontsize=FONT - 1)
    full = table[table["pixels"] > 0]
    right.plot([0, 1], [0, 1], color="0.5", ls=":", label="perfectly calibrated")
    right.plot(full["predicted"], full["observed"], "o-", color=SERIES[1], label=model)
    right.set(
        xlabel="predicted probability (bin mean)",
        ylabel="observed share of lesion pixels",
        title=f"{model}: reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    right.legend(fontsize=FONT - 1)
    return fig


def worst_cases(images, masks, preds, table: pd.DataFrame, size: float = 2.4) -> Figure:
    """The worst test images: truth (light blue) and prediction (orange) outlines, with a legend.

    Args:
        images: uint8 (K, H, W, 3); masks, preds: binary (K, H, W).
        table: K rows of :func:`~helpers.evaluation.shipped.worst` (isic_id, dice, lesion_pct,
            contrast, ita_group).
    """
    fig = Figure(figsize=(size * len(table), size + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(table)))
    for ax, image, mask, pred, row in zip(axes, images, masks, preds, table.itertuples()):
        ax.imshow(outlined(image, mask, pred))
        ax.set_title(
            f"{row.isic_id}\nDice {row.dice:.2f} · lesion {row.lesion_pct:.0f} %\n"
            f"contrast {row.contrast:.0f} · ITA {row.ita_group}",
            fontsize=FONT - 2,
        )
        ax.axis("off")
    outline_legend(fig)
    return fig
