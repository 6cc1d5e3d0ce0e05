"""Training curves, live in a notebook: one figure for a grid of runs, redrawn as epochs end (every
few seconds).

    curves = LiveCurves()
    grid.run_grid(cfg, prepared, callbacks=[curves])
    # or live.train(cfg, prepared): the same, with these curves

In a Jupyter kernel the figure is shown once and then updated in place (also under papermill,
whose saved notebook keeps the last drawing); elsewhere nothing is drawn until you ask for
:meth:`LiveCurves.figure`. Runs that were skipped because they had finished are drawn from
their stored history. Figures are plain matplotlib ``Figure`` objects: nothing changes global
matplotlib state.
"""
from __future__ import annotations

import os
import re
import time

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from helpers.training import grid, runs


def short_label(run_id: str) -> str:
    """``unet-paper_f025_256px_seed_s42_isic2018`` → ``unet-paper f025``: enough to tell a grid's
    runs apart."""
    found = re.match(r"(.+?)_(f\d{3})_", run_id)
    return f"{found[1]} {found[2]}" if found else run_id


def draw_histories(histories: dict[str, pd.DataFrame], fig: Figure | None = None) -> Figure:
    """Loss (train solid, validation dashed) and validation Dice per epoch, one colour per run.

    Args:
        histories: run id -> its history table (columns as in ``history.csv``).
        fig: a figure to draw into (cleared first); default a new one.
    """
    fig = fig or Figure(figsize=(13, 3.8), layout="constrained")
    fig.clear()
    ax_loss, ax_dice = fig.subplots(1, 2)
    for k, (run_id, history) in enumerate(histories.items()):
        style = {"color": f"C{k % 10}", "marker": "o", "ms": 3}
        ax_loss.plot(history["epoch"], history["train_loss"], "-", **style,
                     label=short_label(run_id))
        ax_loss.plot(history["epoch"], history["val_loss"], "--", **style)
        ax_dice.plot(history["epoch"], history["val_dice"], "-", **style)
    ax_loss.set(title="Loss (solid: train, dashed: validation)", xlabel="epoch",
                ylabel="0.5·Dice + 0.5·BCE")
    ax_dice.set(title="Validation Dice (mean per image)", xlabel="epoch",
                ylabel="Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if histories:
        fig.legend(loc="outside right upper", fontsize=8)
    return fig


def plot_runs(run_ids) -> Figure:
    """The curves of finished or running runs, read from their ``history.csv``."""
    return draw_histories({str(r): runs.read_history(runs.run_dir(str(r))) for r in run_ids})


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython  # optional: outside Jupyter there may be no IPython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


class LiveCurves:
    """A ``fit`` callback that keeps one figure of all runs up to date.

    Args:
        live: redraw after every epoch; default: when running inside a Jupyter kernel
            (``KIT_LIVE_PLOTS=0`` turns it off, e.g. for long headless batches).
    """

    # seconds: at most one redraw this often (each is an image sent to the notebook and saved)
    every = 3.0

    def __init__(self, live: bool | None = None):
        if live is None:
            live = _in_kernel() and os.environ.get("KIT_LIVE_PLOTS", "1") != "0"
        self.live, self.histories, self._fig, self._handle = live, {}, None, None
        self._drawn = -float("inf")

    def __call__(self, run_id: str, history: list[dict]) -> None:
        """Record a run's history so far (called by ``fit`` after every epoch); redraw if it is
        time."""
        self.histories[run_id] = pd.DataFrame(history)
        if self.live and time.monotonic() - self._drawn >= self.every:
            self.show()

    def show(self) -> None:
        """Draw the curves now, into the figure the notebook shows (made on the first call)."""
        from IPython.display import display  # optional: only in a notebook kernel

        self._fig = draw_histories(self.histories, self._fig)
        if self._handle is None:
            self._handle = display(self._fig, display_id=True)
        else:
            self._handle.update(self._fig)
        self._drawn = time.monotonic()

    def figure(self) -> Figure:
        """The curves of every run seen so far."""
        self._fig = draw_histories(self.histories, self._fig)
        return self._fig


def train(config, prepared, *, restart: bool = False, keep_last: bool = False,
          local_fallback: bool = False):
    """Train a notebook's grid with live curves: what notebooks 02 and 03 call (see
    :func:`helpers.training.grid.run_grid`).

    Returns:
        The grid's table, one row per run.
    """
    curves = LiveCurves()
    table = grid.run_grid(config, prepared, restart=restart, keep_last=keep_last,
                          local_fallback=local_fallback, callbacks=[curves])
    if _in_kernel() and curves.histories:
        # the last epochs (also in a headless run, which redraws nothing while training)
        curves.show()
    return table
