"""Predict lesion masks on your own, unlabelled images with a trained run.

    python -m helpers.evaluation.predict results/runs/<run id> photo.jpg more_images/ out/
    python -m helpers.evaluation.predict exported/model.onnx photo.jpg out/
        (or a TorchScript model.pt)

For every image it writes into ``out/``: ``<stem>_segmentation.png`` (0/255, at the image's original
size, as the ISIC challenge wants), ``<stem>_overlay.jpg`` (the image with the prediction's outline,
at most 1,024 px), and one row of ``predictions.csv``: id, original width and height, lesion
fraction, mean confidence (the mean of max(p, 1 − p) over the pixels), milliseconds. It uses the
run's threshold, TTA and post-processing (from its ``eval.json`` when notebook 04 evaluated it, else
0.5, no TTA, no post-processing) unless told otherwise. RUN may also be a model exported by
:mod:`helpers.evaluation.export` (``.onnx`` or TorchScript ``.pt``): its metadata then gives the
image size, mean and std, threshold, TTA and post-processing, and the same code predicts with it
(:class:`helpers.evaluation.exported.ExportedModel`).

Images come as people have them: EXIF-rotated photos are turned upright; large JPEGs are decoded at
reduced size (memory stays bounded: the model sees a few hundred pixels anyway); grayscale, RGBA (on
white), CMYK, 16-bit and palette images are converted to RGB. A file that cannot be read is named
and skipped and the rest goes on; a file that is not an image (by its suffix) is left out with a
note.

Nothing the user made is overwritten (:mod:`helpers.evaluation.predict_files`): the output folder
may not be an input folder or lie inside one; ``predict_manifest.json`` there lists the files
predict wrote, and a file of another name that an output would replace (e.g. a ground-truth
``ISIC_…_segmentation.png``) stops it before anything is written, unless ``--overwrite``; files a
manifest lists are never inputs; two inputs of one name keep their relative paths in their outputs'
names (``s1_images_IMG_0001_png``).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
from tqdm.auto import tqdm

from helpers import cli, paths
from helpers.data import synthetic
from helpers.data.isic import check_regular, to_rgb
from helpers.evaluation import exported, inference
from helpers.evaluation.outputs import check_folder
from helpers.evaluation.predict_files import (  # noqa: F401
    # MANIFEST, OutputClash, read_manifest: part of predict's API
    COLUMNS,
    IMAGE_SUFFIXES,
    MANIFEST,
    OUTPUTS,
    TABLE,
    OutputClash,
    add_rows,
    check_output_folder,
    check_overwrite,
    collect_inputs,
    earlier_ids,
    left_out_line,
    output_names,
    read_manifest,
    start_table,
    write_manifest,
)
from helpers.training import runs
from helpers.training.devices import pick_device

OVERLAY_SIDE = 1024


@dataclass
class Loaded:
    """One input image, ready for the model."""

    path: Path
    small: np.ndarray      # uint8 (S, S, 3): what the model sees
    preview: np.ndarray    # uint8 (h, w, 3), at most OVERLAY_SIDE: for the overlay
    size: tuple[int, int]  # original (height, width), upright


def load_image(path: str | Path, image_size: int) -> Loaded:
    """Read one image upright and bounded in memory: the model's input, a preview, and the original
    size.

    Raises:
        ValueError: the file is not an image PIL can decode (the message names it).
    """
    path = Path(path)
    check_regular(path)  # a named pipe would block the read forever
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):  # EXIF says: turned by 90°
                width, height = height, width
            # JPEG and MPO (phones): decode at 1/2 … 1/8 scale
            if isinstance(image, JpegImagePlugin.JpegImageFile):
                # the largest 1/n reduction whose longer side still has them
                scale = OVERLAY_SIDE / max(image.size)
                image.draft("RGB",
                            (max(1, int(image.size[0] * scale)),
                             max(1, int(image.size[1] * scale))))
            image = ImageOps.exif_transpose(image)
            image = to_rgb(image)
            image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE), Image.BOX)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as err:
        raise ValueError(
            f"{path}: cannot be read as an image ({type(err).__name__}: {err}).") from err
    preview = np.asarray(image)
    # as the data was prepared
    small = np.asarray(image.resize((image_size, image_size), Image.BOX))
    return Loaded(path, small, preview, (height, width))


def run_settings(run_dir: str | Path) -> dict:
    """Threshold, TTA and post-processing of a run: those it was evaluated with (``eval.json``),
    else the defaults.

    Raises:
        ValueError: ``eval.json`` is unreadable (the message names it).
    """
    path = Path(run_dir) / inference.EVAL_FILE
    saved = runs.read_json(path) if path.is_file() else {}
    return {"threshold": float(saved.get("threshold", 0.5)), "tta": bool(saved.get("tta", False)),
            "post": bool(saved.get("postprocess", False))}


def load_predictor(run_dir: str | Path, device: str | None = None) -> tuple:
    """What predicting needs from a run folder or an exported model.

    Returns:
        ``(model, settings, image_size, to_input)``: the model (images → logits, in eval mode, on
        its device), :func:`run_settings`' dict, the side images are resized to, and uint8 (B, S, S,
        3) → normalised input (None: :func:`helpers.data.loaders.to_model_input`, what training
        used).
    """
    if exported.is_export(run_dir):  # a file: its metadata says everything
        model = exported.load_exported(run_dir, device)
        return model, model.settings(), model.image_size, model.to_input
    settings = run_settings(run_dir)
    image_size = trained_size(run_dir)
    model = runs.load_run_model(run_dir,
                                map_location=torch.device(device) if device else pick_device())
    return model, settings, image_size, None


def run_problem(run_dir: str | Path | None) -> str:
    """Why a run (or export) cannot predict, in one line naming the file; ``""`` when it can
    (notebook 04's "use your model" asks this before predicting, so a broken run is listed as broken
    instead of stopping the notebook).
    """
    if run_dir is None:
        return "no evaluated run here: train in notebooks 02 and 03 first."
    try:
        load_predictor(run_dir, "cpu")
    except (OSError, ValueError, RuntimeError) as err:
        return f"{Path(run_dir).name} is broken: {' '.join(str(err).split())}"
    return ""


def trained_size(run_dir: str | Path) -> int:
    """The image size a run was trained at: its ``config.json``'s, checked against what else records
    it (the run id, the prepared data's ``prepared.json``), so an edited config.json cannot silently
    resize the inputs.

    Raises:
        ValueError: they disagree (the message names both and the file to mend).
    """
    config = runs.load_run_config(run_dir)
    size = int(config["image_size"])
    witnesses = {f"its run id {name}": re.search(r"_(\d+)px_", name)
                 for name in {Path(run_dir).name, config.get("run_id", "")}}
    found = {where: int(match.group(1)) for where, match in witnesses.items() if match}
    prepared = runs.prepared_dir(config) / "prepared.json" if config.get("prepared_dir") else None
    if prepared is not None and prepared.is_file():
        found[f"its prepared data {prepared}"] = int(
            runs.read_json(prepared).get("image_size", size))
    wrong = {where: other for where, other in found.items() if other != size}
    if wrong:
        where, other = next(iter(wrong.items()))
        raise ValueError(f"{Path(run_dir) / 'config.json'} says image_size {size} but the run was "
                         f"trained at {other} px ({where}); set image_size back to {other} in "
                         f"config.json.")
    return size


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have (:func:`helpers.cli.check_device`, the one check
    every command uses).

    Raises:
        cli.BadValue: not a device name, or a GPU that is not available here.
    """
    cli.check_device(device)


def predict(run_dir: str | Path, inputs: list[str | Path], out_dir: str | Path, *,
            threshold: float | None = None, tta: bool | None = None, post: bool | None = None,
            batch_size: int = 8, device: str | None = None, progress: bool = True,
            overwrite: bool = False) -> pd.DataFrame:
    """Predict a mask for every input image with a run's best model; write masks, overlays and
    ``predictions.csv``.

    Args:
        run_dir: a run folder (its ``config.json`` and ``best.pt``), or an exported ``.onnx`` /
            TorchScript ``.pt``.
        inputs: image files and folders.
        out_dir: where the outputs go (created); not an input folder, nor inside one.
        threshold, tta, post: override the run's settings (None: the run's).
        batch_size: images per forward pass.
        device: ``cpu``, ``cuda``...; default the GPU if there is one (an export: the CPU; ONNX
            always the CPU).
        progress: show a progress bar.
        overwrite: replace files in ``out_dir`` that predict did not write (default: refuse).

    Returns:
        The table written to ``predictions.csv`` (one row per image predicted).

    Raises:
        cli.BadValue: a threshold outside [0, 1], a batch size below 1, an unavailable device, or an
            output folder that is (or lies inside) an input folder.
        OutputClash: outputs would replace files predict did not write (and ``overwrite`` is false).
    """
    cli.fraction(threshold, "--threshold")
    batch_size = cli.positive_int(batch_size, "--batch-size")
    check_device(device)
    out_dir = check_folder(out_dir)
    files, names, left_out = _plan(inputs, out_dir, overwrite)
    model, settings, image_size, to_input = load_predictor(run_dir, device)
    settings.update({k: v for k, v in {"threshold": threshold, "tta": tta, "post": post}.items()
                     if v is not None})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, check_overwrite(out_dir, list(names.values()), overwrite))
    kept = start_table(out_dir, list(names.values()))
    rows, unreadable = [], 0
    try:
        for start in tqdm(range(0, len(files), batch_size), desc="predict", disable=not progress):
            batch = _read_batch(files[start:start + batch_size], image_size)
            unreadable += min(batch_size, len(files) - start) - len(batch)
            if batch:
                rows += _predict_batch(model, batch, names, out_dir, settings, to_input)
    except KeyboardInterrupt:
        print(f"Interrupted: {out_dir / TABLE} lists the {kept + len(rows)} image(s) whose outputs "
              f"are complete; run the same command again to predict the rest.", file=sys.stderr)
        raise
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(left_out=left_out, unreadable=unreadable, earlier=kept)
    return table


