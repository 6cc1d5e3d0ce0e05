"""Figures of the data: image sizes, lesion areas, splits, and galleries of overlays.

Every function returns its matplotlib Figure (and draws nothing on import), so a notebook
shows it and a script can save it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def overlay(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0), pred: np.ndarray | None = None) -> np.ndarray:
    """The image with the mask's outline drawn on it (and a prediction's outline in magenta).

    Args:
        image: uint8 # (H, W, 3)
        mask: binary # (H, W)
        colour: outline colour of the mask.
        pred: optional binary prediction # (H, W)

    Returns:
        uint8 # (H, W, 3)
    """
    out = np.array(image, copy=True)
    for m, c in ((mask, colour), (pred, (255, 0, 255))):
        if m is None:
            continue
        m = np.asarray(m) > 0
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        out[edge] = c
    return out


def gallery(images, masks, titles=None, ncols: int = 6, size: float = 2.2) -> Figure:
    """A grid of images with their mask outlines.

    Args:
        images: sequence of uint8 # (H, W, 3)
        masks: sequence of binary # (H, W)
        titles: optional one title per image.
        ncols: images per row.
        size: inches per image.
    """
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(overlay(images[k], masks[k]))
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=8)
    return fig


def data_overview(table: pd.DataFrame) -> Figure:
    """Three panels: original image sizes, lesion-area fractions, images per split.

    Args:
        table: a prepared dataset's table (``splits.csv``).
    """
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    ax_size, ax_area, ax_split = fig.subplots(1, 3)
    ax_size.scatter(table["orig_width"], table["orig_height"], s=8, alpha=0.4)
    ax_size.set(title="Original image sizes", xlabel="width (px)", ylabel="height (px)")
    ax_area.hist(table["lesion_fraction"], bins=30, color="tab:brown")
    ax_area.set(title="Lesion area / image area", xlabel="fraction of pixels that are lesion", ylabel="images")
    counts = table["split"].value_counts().reindex(["train", "val", "test"]).fillna(0)
    bars = ax_split.bar(counts.index, counts.values, color=["tab:blue", "tab:orange", "tab:green"])
    ax_split.bar_label(bars)
    ax_split.set(title="Images per split", ylabel="images")
    return fig


def fraction_table(table: pd.DataFrame) -> pd.DataFrame:
    """Training images in each nested fraction (columns ``in_10`` ... ``in_100``)."""
    columns = [c for c in table.columns if c.startswith("in_")]
    return pd.DataFrame({"fraction": [f"{c[3:]} %" for c in columns],
                         "training images": [int(table[c].sum()) for c in columns]})
