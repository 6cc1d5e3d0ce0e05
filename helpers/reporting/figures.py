"""Figures of the data and the models: image sizes, lesion areas, splits, galleries of overlays,
predictions, TransUNet's attention.

Every function returns its matplotlib Figure (and draws nothing on import), so a notebook
shows it and a script can save it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.patches
import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image

from helpers.data.loaders import to_model_input
from helpers.evaluation import inference
from helpers.evaluation.inference import (  # noqa: F401
    PALETTE,
    overlay,  # figures.overlay: drawn here, defined there
)
from helpers.models import display_name
from helpers.models.summary import layer_shapes

# Lines and bars of up to three series (models, splits): Okabe & Ito's blue, orange and reddish
# purple, which stay apart under protanopia and deuteranopia (tests/reporting/test_palette.py);
# overlays use PALETTE.
SERIES = ("#0072B2", "#E69F00", "#CC79A7")
# boxes of the model diagrams
DIAGRAM = {"encoder": "#9ecae1", "bottleneck": "#f0e442", "decoder": "#fdae6b"}
TITLE, LABEL = 10, 9  # font sizes, readable at a notebook's width


def outlined(image, mask, pred=None) -> np.ndarray:
    """:func:`overlay` with outlines thick enough to see at a notebook's width (2 px from 96 px
    up)."""
    return overlay(image, mask, pred=pred, width=2 if min(np.shape(image)[:2]) >= 96 else 1)


def outline_legend(fig: Figure, pred: bool = True) -> None:
    """A legend under the figure that names the outlines: truth (the annotator's mask) and
    prediction."""
    handles = [Line2D([], [], color=np.asarray(PALETTE["truth"]) / 255, lw=3,
                      label="truth (annotator's mask)")]
    if pred:
        handles.append(Line2D([], [], color=np.asarray(PALETTE["prediction"]) / 255, lw=3,
                              label="prediction"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
               fontsize=LABEL, frameon=False)


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
            ax.imshow(outlined(images[k], masks[k]))
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=LABEL)
    outline_legend(fig, pred=False)
    return fig


def image_files(files, titles=None, ncols: int = 4, size: float = 3.0) -> Figure:
    """Image files side by side (e.g. the overlays predict.py writes), titled with their names
    unless given."""
    files = [Path(f) for f in files]
    nrows = max(1, -(-len(files) // ncols))
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    for k, ax in enumerate(fig.subplots(nrows, ncols, squeeze=False).flat):
        ax.axis("off")
        if k < len(files):
            with Image.open(files[k]) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            ax.set_title(str(titles[k] if titles is not None else files[k].stem), fontsize=8)
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
    ax_area.hist(table["lesion_fraction"], bins=30, color=SERIES[0])
    ax_area.set(title="Lesion area / image area", xlabel="fraction of pixels that are lesion",
                ylabel="images")
    counts = table["split"].value_counts().reindex(["train", "val", "test"]).fillna(0)
    bars = ax_split.bar(counts.index, counts.values, color=list(SERIES))
    ax_split.bar_label(bars)
    ax_split.set(title="Images per split", ylabel="images")
    return fig


def fraction_table(table: pd.DataFrame) -> pd.DataFrame:
    """Training images in each nested fraction (columns ``in_10`` ... ``in_100``)."""
    columns = [c for c in table.columns if c.startswith("in_")]
    return pd.DataFrame({"fraction": [f"{c[3:]} %" for c in columns],
                         "training images": [int(table[c].sum()) for c in columns]})


# ---- Figures of results (notebook 04 and the report) -------------------------------------------
MODEL_COLOURS = dict(zip(("unet", "unetpp", "transunet"), SERIES))


def error_overlay(image: np.ndarray, mask: np.ndarray, pred: np.ndarray,
                  alpha: float = 0.5) -> np.ndarray:
    """The image tinted by outcome: white = hit (TP), orange = false alarm (FP), dark blue = missed
    (FN).

    Args:
        image: uint8 # (H, W, 3)
        mask: binary # (H, W)
        pred: binary # (H, W)
        alpha: tint strength.

    Returns:
        uint8 # (H, W, 3)
    """
    mask, pred = np.asarray(mask) > 0, np.asarray(pred) > 0
    out = np.asarray(image, np.float32).copy()
    for where, colour in ((mask & pred, PALETTE["hit"]), (~mask & pred, PALETTE["false_alarm"]),
                          (mask & ~pred, PALETTE["missed"])):
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def data_efficiency(summary: pd.DataFrame, metric: str = "dice",
                    reference: dict | None = None) -> Figure:
    """Test score against training fraction, one line per model, with its 95 % CI band.

    Args:
        summary: rows of ``summary.csv`` with ``model``, ``fraction``, ``<metric>_mean``,
            ``<metric>_ci_low`` and ``<metric>_ci_high`` (rows without them are left out).
        metric: per-image metric averaged over test images, e.g. ``dice`` or
            ``jaccard_thresholded``.
        reference: optional ``{model: {fraction: value}}`` drawn dashed and labelled as reference.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    rows = (summary.dropna(subset=[f"{metric}_mean"]) if f"{metric}_mean" in summary
            else summary.iloc[:0])
    for model, group in rows.sort_values("fraction").groupby("model", sort=True):
        x, colour = 100 * group["fraction"].astype(float), MODEL_COLOURS.get(model)
        ax.plot(x, group[f"{metric}_mean"], "o-", color=colour, label=display_name(model))
        ax.fill_between(x, group[f"{metric}_ci_low"], group[f"{metric}_ci_high"],
                        color=colour, alpha=0.2)
    for model, values in (reference or {}).items():
        fractions = sorted(values)
        ax.plot([100 * f for f in fractions], [values[f] for f in fractions], "x--",
                color=MODEL_COLOURS.get(model), alpha=0.6,
                label=f"{display_name(model)}: original study (reference)")
    ax.set_xscale("log")
    ax.set_xticks([10, 25, 50, 100], labels=["10 %", "25 %", "50 %", "100 %"])
    ax.minorticks_off()
    ax.set(xlabel="training data used", ylabel=f"test {metric} (per image, mean)",
           title=f"Data efficiency: {metric} (bands: 95 % bootstrap CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def metric_distributions(per_image: pd.DataFrame, metric: str = "dice") -> Figure:
    """Per-image score distributions: one panel per training fraction, a box and the points per
    model.

    Args:
        per_image: long table with columns ``model``, ``fraction`` and ``metric`` (one row per image
            and run).
        metric: the column to show.
    """
    fractions = sorted(per_image["fraction"].unique())
    fig = Figure(figsize=(3.2 * max(1, len(fractions)), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(fractions)), sharey=True, squeeze=False)[0])
    jitter = np.random.default_rng(0)
    for ax, fraction in zip(axes, fractions):
        here = per_image[per_image["fraction"] == fraction]
        models = sorted(here["model"].unique())
        data = [here.loc[here["model"] == m, metric].dropna().to_numpy() for m in models]
        ax.boxplot(data, showfliers=False, widths=0.5)
        for k, (model, values) in enumerate(zip(models, data), start=1):
            ax.scatter(k + jitter.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.5,
                       color=MODEL_COLOURS.get(model))
        ax.set_xticks(range(1, len(models) + 1), labels=models)
        ax.set_title(f"{100 * fraction:g} % of training data", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"test {metric}, one point per image")
    return fig


def training_curves(histories: pd.DataFrame) -> Figure:
    """Loss and validation Dice per epoch: one column per model, one line per training fraction.

    Args:
        histories: long table of ``history.csv`` rows with added ``model`` and ``fraction`` columns
            (epoch, train_loss, val_loss, val_dice).
    """
    models = sorted(histories["model"].unique()) if len(histories) else [""]
    fig = Figure(figsize=(3.6 * len(models), 5.4), layout="constrained")
    axes = fig.subplots(2, len(models), squeeze=False, sharex=True)
    for col, model in enumerate(models):
        runs = histories[histories["model"] == model]
        fractions = sorted(runs["fraction"].unique())
        for k, fraction in enumerate(fractions):
            run, colour = (runs[runs["fraction"] == fraction],
                           colormaps["viridis"](k / max(1, len(fractions) - 1)))
            axes[0, col].plot(run["epoch"], run["train_loss"], "o-", ms=3, color=colour,
                              label=f"{100 * fraction:g} %")
            axes[0, col].plot(run["epoch"], run["val_loss"], "s--", ms=3, color=colour)
            axes[1, col].plot(run["epoch"], run["val_dice"], "o-", ms=3, color=colour)
        axes[0, col].set_title(f"{display_name(model)}: loss (solid train, dashed val)",
                               fontsize=LABEL)
        axes[1, col].set_title(f"{display_name(model)}: validation Dice", fontsize=LABEL)
        axes[1, col].set_xlabel("epoch")
        if fractions:
            axes[0, col].legend(fontsize=8, title="training data", title_fontsize=8)
    last_epoch = int(histories["epoch"].max()) if len(histories) else 1
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes[0, 0].set_ylabel("Dice + BCE loss")
    axes[1, 0].set_ylabel("Dice (per image, mean)")
    # runs whose history.csv is unreadable (report.load_histories)
    broken = histories.attrs.get("broken") or []
    if broken:
        fig.suptitle("left out (broken): " + "; ".join(b.split(" (")[0] for b in broken),
                     fontsize=7, wrap=True)
    return fig


def pick_cases(scores: np.ndarray, per_group: int = 3) -> dict[str, np.ndarray]:
    """Indices of the best, median and worst scores, ``per_group`` each, no image twice; best
    first."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")  # best first
    n = len(order)
    if n < 3 * per_group:
        return dict(zip(("best", "median", "worst"), np.array_split(order, 3)))
    mid = n // 2 - per_group // 2
    return {"best": order[:per_group], "median": order[mid:mid + per_group],
            "worst": order[n - per_group:]}


def case_gallery(images, masks, preds, scores, ids, per_group: int = 3,
                 size: float = 2.2) -> Figure:
    """Best, median and worst test cases: truth outline light blue, prediction outline orange.

    Args:
        images: uint8 # (N, H, W, 3)
        masks: binary # (N, H, W)
        preds: binary # (N, H, W)
        scores: per-image Dice (or another score) # (N,)
        ids: ISIC ids # (N,)
        per_group: cases per row.
    """
    groups = pick_cases(scores, per_group)
    fig = Figure(figsize=(size * per_group, size * 3 + 0.3), layout="constrained")
    axes = fig.subplots(3, per_group, squeeze=False)
    for row, (name, picked) in zip(axes, groups.items()):
        for ax, k in _pad(row, picked):
            ax.axis("off")
            if k is not None:
                ax.imshow(outlined(images[k], masks[k], preds[k]))
                ax.set_title(f"{name} · {ids[k]}\nDice {scores[k]:.3f}", fontsize=LABEL)
    fig.suptitle("Test cases: best, median and worst", fontsize=TITLE)
    outline_legend(fig)
    return fig


def _pad(axes, picked) -> list:
    """Pairs ``(ax, index or None)`` so rows with fewer cases than axes stay blank."""
    picked = list(picked)
    return [(ax, picked[k] if k < len(picked) else None) for k, ax in enumerate(axes)]


def prediction_grid(models: dict, prepared, split: str = "val", count: int = 4,
                    threshold: float = 0.5) -> Figure | str:
    """What trained models predict on the first ``count`` images of a split: one row per model.

    Each picture is the image with the truth outlined in light blue and the prediction in orange;
    its title is that image's Dice (per image, at the training size).

    Args:
        models: label → model in eval mode on its device (e.g. ``runs.load_run_model(run_dir)``).
        prepared: the prepared dataset.
        split: ``val`` (default) or ``test``.
        count: images per row.
        threshold: probability at or above which a pixel counts as lesion.
    """
    if not models:
        return "No trained model to show here yet: train one first (the training cell above)."
    rows = prepared.indices(split)[:count]
    masks = np.asarray(prepared.masks[rows]).astype(bool)  # (N, S, S)
    fig = Figure(figsize=(2.3 * len(rows) + 1.2, 2.4 * len(models)), layout="constrained")
    axes = np.asarray(fig.subplots(len(models), len(rows), squeeze=False))
    for line, (label, model) in zip(axes, models.items()):
        _, probs, _ = next(inference.iter_probs(model, prepared.images, rows, batch_size=len(rows)))
        preds = np.stack([inference.finalize(p, threshold) for p in probs])
        dice = inference.score_images(preds, masks, with_hd95=False)["dice"]
        for k, ax in enumerate(line):
            ax.imshow(outlined(np.asarray(prepared.images[rows[k]]), masks[k], preds[k]))
            ax.set_title(f"Dice {dice[k]:.2f}", fontsize=LABEL)
            ax.set_xticks([])
            ax.set_yticks([])
        line[0].set_ylabel(display_name(label), fontsize=LABEL)
    outline_legend(fig)
    return fig


def attention_weights(model: torch.nn.Module, image: np.ndarray, layer: int = -1) -> np.ndarray:
    """The self-attention of one TransUNet Transformer layer over an image, averaged over its heads.

    Args:
        model: a TransUNet in eval mode (on the CPU or its device).
        image: uint8 # (S, S, 3)
        layer: which Transformer layer (default the last).

    Returns:
        float (N, N): row q is how much token q attends to every token (each row sums to 1); the N
            tokens are the
        positions of the 1/16 feature map, row by row.
    """
    seen = []
    attention = model.transformer.layers[layer].attn
    handle = attention.attn_drop.register_forward_hook(
        lambda _m, _i, weights: seen.append(weights.detach()))
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(to_model_input(np.asarray(image)[None], device))
    finally:
        handle.remove()
    return seen[0][0].mean(0).float().cpu().numpy()  # (heads, N, N) → (N, N)


def attention_map(model: torch.nn.Module, image: np.ndarray, mask: np.ndarray,
                  layer: int = -1) -> Figure:
    """Where one token of the lesion looks: the image with the token marked, and its attention over
    the image.

    The query token is the position of the 1/16 map nearest the lesion's centre (from the mask); its
    row of :func:`attention_weights` is drawn at the image's size.
    """
    weights = attention_weights(model, image, layer)
    side = int(round(len(weights) ** 0.5))
    ys, xs = (np.nonzero(mask) if np.any(mask)
              else (np.array([mask.shape[0] // 2]), np.array([mask.shape[1] // 2])))
    cell = mask.shape[0] / side
    qy, qx = min(int(ys.mean() // cell), side - 1), min(int(xs.mean() // cell), side - 1)
    heat = weights[qy * side + qx].reshape(side, side)
    fig = Figure(figsize=(8.6, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(overlay(np.asarray(image), mask))
    left.add_patch(matplotlib.patches.Rectangle((qx * cell, qy * cell), cell, cell, fill=False,
                                                color=np.divide(PALETTE["query"], 255), lw=2))
    left.set_title("image, lesion (light blue), query token (white)", fontsize=8)
    right.imshow(np.asarray(image))
    shown = right.imshow(np.kron(heat, np.ones((int(cell), int(cell)))), cmap="magma", alpha=0.6)
    fig.colorbar(shown, ax=right, shrink=0.8, label="attention")
    right.set_title(f"its attention in Transformer layer "
                    f"{(layer if layer >= 0 else len(model.transformer.layers) + layer) + 1}"
                    f" (mean of the heads)", fontsize=8)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def unet_diagram(model: torch.nn.Module, image_size: int) -> Figure:
    """A UNet drawn from the model itself: a box per level (channels × side), down the encoder, up
    the decoder, with its skip connections (needs the kit's UNet: blocks ``inc``, ``downs.i``,
    ``ups.i``)."""
    shapes = layer_shapes(model, image_size).set_index("block")["output shape"]
    encoder = [shapes["inc"]] + [shapes[f"downs.{i}"] for i in range(len(model.downs))]
    decoder = [shapes[f"ups.{i}"] for i in range(len(model.ups))]
    depth = len(encoder) - 1
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()

    def box(x, level, shape, colour):
        ax.add_patch(matplotlib.patches.FancyBboxPatch((x - 0.45, -level - 0.3), 0.9, 0.6,
                                                       boxstyle="round,pad=0.02", color=colour,
                                                       alpha=0.85))
        ax.text(x, -level, f"{shape[1]} ch\n{shape[2]}×{shape[3]}", ha="center",
                va="center", fontsize=7)

    for level, shape in enumerate(encoder):
        box(level, level, shape, DIAGRAM["encoder"] if level < depth else DIAGRAM["bottleneck"])
    for k, shape in enumerate(decoder):
        level = depth - 1 - k
        box(2 * depth - level, level, shape, DIAGRAM["decoder"])
        ax.annotate("", xy=(2 * depth - level - 0.47, -level), xytext=(level + 0.47, -level),
                    arrowprops={"arrowstyle": "->", "color": "grey", "lw": 1, "ls": "--"})
    ax.text(depth / 2 - 0.6, 0.55, "encoder: pool, then 2 convolutions", fontsize=8)
    ax.text(1.5 * depth - 0.6, 0.55,
            "decoder: up-convolution, join the skip, 2 convolutions", fontsize=8)
    ax.text(depth, -depth - 0.55, "bottleneck", ha="center", fontsize=8)
    ax.set(xlim=(-0.7, 2 * depth + 0.7), ylim=(-depth - 0.8, 0.9))
    ax.axis("off")
    ax.set_title("UNet, drawn from the model (dashed: skip connections)", fontsize=9)
    return fig