def _read_batch(files: list[Path], image_size: int) -> list[Loaded]:
    """The images of a batch that can be read; each one that cannot is named on its own line."""
    batch = []
    for path in files:
        try:
            batch.append(load_image(path, image_size))
        except ValueError as err:
            print(f"{err} Skipped.")
    return batch


def _predict_batch(model, batch: list[Loaded], names: dict[Path, str], out_dir: Path,
                   settings: dict, to_input) -> list[dict]:
    """Predict one batch, write its outputs, then add its rows to ``predictions.csv``; returns the
    rows."""
    begun = time.perf_counter()
    images = np.stack([b.small for b in batch])
    _, probs, _ = next(inference.iter_probs(model, images, np.arange(len(batch)), to_input=to_input,
                                            batch_size=len(batch), tta=settings["tta"]))
    ms = (time.perf_counter() - begun) * 1000 / len(batch)
    rows = [_write_outputs(out_dir, names[item.path], item, prob, settings) | {"ms": ms}
            for item, prob in zip(batch, probs)]
    add_rows(out_dir, rows)  # after the files: a row always has its mask and overlay
    return rows


def _plan(inputs: list[str | Path], out_dir: Path,
          overwrite: bool) -> tuple[list[Path], dict[Path, str], int]:
    """The input files, their output ids and how many inputs were left out, after every refusal that
    must come before any work (printing one line that names what was left out).

    Raises:
        cli.BadValue: the output folder is (inside) an input folder, or there is no image to
            predict.
        OutputClash: see :func:`~helpers.evaluation.predict_files.check_overwrite`.
    """
    check_output_folder(out_dir, inputs)
    files, notes = collect_inputs(inputs)
    if not files:
        raise cli.BadValue(f"no image files in {', '.join(map(str, inputs))} "
                           f"({'; '.join(notes) or 'empty'}); give image files "
                           f"({', '.join(IMAGE_SUFFIXES)}) or folders that hold them.")
    names = output_names(files, earlier_ids(out_dir) if out_dir.is_dir() else {})
    check_overwrite(out_dir, list(names.values()), overwrite)
    if notes:
        print(left_out_line(notes))
    return files, names, len(notes)


