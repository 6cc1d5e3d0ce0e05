"""Pictures of a model's inside, drawn from the model itself, and the numbers behind them (notebook
03).

- :func:`unetpp_grid`: UNet++'s nodes ``x_i_j`` on the paper's grid, with their channels and sides
  from a real forward pass, the dense skips along each row, the up-sampling from below-left and the
  deep-supervision heads.
- :func:`query_token` and :func:`attention_shares`: where one TransUNet token looks, in numbers: the
  share of its attention on the lesion, on the border of the image and on its four corners, beside
  the share those tokens would get if it attended to every token equally.

Colours come from the kit's colour-vision-safe palette (blues and orange, never red with green).
"""
from __future__ import annotations

import re

import matplotlib.patches
import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from helpers.evaluation.inference import PALETTE
from helpers.models.summary import layer_shapes

# a node's row, or an encoder stage (the node x_i_0)
NODE = re.compile(r"x_(\d+)_(\d+)$|encoder\[(\d+)\]$")


def node_shapes(table: pd.DataFrame) -> dict[tuple[int, int], tuple]:
    """``{(i, j): output shape}`` of UNet++'s nodes from
    :func:`helpers.models.summary.layer_shapes`' table.

    An encoder's stage ``encoder[i]`` (the ``r34`` config) is the node ``x_i_0``.
    """
    shapes = {}
    for block, shape in zip(table["block"], table["output shape"]):
        found = NODE.match(block)
        if found and found.group(3) is not None:
            shapes[(int(found.group(3)), 0)] = shape
        elif found:
            shapes[(int(found.group(1)), int(found.group(2)))] = shape
    return shapes


def _place(i: int, j: int) -> tuple[float, float]:
    """Where node x_i_j sits: down the encoder at the left, up to x_0_L at the right (the paper's
    layout)."""
    return i + 2 * j, -1.2 * i


