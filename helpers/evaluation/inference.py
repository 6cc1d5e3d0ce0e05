"""Test-split inference and per-image scores, written into a run folder.

One path from model to numbers, used by notebook 04, the report, the viewer and the challenge
export:

    images uint8 (N, S, S, 3) → to_input → model → sigmoid → probs (N, S, S)   [optional flip TTA]
    probs → threshold → [optional post-processing] → preds (bool)              at the training size
    probs → bilinear resize to the original size → threshold → [post-processing]
          → preds at full size

Every score is **per image** (one value per test image, from :mod:`helpers.training.metrics`);
tables and reports average them over images (mean ± std). Columns of ``test_metrics.csv``:
``isic_id``, ``dice``, ``iou``, ``accuracy``, ``sensitivity``, ``specificity``,
``jaccard_thresholded`` (the ISIC 2018 score), ``hd95`` (in training-size pixels) and, when the
original masks are on disk, the same scores at the original resolution with the suffix ``_orig``
(what the challenge scores; no HD95 there).

Latency is the time from cached uint8 images to probs on the host (normalisation, transfer, model,
sigmoid, TTA) after an untimed warm-up (one batch on a GPU), on the device used: ``images_per_s``
and ``ms_per_image`` in ``eval.json``. Images come in through
:func:`helpers.data.loaders.to_model_input`, the normalisation training used.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from helpers.data.loaders import to_model_input
from helpers.paths import write_atomic
from helpers.training import devices, metrics, runs

METRICS = ("dice", "iou", "accuracy", "sensitivity", "specificity", "jaccard_thresholded", "hd95")
ORIG_METRICS = tuple(f"{m}_orig" for m in METRICS if m != "hd95")
PREDS_FILE, METRICS_FILE, EVAL_FILE = "test_preds.npz", "test_metrics.csv", "eval.json"
# The kit's colour-vision-safe palette (Okabe & Ito's blues and orange; never red with green), RGB
# 0-255. Every overlay and figure takes its colours from here (helpers.reporting.figures re-exports
# it); tests/reporting/test_palette.py checks that the colours shown together stay apart under
# protanopia and deuteranopia.
PALETTE = {"truth": (86, 180, 233), "prediction": (230, 159, 0),      # outlines: light blue, orange
           # white, orange, dark blue
           "hit": (255, 255, 255), "false_alarm": (230, 159, 0), "missed": (0, 114, 178),
           # the attention map's query token: white
           "query": (255, 255, 255)}
ToInput = Callable[[np.ndarray], torch.Tensor]  # uint8 (B, H, W, 3) → float (B, 3, H, W)


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the per-image table, the run facts and the predictions."""

    table: pd.DataFrame                      # one row per image: isic_id and the metric columns
    # n_images, images_per_s, ms_per_image, device, tta, ...
    info: dict
    # bool (N, S, S), final predictions at the training size
    preds: np.ndarray = field(repr=False)


def _forward(model: torch.nn.Module, inputs: torch.Tensor, tta: bool, amp: bool) -> torch.Tensor:
    """probs (B, 1, H, W) fp32; with TTA the mean over identity, horizontal and vertical flips."""
    flips = [(), (-1,), (-2,)] if tta else [()]
    dtype = devices.amp_dtype(inputs.device) if amp else None  # None on the CPU: fp32
    total = torch.zeros((), device=inputs.device)
    with torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None):
        for dims in flips:
            x = torch.flip(inputs, dims) if dims else inputs
            probs = torch.sigmoid(model(x).float())  # (B, 1, H, W)
            total = total + (torch.flip(probs, dims) if dims else probs)
    return total / len(flips)


