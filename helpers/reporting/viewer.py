"""An interactive viewer of predictions (ipywidgets): pick a run and a test image, slide the
threshold.

    viewer = PredictionViewer()   # the finished runs under results/runs
    viewer                        # last line of a notebook cell: shows controls, picture and scores

Four panels: the image, the ground truth, the probs with the prediction's outline, and the errors
(white: hit, orange: false alarm, dark blue: missed). Below them, that image's own scores (per
image, at the training size). Probs are cached per run, image and TTA setting, so sliding the
threshold or toggling post-processing is instant; the picture is a PNG in an ``ipywidgets.Image``,
so the viewer builds and updates without a browser (which is how the tests drive it). It uses only
what ipywidgets 7.7 (Colab's) and 8 both have.
"""
from __future__ import annotations

import html
import io
from pathlib import Path

import IPython.display
import ipywidgets as w
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from helpers.evaluation import inference, scoring
from helpers.reporting import figures
from helpers.training import devices, runs

SHOWN = (("dice", "Dice"), ("iou", "IoU"), ("jaccard_thresholded", "thresholded Jaccard"),
         ("accuracy", "pixel accuracy"), ("sensitivity", "sensitivity"),
         ("specificity", "specificity"), ("hd95", "HD95 (px)"))


class PredictionViewer:
    """Controls, picture and scores of one test image of one finished run.

    Args:
        results_root: the results folder (default ``paths.results_dir()``); its finished runs are
            listed.
        load_model: ``run_dir → nn.Module``; default :func:`helpers.training.runs.load_run_model`
            (best.pt).
        to_input: uint8 (B, S, S, 3) → float (B, 3, S, S); default
            :func:`helpers.data.loaders.to_model_input`.
        device: where to run the model (default :func:`helpers.training.devices.pick_device`).

    Raises:
        ValueError: there is no finished run to show (the message says what to run first).
    """

    def __init__(self, results_root=None, *, load_model=None, to_input=None, device=None):
        self.root, self.load_model, self.to_input = (
            results_root, load_model or runs.load_run_model, to_input)
        self.device = torch.device(device) if device else devices.pick_device()
        run_ids = [p.name for p in scoring.list_run_dirs(results_root)
                   if scoring.run_status(p)[0] in ("ok", "not evaluated")
                   and (load_model or runs.has_checkpoint(p))]
        if not run_ids:
            raise ValueError(f"No finished run with its best.pt in "
                             f"{scoring.runs_dir(results_root)}: train one first (notebooks 02 and "
                             "03), or mount Drive if its checkpoints are there (a results folder "
                             "copied without checkpoints can be read, not viewed live).")
        self._cache, self._model, self.updates, self._loading = {}, (None, None), 0, False
        # run id → why it cannot be shown (the file named); left out of the list
        self.broken: dict[str, str] = {}
        self.notice = w.HTML()
        self.run = w.Dropdown(options=run_ids, description="run")
        self.image = w.Dropdown(description="test image")
        self.threshold = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05,
                                       description="threshold")
        self.tta = w.Checkbox(value=False, description="flip TTA")
        self.post = w.Checkbox(value=False, description="post-process")
        self.picture = w.Image(format="png")
        self.scores = w.HTML()
        self.widget = w.VBox([self.notice, w.HBox([self.run, self.image]),
                              w.HBox([self.threshold, self.tta, self.post]), self.picture,
                              self.scores])
        self.run.observe(lambda _: self._load_run(), names="value")
        for control in (self.image, self.threshold, self.tta, self.post):
            control.observe(lambda _: self.update(), names="value")
        self._load_run()

    def _ipython_display_(self) -> None:
        """Show the controls as the cell's output; works with ipywidgets 7 (Colab's) and 8."""
        IPython.display.display(self.widget)

    def _load_run(self) -> None:
        """Open the chosen run; a run that cannot be opened (a truncated best.pt, its data gone...)
        is listed as broken above the controls, with the file named, and the next run is opened
        instead."""
        while not self._loading and self.run.value is not None:
            try:
                return self._open_run()
            except (OSError, ValueError, RuntimeError) as err:  # the kit's errors name the file
                self._drop_broken(self.run.value, err)

    def _drop_broken(self, run_id: str, err: Exception) -> None:
        """List a run as broken (why, in the notice) and take it off the runs offered."""
        self.broken[run_id] = f"{type(err).__name__}: {' '.join(str(err).split())}"
        self.notice.value = "<br>".join(f"<b>broken, not shown:</b> {name}: {html.escape(why)}"
                                        for name, why in self.broken.items())
        self._loading = True  # no redraw while the options change
        self.run.options = [r for r in self.run.options if r != run_id]
        self._loading = False
        if self.run.options:
            self.run.value = self.run.options[0]
        else:
            self.picture.value, self.scores.value = (
                b"", "No run here can be shown (each is listed above).")
            self.run.value = None

    def _open_run(self) -> None:
        """Open the chosen run's data and model; list its test images (worst Dice first, if
        known)."""
        run_dir = scoring.runs_dir(self.root) / self.run.value
        self.prepared = runs.load_run_data(run_dir)
        self._model = (self.run.value, self.load_model(run_dir).to(self.device).eval())
        rows = self.prepared.indices("test")
        ids = self.prepared.table["isic_id"].iloc[rows].to_numpy()
        labels = list(ids)
        if (run_dir / inference.METRICS_FILE).is_file():
            dice = (pd.read_csv(run_dir / inference.METRICS_FILE).set_index("isic_id")["dice"]
                    .reindex(ids).to_numpy())
            order = np.argsort(dice, kind="stable")
            rows, labels = rows[order], [f"{ids[k]} (Dice {dice[k]:.3f})" for k in order]
        self._loading = True  # options and value change together: draw once, after both
        self.image.options = list(zip(labels, rows.tolist()))
        self.image.value = int(rows[0])
        self._loading = False
        self.update()

    def probs(self) -> np.ndarray:
        """Probs of the current image, float (S, S), cached per run, image and TTA."""
        key = (self.run.value, self.image.value, self.tta.value)
        if key not in self._cache:
            rows = np.array([self.image.value])
            _, probs, _ = next(inference.iter_probs(self._model[1], self.prepared.images, rows,
                                                   to_input=self.to_input, tta=self.tta.value))
            self._cache[key] = probs[0]
        return self._cache[key]

    def current(self) -> tuple[np.ndarray, pd.Series]:
        """The current prediction, bool (S, S), and its per-image scores."""
        preds = inference.finalize(self.probs(), self.threshold.value, self.post.value)
        mask = np.asarray(self.prepared.masks[self.image.value])
        return preds, inference.score_images(preds[None], mask[None]).iloc[0]

    def update(self) -> None:
        """Redraw the picture and the scores for the current settings."""
        if self._loading or self.image.value is None or self.run.value is None:
            return
        preds, scores = self.current()
        self.picture.value = self._png(preds)
        cells = "".join(f"<td style='padding:0 8px'>{label}<br><b>{scores[key]:.3f}</b></td>"
                        for key, label in SHOWN)
        self.scores.value = (f"<table><tr>{cells}</tr></table><small>Scores of this image only "
                             f"(per image, at {preds.shape[0]} px), threshold "
                             f"{self.threshold.value:.2f}, TTA {self.tta.value}, post-processing "
                             f"{self.post.value}.</small>")
        self.updates += 1

    def _png(self, preds: np.ndarray) -> bytes:
        image = np.asarray(self.prepared.images[self.image.value])
        mask = np.asarray(self.prepared.masks[self.image.value])
        fig = Figure(figsize=(11, 3.3), layout="constrained")
        axes = fig.subplots(1, 4)
        axes[0].imshow(image)
        axes[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        axes[2].imshow(figures.overlay(np.stack([(self.probs() * 255).astype(np.uint8)] * 3, -1),
                                       mask, pred=preds))
        axes[3].imshow(figures.error_overlay(image, mask, preds))
        titles = ("image", "truth (white: lesion)",
                  "probs\noutlines: truth light blue, prediction orange",
                  "errors\nwhite hit, orange false alarm, dark blue missed")
        for ax, title in zip(axes, titles):
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        return buffer.getvalue()


def prediction_viewer(results_root: str | Path | None = None, **kwargs) -> PredictionViewer:
    """Build a :class:`PredictionViewer` (same arguments)."""
    return PredictionViewer(results_root, **kwargs)
