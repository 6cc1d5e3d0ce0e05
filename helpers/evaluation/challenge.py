"""Export test predictions as the ISIC 2018 Task 1 challenge expects them, to score with its own
tool.

The format: one single-channel PNG per image, **at the image's original resolution**, named
``ISIC_XXXXXXX_segmentation.png``, values 0 (skin) and 255 (lesion), all in one folder (or a zip of
it). The predictions are made exactly as :func:`helpers.evaluation.inference.evaluate` makes its
``*_orig`` scores (probs resized bilinearly to the original size, thresholded, optionally
post-processed), so the official scorer and the kit give the same per-image numbers:

    isic-challenge-scoring segmentation <truth folder> <prediction folder>

For the seed protocol the test images sit among the training masks; :func:`export_truth` copies
just the split's ground truth into a folder of its own, which the scorer needs.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import paths
from helpers.evaluation import inference
from helpers.evaluation.scoring import read_eval
from helpers.training import devices, runs


def mask_filename(isic_id: str) -> str:
    """The challenge's file name of a segmentation: ``ISIC_0000000_segmentation.png``."""
    return f"{isic_id}_segmentation.png"


def write_mask(out_dir: str | Path, isic_id: str, preds: np.ndarray) -> Path:
    """Write one binary prediction, bool (H, W), as a 0/255 greyscale PNG named for the
    challenge."""
    mask = Image.fromarray(np.where(np.asarray(preds, bool), 255, 0).astype(np.uint8))
    # through a temporary file: a link there is replaced, never written through
    return paths.write_atomic(Path(out_dir) / mask_filename(isic_id), mask.save)


def export_predictions(model, prepared, out_dir: str | Path, *, to_input=None, split: str = "test",
                       tta: bool = False, post: bool = False, threshold: float = 0.5,
                       batch_size: int = 16, amp: bool = False, progress: bool = True) -> Path:
    """Predict every image of a split and write the challenge PNGs at original resolution.

    Args:
        model: on the device to run on; maps inputs (B, 3, S, S) to logits (B, 1, S, S).
        prepared: a :class:`helpers.data.prep.Prepared` dataset (its table has the original sizes).
        out_dir: the folder to fill (created; existing PNGs of the same names are replaced).
        split, to_input, tta, post, threshold, batch_size, amp, progress: as in
        :func:`helpers.evaluation.inference.evaluate`.

    Returns:
        The folder.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, rows = prepared.table, prepared.indices(split)
    for batch, probs, _ in inference.iter_probs(model, prepared.images, rows, to_input=to_input,
                                                batch_size=batch_size, tta=tta, amp=amp,
                                                progress=progress):
        for row, image_probs in zip(batch, probs):
            size = (int(table["orig_height"].iloc[row]), int(table["orig_width"].iloc[row]))
            write_mask(out_dir, table["isic_id"].iloc[row],
                       inference.finalize(image_probs, threshold, post, size))
    return out_dir


def export_truth(prepared, out_dir: str | Path, split: str = "test") -> Path:
    """Copy the original ground-truth masks of a split into one folder (the scorer's truth folder).

    Raises:
        FileNotFoundError: a mask is neither on disk where ``splits.csv`` names it nor in the
            preparation's originals.zip (the message names both).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for row in prepared.indices(split):
        png = prepared.original_mask_png(row)
        paths.write_atomic(out_dir / mask_filename(prepared.table["isic_id"].iloc[row]),
                           lambda tmp, png=png: tmp.write_bytes(png))
    return out_dir


def zip_folder(folder: str | Path, zip_path: str | Path | None = None) -> Path:
    """Zip the PNGs of a folder (flat, as the challenge's upload expects); returns the zip's
    path."""
    folder = Path(folder)
    zip_path = Path(zip_path or folder.with_suffix(".zip"))
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for png in sorted(folder.glob("*.png")):
                archive.write(png, png.name)

    return paths.write_atomic(zip_path, write)


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, *, load_model=None,
               to_input=None, device=None, prepared=None, make_zip: bool = True, **options) -> Path:
    """Export a run's test predictions, with the TTA / post-processing / threshold of its
    ``eval.json``.

    Args:
        run_dir: the run folder.
        out_dir: the folder for the PNGs (default ``<run_dir>/submission``).
        load_model: ``run_dir → nn.Module``; default :func:`helpers.training.runs.load_run_model`
            (best.pt).
        to_input: uint8 (B, S, S, 3) → float (B, 3, S, S); default
            :func:`helpers.data.loaders.to_model_input`.
        device: where to run (default :func:`helpers.training.devices.pick_device`).
        prepared: the run's prepared dataset, if already open.
        make_zip: also write ``<out_dir>.zip``.
        **options: override ``tta``, ``post``, ``threshold``, ``batch_size``, ``progress``.

    Returns:
        The zip's path (or the folder's, without ``make_zip``).
    """
    run_dir = Path(run_dir)
    saved = read_eval(run_dir)
    settings = {"tta": saved.get("tta", False), "post": saved.get("postprocess", False),
                "threshold": saved.get("threshold", 0.5), **options}
    model = (load_model or runs.load_run_model)(run_dir).to(device or devices.pick_device())
    prepared = prepared or runs.load_run_data(run_dir)
    folder = export_predictions(model, prepared, out_dir or run_dir / "submission",
                                to_input=to_input, **settings)
    return zip_folder(folder) if make_zip else folder
