"""TensorBoard event files of a run, beside its ``history.csv``: optional, on wherever ``tensorboard`` is installed.

After every epoch :class:`EpochBoard` writes the epoch's row of ``history.csv`` as scalars (the same names, the
epoch as the step) into ``<run folder>/tensorboard/``, and at the first epoch, every :data:`IMAGE_EVERY`-th and the
last, :data:`IMAGE_COUNT` fixed validation images beside their truth mask and the model's probability map. Open
them with ``tensorboard --logdir <results>/runs`` (on Colab: ``%load_ext tensorboard``, then
``%tensorboard --logdir <results>/runs``).

``history.csv`` stays the record; the event files are a view of it. A resumed run writes only the epochs it
trains, in a new event file whose ``purge_step`` hides anything an interrupted process wrote from there on, so no
step appears twice. It is on where ``torch.utils.tensorboard`` imports (Colab ships ``tensorboard``; ``make``
installs it), off and silent where it does not, and off when ``KIT_TENSORBOARD=0``.
:class:`~helpers.training.checkpointer.Checkpointer` calls it on rank 0 only.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import torch

from helpers.data.loaders import to_model_input
from helpers.training.state import RunState

ENV = "KIT_TENSORBOARD"   # 0 (or off, false, no): write no event files
FOLDER = "tensorboard"    # in the run folder
IMAGE_COUNT = 4           # validation images drawn, the first ones of the validation split
IMAGE_EVERY = 5           # draw them at the first epoch, every IMAGE_EVERY-th and the last
IMAGE_TAG = "validation/image-truth-prediction"


def wanted() -> bool:
    """False when ``$KIT_TENSORBOARD`` turns the event files off (0, off, false or no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def summary_writer(folder: Path, purge_step: int):
    """A ``SummaryWriter`` into ``folder`` that hides earlier events from ``purge_step`` on; None without
    ``tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
    except ImportError:  # tensorboard is not installed: no event files, and nothing said about it
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


def draws_images(epoch: int, last: bool, every: int = IMAGE_EVERY) -> bool:
    """True at the first epoch, every ``every``-th and the last: the epochs whose predictions are drawn."""
    return epoch == 1 or epoch % every == 0 or last


@torch.no_grad()
def prediction_panels(run: RunState, count: int = IMAGE_COUNT) -> np.ndarray:
    """The first ``count`` validation images, each beside its truth and the model's probability map.

    Returns:
        uint8 # (count · H, 3 · W, 3): one row per image: image | truth (white) | probability (grey).
    """
    dataset = run.loaders.val.dataset
    pairs = [dataset[k] for k in range(min(count, len(dataset)))]
    images = torch.stack([image for image, _ in pairs])               # uint8 (N, H, W, 3)
    masks = torch.stack([mask for _, mask in pairs])                  # float (N, 1, H, W)
    was_training = run.model.training
    run.model.eval()
    with run.autocast():
        logits = run.model(to_model_input(images, run.device))        # (N, 1, H, W)
    run.model.train(was_training)
    probs = torch.sigmoid(logits.float()).cpu()                       # (N, 1, H, W)
    rows = torch.cat([images, _grey(masks), _grey(probs)], dim=2)     # (N, H, 3W, 3)
    return rows.reshape(-1, *rows.shape[2:]).numpy()                  # (N·H, 3W, 3)


def _grey(maps: torch.Tensor) -> torch.Tensor:
    """Maps in [0, 1] # (N, 1, H, W) as grey uint8 images # (N, H, W, 3)."""
    return (maps[:, 0, :, :, None].clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, -1, -1, 3)


class EpochBoard:
    """The TensorBoard event files of one run, written after each epoch (see the module's docstring).

    Args:
        run_folder: the run's folder; the event files go to ``<run_folder>/tensorboard``.
    """

    def __init__(self, run_folder: Path):
        self.folder = Path(run_folder) / FOLDER
        self.off = not wanted()
        self.writer = None

    def log_epoch(self, run: RunState, row: dict, last: bool) -> None:
        """Write one epoch's ``history.csv`` row (and, at the image epochs, the predictions), then flush.

        A write that fails (e.g. Drive full) turns the event files off for the rest of the run, with one line
        that says so: they never stop training.

        Args:
            run: the run (its model draws the predictions).
            row: the epoch's row of the history: ``epoch`` is the step; every other finite number a scalar.
            last: the run ends with this epoch (its predictions are drawn).
        """
        if self.off:
            return
        try:
            self._write(run, row, last)
        except OSError as err:
            self._give_up(err)

    def _write(self, run: RunState, row: dict, last: bool) -> None:
        if self.writer is None:
            self.writer = summary_writer(self.folder, purge_step=row["epoch"])
            if self.writer is None:  # no tensorboard
                self.off = True
                return
        for name, value in row.items():
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, row["epoch"])
        if draws_images(row["epoch"], last) and len(run.loaders.val.dataset):
            self.writer.add_image(IMAGE_TAG, prediction_panels(run), row["epoch"], dataformats="HWC")
        self.writer.flush()

    def _give_up(self, err: OSError) -> None:
        """Stop writing event files after a failed write, and say so once."""
        self.off, writer, self.writer = True, self.writer, None
        print(f"TensorBoard: writing to {self.folder} failed ({err}); the run goes on without event files "
              f"(history.csv holds every epoch). KIT_TENSORBOARD=0 turns them off.")
        with contextlib.suppress(OSError):  # the same failure again: it has been said
            if writer is not None:
                writer.close()

    def close(self) -> None:
        """Flush and close the event file (a later epoch opens a new one)."""
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError as err:
            self._give_up(err)
        self.writer = None
