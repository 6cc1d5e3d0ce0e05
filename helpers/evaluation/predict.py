"""Predict lesion masks on your own, unlabelled images with a trained run.

    python -m helpers.evaluation.predict results/runs/<run id> photo.jpg more_images/ out/
    python -m helpers.evaluation.predict exported/model.onnx photo.jpg out/     (or a TorchScript model.pt)

For every image it writes into ``out/``: ``<stem>_segmentation.png`` (0/255, at the image's original size, as
the ISIC challenge wants), ``<stem>_overlay.jpg`` (the image with the prediction's outline, at most 1,024 px),
and one row of ``predictions.csv``: id, original width and height, lesion fraction, mean confidence (the mean
of max(p, 1 − p) over the pixels), milliseconds. It uses the run's threshold, TTA and post-processing (from its
``eval.json`` when notebook 04 evaluated it, else 0.5, no TTA, no post-processing) unless told otherwise. RUN may
also be a model exported by :mod:`helpers.evaluation.export` (``.onnx`` or TorchScript ``.pt``): its metadata then
gives the image size, mean and std, threshold, TTA and post-processing, and the same code predicts with it
(:class:`helpers.evaluation.exported.ExportedModel`).

Images come as people have them: EXIF-rotated photos are turned upright; large JPEGs are decoded at reduced
size (memory stays bounded: the model sees a few hundred pixels anyway); grayscale, RGBA (on white), CMYK, 16-bit
and palette images are converted to RGB. A file that cannot be read is named and skipped and the rest goes on; a
file that is not an image (by its suffix) is left out with a note.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
from tqdm.auto import tqdm

from helpers.data.isic import to_rgb
from helpers.evaluation import exported, inference
from helpers.training import runs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OVERLAY_SIDE = 1024
COLUMNS = ["id", "file", "width", "height", "lesion_fraction", "mean_confidence", "ms"]


@dataclass
class Loaded:
    """One input image, ready for the model."""

    path: Path
    small: np.ndarray      # uint8 (S, S, 3): what the model sees
    preview: np.ndarray    # uint8 (h, w, 3), at most OVERLAY_SIDE: for the overlay
    size: tuple[int, int]  # original (height, width), upright


def collect_inputs(inputs: list[str | Path], skip: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Image files from files and folders (folders: their images, sorted); and notes on what was left out.

    Args:
        inputs: files and folders.
        skip: a folder whose files are never inputs (the output folder, if it lies inside an input folder).
    """
    found, notes = [], []
    skip = Path(skip).resolve() if skip else None
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if skip and path.resolve().is_relative_to(skip):
                    continue
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(path)
                elif not path.name.startswith("."):
                    notes.append(f"{path}: not an image file (by its suffix {path.suffix or 'none'}), left out")
        elif item.is_file():
            found.append(item)
        else:
            notes.append(f"{item}: no such file or folder, left out")
    return found, notes


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The id of each input, its file stem; stems that repeat (``a/x.jpg``, ``b/x.png``) get their folder and
    suffix too (``a_x_jpg``), so no output overwrites another."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}_{p.stem}_{p.suffix.lstrip('.')}" for p in paths}