def iter_probs(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, *,
               to_input: ToInput | None = None, batch_size: int = 16, tta: bool = False,
               amp: bool = False,
               progress: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """Batched inference on the model's device, in eval mode, after an untimed warm-up.

    Args:
        model: maps inputs (B, 3, H, W) to logits (B, 1, H, W); already on its device.
        images: uint8 (N, S, S, 3) (e.g. ``prepared.images``).
        rows: which images, in order.
        to_input: uint8 (B, S, S, 3) → normalised float (B, 3, S, S); default
            :func:`helpers.data.loaders.to_model_input` (ImageNet mean and std, as in training).
        batch_size: images per forward pass.
        tta: average the probs over horizontal and vertical flips.
        amp: autocast on CUDA (bf16, or fp16 where bf16 is unsupported); probs stay fp32.
        progress: show a progress bar.

    Yields:
        ``(rows_of_batch (B,), probs float32 (B, S, S), seconds from uint8 images to probs on the
        host)``.
    """
    device = next(model.parameters()).device
    to_input = to_input or (lambda batch: to_model_input(batch, device))
    model.eval()
    with torch.inference_mode():
        # lazy init, cuDNN autotuning
        warm = rows[:batch_size] if device.type == "cuda" else rows[:1]
        _forward(model, to_input(np.asarray(images[warm])).to(device), tta, amp).cpu()
        for start in tqdm(range(0, len(rows), batch_size), desc="inference", disable=not progress):
            batch = rows[start:start + batch_size]
            cached = np.asarray(images[batch])  # uint8 (B, S, S, 3), read from the cache first
            began = time.perf_counter()
            inputs = to_input(cached).to(device)  # (B, 3, S, S)
            probs = _forward(model, inputs, tta, amp).cpu()  # .cpu() waits for the device
            yield batch, probs[:, 0].numpy(), time.perf_counter() - began


def postprocess(preds: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component and fill its holes; bool (H, W) → bool (H, W).

    An empty prediction stays empty (a lesion is never invented).
    """
    labels, count = ndimage.label(preds, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros_like(preds, dtype=bool)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(labels == largest)


def overlay(image: np.ndarray, mask: np.ndarray, colour=PALETTE["truth"],
            pred: np.ndarray | None = None, width: int = 1) -> np.ndarray:
    """The image with the mask's outline drawn on it (light blue; a prediction's outline in orange).

    Args:
        image: uint8 # (H, W, 3)
        mask: binary # (H, W)
        colour: outline colour of the mask.
        pred: optional binary prediction # (H, W)
        width: outline width in pixels (inwards from the border).

    Returns:
        uint8 # (H, W, 3)
    """
    out = np.array(image, copy=True)
    for m, c in ((mask, colour), (pred, PALETTE["prediction"])):
        if m is None:
            continue
        m = np.asarray(m) > 0
        inner = ndimage.binary_erosion(m, iterations=max(1, int(width)), border_value=1)
        out[m & ~inner] = c
    return out


def finalize(probs: np.ndarray, threshold: float = 0.5, post: bool = False,
             size: tuple[int, int] | None = None) -> np.ndarray:
    """Final binary prediction of one image: resize (bilinear) → threshold → post-process.

    Args:
        probs: float (S, S).
        threshold: probability at or above which a pixel is lesion.
        post: apply :func:`postprocess`.
        size: ``(height, width)`` to resize the probs to first (e.g. the original size); None keeps
            S × S.

    Returns:
        bool (H, W).
    """
    if size is not None and tuple(size) != probs.shape:
        probs = np.asarray(Image.fromarray(probs.astype(np.float32))
                           .resize((int(size[1]), int(size[0])), Image.BILINEAR))
    preds = probs >= threshold
    return postprocess(preds) if post else preds


def score_images(preds: np.ndarray, masks: np.ndarray, with_hd95: bool = True) -> pd.DataFrame:
    """Per-image scores (via :func:`helpers.training.metrics.per_image_metrics`) as a table, one row
    per image.

    Args:
        preds: binary (B, H, W).
        masks: binary (B, H, W).
        with_hd95: include HD95 (in pixels).
    """
    scores = metrics.per_image_metrics(np.asarray(preds, bool), np.asarray(masks, bool),
                                       with_hd95=with_hd95)
    return pd.DataFrame({k: v.cpu().numpy().astype(np.float64) for k, v in scores.items()})


def _original_sizes(prepared, rows: np.ndarray) -> list | None:
    """(h, w) of each row when the table knows them and every original mask can be read (raw file or
    the preparation's originals.zip)."""
    table = prepared.table
    needed = {"orig_height", "orig_width", "mask_path"}
    if (not needed <= set(table.columns) or not hasattr(prepared, "has_originals")
            or not prepared.has_originals(rows)):
        return None
    sub = table.iloc[rows]
    return list(zip(sub["orig_height"].astype(int), sub["orig_width"].astype(int)))


def evaluate(model: torch.nn.Module, prepared, split: str = "test", *,
             to_input: ToInput | None = None, batch_size: int = 16, tta: bool = False,
             post: bool = False, threshold: float = 0.5, original_resolution: bool = True,
             with_hd95: bool = True, amp: bool = False, progress: bool = True) -> Evaluation:
    """Score a model on every image of a split, per image, at the training and the original size.

    Args:
        model: on the device to evaluate on (see :func:`iter_probs`).
        prepared: a :class:`helpers.data.prep.Prepared` dataset.
        split: ``test`` (default), ``val`` or ``train``.
        to_input, batch_size, tta, amp, progress: see :func:`iter_probs`.
        post: largest connected component and hole filling (:func:`postprocess`).
        threshold: probability at or above which a pixel is lesion.
        original_resolution: also score at the original size when every original mask is on disk
            (``info["original_resolution"]`` says whether it was done).
        with_hd95: include HD95 (training-size pixels).

    Returns:
        An :class:`Evaluation`.
    """
    rows = prepared.indices(split)
    if len(rows) == 0:
        raise ValueError(f"{prepared.root}/splits.csv has no {split!r} images to evaluate; prepare "
                         f"the data with a {split} split (notebook 01).")
    sizes = _original_sizes(prepared, rows) if original_resolution else None
    preds, orig_rows, seconds = [], [], 0.0
    for batch, probs, spent in iter_probs(model, prepared.images, rows, to_input=to_input,
                                          batch_size=batch_size, tta=tta, amp=amp,
                                          progress=progress):
        seconds += spent
        preds += [finalize(p, threshold, post) for p in probs]
        for k, row in enumerate(batch):
            if sizes is not None:
                full = finalize(probs[k], threshold, post, sizes[len(orig_rows)])
                truth = prepared.original_mask(row)
                orig_rows.append(score_images(full[None], truth[None], with_hd95=False).iloc[0])
    preds = np.stack(preds)  # (N, S, S)
    table = score_images(preds, np.asarray(prepared.masks[rows]), with_hd95)
    if sizes is not None:
        table = table.join(pd.DataFrame(orig_rows).reset_index(drop=True).add_suffix("_orig"))
    table.insert(0, "isic_id", prepared.table["isic_id"].iloc[rows].to_numpy())
    device = next(model.parameters()).device
    info = {"split": split, "n_images": len(rows), "images_per_s": len(rows) / max(seconds, 1e-9),
            "ms_per_image": 1000 * seconds / len(rows), "device": str(device),
            "hardware": devices.hardware(device, devices.DistInfo()),
            "tta": tta, "postprocess": post, "threshold": threshold, "batch_size": batch_size,
            "amp": amp, "original_resolution": sizes is not None,
            "image_size": int(prepared.images.shape[1])}
    return Evaluation(table, info, preds)


def save_evaluation(result: Evaluation, run_dir: str | Path) -> Path:
    """Write ``eval.json``, ``test_preds.npz`` (bit-packed preds) and, last, ``test_metrics.csv``.

    ``test_metrics.csv`` appears only when everything else is written, so its presence means the
    run was evaluated completely. Returns its path.
    """
    run_dir = Path(run_dir)
    info = {**result.info, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    runs.write_json(run_dir / EVAL_FILE, info)
    save_predictions(result.preds, result.table["isic_id"].to_numpy(str), run_dir)
    write_atomic(run_dir / METRICS_FILE,
                 lambda p: result.table.to_csv(p, index=False, float_format="%.6g"))
    return run_dir / METRICS_FILE


def save_predictions(preds: np.ndarray, isic_ids: np.ndarray, run_dir: str | Path) -> Path:
    """Write final predictions, bool (N, S, S), bit-packed with their image ids, as
    ``test_preds.npz``."""
    packed = np.packbits(np.asarray(preds, bool), axis=-1)
    return write_atomic(Path(run_dir) / PREDS_FILE, lambda p: np.savez_compressed(
        p, packed=packed, width=preds.shape[-1], isic_id=np.asarray(isic_ids, str)))


def load_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved final predictions of a run: ``(isic_ids (N,), preds bool (N, S, S))``.

    Raises:
        FileNotFoundError: the run was not evaluated.
        ValueError: the file is truncated or garbled (the message names it).
    """
    path = Path(run_dir) / PREDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: evaluate the run first "
                                f"(results.evaluate_runs, notebook 04).")
    try:
        with open(path, "rb") as file, np.load(file) as saved:
            preds = np.unpackbits(saved["packed"], axis=-1, count=int(saved["width"])).astype(bool)
            return saved["isic_id"], preds
    # BadZipFile, EOFError, zlib.error, KeyError: whatever a bad .npz raises
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is unreadable (truncated or garbled: {type(err).__name__}); "
                         f"evaluate the run again (notebook 04 with REEVALUATE = True).") from None


def pruned_copies(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Copies of a UNet++ with deep supervision cut at every depth:
    ``{"L1": ..., "L4": the whole network}``.

    Each copy predicts from head ``x_0_L`` and computes only the nodes that head needs, so it is
    faster.
    """
    copies = {}
    for depth in range(1, model.config.depth + 1):
        pruned = copy.deepcopy(model)  # the model itself stays as it was
        pruned.prune_depth = None if depth == model.config.depth else depth
        copies[f"L{depth}"] = pruned
    return copies


def pruning_table(model: torch.nn.Module, prepared, split: str = "val", count: int | None = None,
                  batch_size: int = 4) -> pd.DataFrame:
    """Mean per-image Dice and milliseconds per image of a UNet++ pruned at each depth (L1 … L4).

    Args:
        count: score only the first ``count`` images of the split (None: all), so that a teaching
            cell takes seconds; the ``images`` column says how many were scored.
        batch_size: images per forward pass.
    """
    rows = prepared.indices(split)[:count]
    masks = np.asarray(prepared.masks[rows]).astype(bool)  # (N, S, S)
    table = []
    for name, pruned in pruned_copies(model).items():
        batches = list(iter_probs(pruned, prepared.images, rows, batch_size=batch_size))
        preds = np.concatenate([probs for _, probs, _ in batches]) >= 0.5  # (N, S, S)
        seconds = sum(spent for _, _, spent in batches)
        table.append({"depth": name,
                      f"{split}_dice": score_images(preds, masks, with_hd95=False)["dice"].mean(),
                      "ms_per_image": 1000 * seconds / len(rows), "images": len(rows)})
    return pd.DataFrame(table)