def _write_outputs(out_dir: Path, name: str, item: Loaded, prob: np.ndarray,
                   settings: dict) -> dict:
    """Write one image's mask (original size) and overlay; return its row of ``predictions.csv``
    (without ms)."""
    # (H, W) original
    mask = inference.finalize(prob, settings["threshold"], settings["post"], item.size)
    written = Image.fromarray(mask.astype(np.uint8) * 255)
    # through a temporary file: a link there is replaced, never written through
    paths.write_atomic(out_dir / f"{name}{OUTPUTS[0]}", written.save)
    shown = inference.finalize(prob, settings["threshold"], settings["post"],
                               item.preview.shape[:2])
    overlay = Image.fromarray(inference.overlay(item.preview, shown, colour=(255, 0, 255)))
    paths.write_atomic(out_dir / f"{name}{OUTPUTS[1]}", lambda tmp: overlay.save(tmp, quality=90))
    return {"id": name, "file": str(item.path), "width": item.size[1], "height": item.size[0],
            "lesion_fraction": float(mask.mean()),
            "mean_confidence": float(np.maximum(prob, 1 - prob).mean())}


def example_inputs(prepared, out_dir: str | Path, count: int = 4,
                   split: str = "test") -> list[Path]:
    """A few images of a prepared dataset as files, to try predicting on as if they were your own
    photos.

    The original files where they are still on disk (full size, as they were taken), else the
    prepared arrays saved as PNG (on a fresh Colab runtime the raw data is gone; the preparation on
    Drive remains).

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


def try_inputs(run_dir: str | Path, out_dir: str | Path, count: int = 4) -> list[Path]:
    """Images to try a run's model on, as files in ``out_dir``: a few test images of its data where
    that is prepared here (:func:`example_inputs`), else a few images of the offline sample, made in
    seconds in the folder ``offline_sample`` beside ``out_dir`` (a line says so: a committed study's
    model on a machine without its data)."""
    if runs.has_data(run_dir):
        return example_inputs(runs.load_run_data(run_dir), out_dir, count)
    sample = synthetic.generate_sample(Path(out_dir).with_name("offline_sample"), count=count,
                                       progress=False)
    print(f"The data of {Path(run_dir).name} is not on this machine: trying it on {count} images "
          f"of the offline sample instead (drawn lesions, not photographs); put your own photos in "
          f"{out_dir} to predict on them.")
    return sorted((sample / synthetic.IMAGE_DIR).glob("*.jpg"))


def main(argv: list[str] | None = None) -> int:
    """``lesion-predict RUN INPUT... --out OUTPUT`` (``python -m helpers.evaluation.predict``;
    ``RUN INPUT... OUTPUT`` works too): errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluation.predict",
                                     description="Predict lesion masks on your own images with a "
                                                 "trained run.")
    parser.add_argument("run", help="a run folder, e.g. results/runs/<run id>, or an exported "
                                    "model.onnx / model.pt")
    parser.add_argument("paths", nargs="+", metavar="INPUT",
                        help="image files or folders (without --out, the last one is the "
                             "output folder)")
    parser.add_argument("--out", default=None, help="the output folder (masks, overlays, "
                                                    "predictions.csv)")
    parser.add_argument("--threshold", type=float, default=None, help="default: the run's (0.5)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip TTA (default: the run's)")
    parser.add_argument("--post", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the largest lesion, fill holes (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=8)
    cli.add_device(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in the output folder that predict did not write "
                             "(default: refuse)")
    args = cli.add_debug(parser).parse_args(argv)
    if args.out is None and len(args.paths) < 2:
        parser.error("give at least one INPUT and the output folder (--out)")
    *inputs, output = args.paths if args.out is None else [*args.paths, args.out]
    started = time.perf_counter()
    table = predict(args.run, inputs, output, threshold=args.threshold, tta=args.tta,
                    post=args.post, batch_size=args.batch_size, device=args.device,
                    overwrite=args.overwrite)
    seconds = time.perf_counter() - started
    missed = _missed(table.attrs)
    if table.empty:
        print(f"✗ none of the images could be read (each is named above){missed}; nothing "
              f"predicted in {output}", file=sys.stderr)
        return 1
    earlier = table.attrs.get("earlier", 0)
    print(f"✓ {len(table)} image(s) in {seconds:.1f} s ({len(table) / max(seconds, 1e-9):.1f} "
          f"images/s, reading and writing included){missed}; masks, overlays and predictions.csv "
          f"in {output}"
          + (f" (with {earlier} row(s) of earlier predictions)" if earlier else ""))
    return 0


def _missed(counts: dict) -> str:
    """What the final line says of inputs not predicted: ``"; 2 unreadable, 3 left out (named
    above)"``."""
    parts = [f"{counts[key]} {key.replace('_', ' ')}" for key in ("unreadable", "left_out")
             if counts.get(key)]
    return f"; {', '.join(parts)} (named above)" if parts else ""


if __name__ == "__main__":
    sys.exit(main())