def load_image(path: str | Path, image_size: int) -> Loaded:
    """Read one image upright and bounded in memory: the model's input, a preview, and the original size.

    Raises:
        ValueError: the file is not an image PIL can decode (the message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):  # EXIF says: turned by 90°
                width, height = height, width
            if isinstance(image, JpegImagePlugin.JpegImageFile):  # JPEG and MPO (phones): decode at 1/2 … 1/8 scale
                scale = OVERLAY_SIDE / max(image.size)  # the largest 1/n reduction whose longer side still has them
                image.draft("RGB", (max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale))))
            image = ImageOps.exif_transpose(image)
            image = to_rgb(image)
            image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE), Image.BOX)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot be read as an image ({type(err).__name__}: {err}).") from err
    preview = np.asarray(image)
    small = np.asarray(image.resize((image_size, image_size), Image.BOX))  # as the data was prepared
    return Loaded(path, small, preview, (height, width))


def run_settings(run_dir: str | Path) -> dict:
    """Threshold, TTA and post-processing of a run: those it was evaluated with (``eval.json``), else the defaults."""
    path = Path(run_dir) / inference.EVAL_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return {"threshold": float(saved.get("threshold", 0.5)), "tta": bool(saved.get("tta", False)),
            "post": bool(saved.get("postprocess", False))}


def load_predictor(run_dir: str | Path, device: str | None = None) -> tuple:
    """What predicting needs from a run folder or an exported model.

    Returns:
        ``(model, settings, image_size, to_input)``: the model (images → logits, in eval mode, on its device),
        :func:`run_settings`' dict, the side images are resized to, and uint8 (B, S, S, 3) → normalised input
        (None: :func:`helpers.data.to_model_input`, what training used).
    """
    import torch

    from helpers.training.devices import pick_device

    if exported.is_export(run_dir):  # a file: its metadata says everything
        model = exported.load_exported(run_dir, device)
        return model, model.settings(), model.image_size, model.to_input
    settings = run_settings(run_dir)
    image_size = int(runs.load_run_config(run_dir)["image_size"])
    model = runs.load_run_model(run_dir, map_location=torch.device(device) if device else pick_device())
    return model, settings, image_size, None


def predict(run_dir: str | Path, inputs: list[str | Path], out_dir: str | Path, *, threshold: float | None = None,
            tta: bool | None = None, post: bool | None = None, batch_size: int = 8, device: str | None = None,
            progress: bool = True) -> pd.DataFrame:
    """Predict a mask for every input image with a run's best model; write masks, overlays and ``predictions.csv``.

    Args:
        run_dir: a run folder (its ``config.json`` and ``best.pt``), or an exported ``.onnx`` / TorchScript ``.pt``.
        inputs: image files and folders.
        out_dir: where the outputs go (created).
        threshold, tta, post: override the run's settings (None: the run's).
        batch_size: images per forward pass.
        device: ``cpu``, ``cuda``...; default the GPU if there is one (an export: the CPU; ONNX always the CPU).
        progress: show a progress bar.

    Returns:
        The table written to ``predictions.csv`` (one row per image predicted).
    """
    model, settings, image_size, to_input = load_predictor(run_dir, device)
    settings.update({k: v for k, v in {"threshold": threshold, "tta": tta, "post": post}.items() if v is not None})
    out_dir = Path(out_dir)
    paths, notes = collect_inputs(inputs, skip=out_dir)
    names = output_names(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for note in notes:
        print(note)
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=not progress):
        batch = []
        for path in paths[start:start + batch_size]:
            try:
                batch.append(load_image(path, image_size))
            except ValueError as err:
                print(f"{err} Skipped.")
        if not batch:
            continue
        begun = time.perf_counter()
        _, probs, _ = next(inference.iter_probs(model, np.stack([b.small for b in batch]), np.arange(len(batch)),
                                                to_input=to_input, batch_size=len(batch), tta=settings["tta"]))
        ms = (time.perf_counter() - begun) * 1000 / len(batch)
        for item, prob in zip(batch, probs):
            mask = inference.finalize(prob, settings["threshold"], settings["post"], item.size)  # (H, W) original
            name = names[item.path]
            Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / f"{name}_segmentation.png")
            shown = inference.finalize(prob, settings["threshold"], settings["post"], item.preview.shape[:2])
            Image.fromarray(inference.overlay(item.preview, shown, colour=(255, 0, 255))).save(
                out_dir / f"{name}_overlay.jpg", quality=90)
            rows.append({"id": name, "file": str(item.path), "width": item.size[1], "height": item.size[0],
                         "lesion_fraction": float(mask.mean()),
                         "mean_confidence": float(np.maximum(prob, 1 - prob).mean()), "ms": ms})
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(out_dir / "predictions.csv", index=False)
    return table


def example_inputs(prepared, out_dir: str | Path, count: int = 4, split: str = "test") -> list[Path]:
    """A few images of a prepared dataset as files, to try predicting on as if they were your own photos.

    The original files where they are still on disk (full size, as they were taken), else the prepared arrays
    saved as PNG (on a fresh Colab runtime the raw data is gone; the preparation on Drive remains).

    Returns:
        The paths of the files, in ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    sources = prepared.table.get("image_path")
    for row in prepared.indices(split)[:count]:
        name = str(prepared.table["isic_id"].iloc[row])
        source = Path(str(sources.iloc[row])) if sources is not None and sources.iloc[row] else None
        if source is not None and source.is_file():
            target = out_dir / f"{name}{source.suffix.lower()}"
            target.write_bytes(source.read_bytes())
        else:
            target = out_dir / f"{name}.png"
            Image.fromarray(np.asarray(prepared.images[row])).save(target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.evaluation.predict RUN INPUT... OUTPUT``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluation.predict",
                                     description="Predict lesion masks on your own images with a trained run.")
    parser.add_argument("run", help="a run folder, e.g. results/runs/<run id>, or an exported model.onnx / model.pt")
    parser.add_argument("paths", nargs="+", metavar="INPUT... OUTPUT", help="image files or folders, then the output folder")
    parser.add_argument("--threshold", type=float, default=None, help="default: the run's (0.5)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip TTA (default: the run's)")
    parser.add_argument("--post", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the largest lesion, fill holes (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        parser.error("give at least one INPUT and the OUTPUT folder")
    *inputs, output = args.paths
    try:
        started = time.perf_counter()
        table = predict(args.run, inputs, output, threshold=args.threshold, tta=args.tta, post=args.post,
                        batch_size=args.batch_size, device=args.device)
    except (FileNotFoundError, exported.ExportError) as err:
        print(f"✗ {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"✓ {len(table)} image(s) in {seconds:.1f} s ({len(table) / max(seconds, 1e-9):.1f} images/s, reading and "
          f"writing included); masks, overlays and predictions.csv in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