def _arrow(ax, start, end, colour, style="-", rad=0.0) -> None:
    """An arrow from the edge of the box at ``start`` to the edge of the box at ``end``."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    # from a box's centre to its edge
    t = min(0.5 / abs(dx) if dx else np.inf, 0.34 / abs(dy) if dy else np.inf)
    ax.annotate("", xy=(end[0] - t * dx, end[1] - t * dy),
                xytext=(start[0] + t * dx, start[1] + t * dy), zorder=1,
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1, "ls": style, "shrinkA": 0,
                            "shrinkB": 0, "connectionstyle": f"arc3,rad={rad}"})


def _edges(ax, shapes: dict) -> None:
    """Pooling down the encoder, up-sampling from below-left, dense skips along each row."""
    grey, blue = "0.45", tuple(c / 255 for c in PALETTE["missed"])
    for (i, j) in shapes:
        if j == 0 and i > 0:
            _arrow(ax, _place(i - 1, 0), _place(i, 0), grey)  # pool, then two convolutions
        if j > 0:
            _arrow(ax, _place(i + 1, j - 1), _place(i, j), blue)  # up-sample from below-left
            for k in range(j):  # every earlier node of the row: the nested, dense skips
                _arrow(ax, _place(i, k), _place(i, j), grey, "--", rad=0.0 if k == j - 1 else -0.25)


def _heads(ax, depth: int) -> None:
    """An orange box above each x_0_j that has a head."""
    orange = tuple(c / 255 for c in PALETTE["prediction"])
    for j in range(1, depth + 1):
        x, y = _place(0, j)
        ax.add_patch(matplotlib.patches.FancyBboxPatch((x - 0.45, y + 0.75), 0.9, 0.4,
                                                       boxstyle="round,pad=0.02", color=orange,
                                                       alpha=0.9))
        ax.text(x, y + 0.95, f"head L{j}", ha="center", va="center", fontsize=7)
        _arrow(ax, (x, y), (x, y + 0.75 + 0.34), orange)


def unetpp_grid(model: torch.nn.Module, image_size: int) -> Figure:
    """UNet++ drawn from the model: a box per node ``x_i_j`` (channels, side) on the paper's grid.

    Boxes are shaded by the diagonal ``i + j`` (the depth ``L`` of the smallest pruned network that
    needs them), dashed arrows are the dense skips of a row, blue ones the up-sampling from
    below-left, grey solid ones the pooling down the encoder; with deep supervision an orange head
    sits above every ``x_0_j``.

    Args:
        model: a UNet++ of the kit (any config, with or without an encoder).
        image_size: side of the square input, a multiple of 2 ** depth.
    """
    shapes = node_shapes(layer_shapes(model, image_size))
    depth = max(i for i, _ in shapes)
    shades = colormaps["Blues"]
    fig = Figure(figsize=(1.05 * (2 * depth + 2), 1.0 * (1.2 * depth + 2.4)), layout="constrained")
    ax = fig.subplots()
    for (i, j), shape in shapes.items():
        x, y = _place(i, j)
        ax.add_patch(matplotlib.patches.FancyBboxPatch(
            (x - 0.48, y - 0.32), 0.96, 0.64, boxstyle="round,pad=0.02",
            color=shades(0.25 + 0.6 * (i + j) / max(depth, 1)), zorder=2))
        ax.text(x, y, f"x_{i}_{j}\n{shape[1]} ch · {shape[-1]} px", ha="center", va="center",
                fontsize=7, color="white" if i + j > depth / 2 else "black", zorder=3)
    _edges(ax, shapes)
    if getattr(model.config, "deep_supervision", False):
        _heads(ax, depth)
    ax.set(xlim=(-0.8, 2 * depth + 0.8), ylim=(-1.2 * depth - 0.6, 1.4))
    ax.axis("off")
    ax.set_title(f"UNet++ drawn from the model at {image_size} px: row i = depth (side / 2^i), "
                 "column j; darker = needed only by deeper heads", fontsize=9)
    return fig


def query_token(mask: np.ndarray, side: int) -> tuple[int, int]:
    """The token (row, column) of a ``side`` × ``side`` grid nearest the lesion's centre (the image
    centre if none).

    The same query :func:`helpers.reporting.figures.attention_map` marks.
    """
    ys, xs = (np.nonzero(mask) if np.any(mask)
              else (np.array([mask.shape[0] // 2]), np.array([mask.shape[1] // 2])))
    cell = mask.shape[0] / side
    return min(int(ys.mean() // cell), side - 1), min(int(xs.mean() // cell), side - 1)


def token_groups(mask: np.ndarray, side: int) -> dict[str, np.ndarray]:
    """Boolean (side, side) maps of the token groups :func:`attention_shares` reports.

    ``lesion``: tokens whose patch is mostly lesion; ``border``: the outermost ring of the grid;
    ``corner``: its four corner tokens (part of the border).
    """
    cell = mask.shape[0] // side
    patches = (np.asarray(mask, bool)[:side * cell, :side * cell]
               .reshape(side, cell, side, cell).mean((1, 3)))
    border = np.ones((side, side), bool)
    border[1:-1, 1:-1] = False
    corners = np.zeros((side, side), bool)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    return {"lesion": patches > 0.5, "border": border, "corner": corners}


def attention_shares(weights: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """How one token's attention splits over the image: the query nearest the lesion's centre, as in
    the picture.

    Args:
        weights: float (N, N) from :func:`helpers.reporting.figures.attention_weights` (rows sum to
            1; the N tokens are the positions of a square grid, row by row).
        mask: binary (S, S), the image's lesion.

    Returns:
        One row per group (the query token itself, the lesion, the border ring, the four corners):
        how many tokens it has, the share of tokens it is (what attention spread evenly would give
        it), and the share of the query's attention it gets; ``times_even`` is the second share over
        the first.
    """
    side = int(round(len(weights) ** 0.5))
    qy, qx = query_token(mask, side)
    row = weights[qy * side + qx].reshape(side, side)
    itself = np.zeros((side, side), bool)
    itself[qy, qx] = True
    groups = {"the query token itself": itself,
              **{f"{k} tokens": v for k, v in token_groups(mask, side).items()}}
    table = pd.DataFrame([{"tokens": int(g.sum()), "share of tokens": g.mean(),
                           "share of attention": row[g].sum()}
                          for g in groups.values()], index=list(groups))
    table["times_even"] = table["share of attention"] / table["share of tokens"]
    return table
