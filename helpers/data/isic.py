"""ISIC 2018 Task 1 folders: find the official sub-folders, pair images with masks, validate.

The official zips unpack to one folder per set, for example::

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png

The same code reads the official download, a folder of your own in that layout (a nested
top folder is fine; images may also be PNG, BMP or TIFF, masks JPEG, BMP or TIFF),
a resized copy (the bundled 128-px archive, or one made by :mod:`helpers.tools.shrink`) and the
synthetic sample. Other layouts (PH2, plain image and mask folders) are found by
:mod:`helpers.data.layouts`, which pairs them into the same :class:`Pair` and validates them with
:func:`load_pair` (``lenient=True``).
Nothing is skipped silently: every orphan, broken or odd file becomes a :class:`Problem`
naming the file and what is wrong. Photos are read upright (:func:`upright`: their EXIF orientation
applied, as a phone or viewer shows them), so a mask drawn on the photo as you see it pairs with it.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SPLIT_DIRS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
# image and mask files of every layout
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IMAGE_RE = re.compile(r"^(ISIC_\d{7})\.(jpe?g|png|bmp|tiff?)$", re.IGNORECASE)
MASK_RE = re.compile(r"^(ISIC_\d{7})_segmentation\.(png|jpe?g|bmp|tiff?)$", re.IGNORECASE)
IGNORED = {".ds_store", "thumbs.db", "attribution.txt", "license.txt", "readme.txt", "desktop.ini"}


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or not what the kit expects."""


class BadFile(DataError):
    """One file cannot be used; ``path`` and ``problem`` say which and why."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class Pair:
    """One image and its ground-truth mask.

    ``isic_id`` is the image's id: its ISIC id in the ISIC layout, the file stem (``IMD002``,
    ``photo_17``) in the others. The name stays ``isic_id`` everywhere (``splits.csv``, metrics
    tables) for every layout.
    """

    isic_id: str
    image_path: Path
    mask_path: Path


@dataclass(frozen=True)
class Problem:
    """A file the kit cannot use, and why."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def find_split_dirs(root: str | Path, split: str = "train") -> tuple[Path, Path] | None:
    """Locate a split's image and mask folders below ``root`` (at most three levels down).

    Returns:
        (images_dir, masks_dir), or None when the split's image folder is absent.

    Raises:
        DataError: images are there but their ground-truth folder is not.
    """
    root = Path(root)
    image_name, mask_name = SPLIT_DIRS[split]
    for depth in range(4):
        pattern = "/".join(["*"] * depth + [image_name]) if depth else image_name
        hits = sorted(p for p in root.glob(pattern) if p.is_dir() and "__MACOSX" not in p.parts)
        if hits:
            masks = hits[0].parent / mask_name
            if not masks.is_dir():
                raise DataError(f"{hits[0]} has images but {masks} is missing: put the "
                                f"ground-truth folder {mask_name} beside it (unzip the "
                                f"ground-truth zip there).")
            return hits[0], masks
    return None


def _listing(folder: Path, pattern: re.Pattern, kind: str) -> tuple[dict[str, Path], list[Problem]]:
    """Files of one folder keyed by ISIC id, plus problems for names that do not fit or ids found
    twice."""
    found, problems, twice = {}, [], {}
    for path in sorted(folder.iterdir()):
        if path.name.lower() in IGNORED or path.name.startswith((".", "_")) or path.is_dir():
            continue
        match = pattern.match(path.name)
        if match is None:
            problems.append(Problem(
                path,
                f"unrecognised {kind} file name; expected "
                f"{'ISIC_XXXXXXX.jpg' if kind == 'image' else 'ISIC_XXXXXXX_segmentation.png'}"))
        elif match.group(1).upper() in found:
            twice.setdefault(match.group(1).upper(), [found[match.group(1).upper()]]).append(path)
        else:
            found[match.group(1).upper()] = path
    for isic_id, files in twice.items():
        del found[isic_id]
        problems.append(duplicate_problem(files, kind))
    return found, problems


def duplicate_problem(files: list[Path], kind: str) -> Problem:
    """The problem of one id found in several files (``x.jpg`` and ``x.png``): the pair is left
    out."""
    return Problem(files[0], f"{kind} id found in {len(files)} files "
                             f"({', '.join(f.name for f in files)}); ids must be unique: keep one "
                             f"of them and remove the others.")


def pair_files(images_dir: str | Path, masks_dir: str | Path) -> tuple[list[Pair], list[Problem]]:
    """Pair images with masks by ISIC id.

    Returns:
        pairs sorted by id, and problems: images without a mask, masks without an image,
        files whose names are not ISIC names.
    """
    images, problems = _listing(Path(images_dir), IMAGE_RE, "image")
    masks, mask_problems = _listing(Path(masks_dir), MASK_RE, "mask")
    problems += mask_problems
    for isic_id in sorted(set(images) - set(masks)):
        problems.append(Problem(images[isic_id], f"image has no mask ({isic_id}_segmentation.png "
                                                 f"missing in {masks_dir})"))
    for isic_id in sorted(set(masks) - set(images)):
        problems.append(Problem(masks[isic_id], f"mask has no image ({isic_id}.jpg missing in "
                                                f"{images_dir})"))
    pairs = [Pair(i, images[i], masks[i]) for i in sorted(set(images) & set(masks))]
    return pairs, problems


# the EXIF tag that says how the stored pixels are turned (1: as stored; 6, 8: by 90°)
ORIENTATION = 0x0112


def orientation(image: Image.Image) -> int:
    """An image's EXIF orientation (1 to 8; 1 when it has none)."""
    return int(image.getexif().get(ORIENTATION, 1) or 1)


def upright(image: Image.Image) -> Image.Image:
    """The image as a phone or viewer shows it: turned (and mirrored) by its EXIF orientation;
    itself when upright.

    The one way the kit turns photos, for preparing data and for predicting alike.
    """
    return image if orientation(image) == 1 else ImageOps.exif_transpose(image)


def check_regular(path: Path, kind: str = "image") -> None:
    """Refuse a path that is not a regular file (a named pipe would block the read forever, a device
    or socket gives no picture).

    Raises:
        BadFile: naming the path and what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise BadFile(path, f"unreadable {kind} ({err.strerror or err}); check that it exists and "
                            f"that you may read it.") from None
    if not stat.S_ISREG(mode):
        what = "a named pipe" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else \
            "a device or socket"
        raise BadFile(path, f"is {what}, not a regular {kind} file; replace it by the {kind} file "
                            f"or remove it.")


def _open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image file (its EXIF read too), or raise DataError naming it."""
    check_regular(path, kind)
    try:
        with Image.open(path) as im:
            im.load()
            orientation(im)
            return im.copy()
    except Exception as err:  # PIL raises many types for broken files
        raise BadFile(path, f"corrupt or unreadable {kind} ({err}); re-extract or re-download it, "
                            f"or remove the pair.") from err


def open_pair(pair: Pair) -> tuple[Image.Image, Image.Image, str]:
    """Decode a pair upright (:func:`upright`), and a note when that could not be done.

    A mask is taken as drawn on the upright photo. Only where the upright sizes differ but the
    stored ones match (a mask drawn on the stored pixels by a tool that ignores EXIF) are both used
    as stored, with a note.
    """
    image, mask = _open(pair.image_path, "image"), _open(pair.mask_path, "mask")
    image_up, mask_up = upright(image), upright(mask)
    if image_up.size != mask_up.size and image.size == mask.size:
        return image, mask, (f"EXIF orientation {orientation(image)} not applied: the mask fits "
                             f"the stored pixels")
    return image_up, mask_up, ""


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # integer values wider than 8 bits
WIDE = (*SIXTEEN_BIT, "F")  # one wide value per pixel: scaled to 8 bits by the range it holds
SEE_THROUGH = ("RGBA", "RGBa", "LA", "La", "PA")
GREY_TOLERANCE = 8  # an RGB mask is grey when its channels differ by at most this much (JPEG noise)


def _eight_bit(image: Image.Image) -> Image.Image:
    """A one-value-per-pixel image wider than 8 bits as 8-bit grayscale, scaled by the range it
    holds: integers up to 255 as they are, up to 65,535 as 16-bit (÷ 257); floats up to 1 as
    fractions (× 255), up to 255 as they are.

    Raises:
        ValueError: values that are not finite, negative, or beyond those ranges (the mode named).
    """
    values = np.asarray(image, dtype=np.float64)
    low, top = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else None
    else:
        scale = 1.0 if top <= 255 else 1 / 257 if top <= 65535 else None
    if scale is None or low < 0 or not np.isfinite(values).all():
        kinds = "0 to 1 or 0 to 255" if image.mode == "F" else "0 to 255 or 0 to 65,535"
        raise ValueError(f"image mode {image.mode} holds values from {low:g} to {top:g}, not "
                         f"{kinds}, so it is no picture the kit can read; save it as an 8-bit RGB "
                         f"PNG or JPEG.")
    return Image.fromarray(np.round(values * scale).clip(0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow opens: the same picture as the image's plain 8-bit version.

    16-bit, 32-bit integer and float values are scaled to 8 bits by the range they hold
    (:func:`_eight_bit`); transparency goes on white; 1-bit, grayscale, palette, CMYK and YCbCr are
    converted.

    Raises:
        ValueError: a mode or a range of values that gives no picture (the message names the mode;
            the caller names the file).
    """
    if image.mode in WIDE:
        image = _eight_bit(image)
    if image.mode in SEE_THROUGH or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"image mode {image.mode} cannot be turned into RGB ({err}); save it as "
                         f"an 8-bit RGB PNG or JPEG.") from None


def grayscale_mask(mask: Image.Image, path: Path) -> tuple[np.ndarray, str]:
    """A mask of any common mode as uint8 grayscale values # (H, W), and a note on a lossy
    conversion.

    Grayscale and 1-bit as they are; RGB, palette and opaque RGBA/LA whose channels are equal
    (within ``GREY_TOLERANCE``, for JPEG noise) as their grey; 16-bit scaled to 8 when it uses
    values above 255.

    Raises:
        BadFile: a colour mask, transparent pixels, or a mode no mask has.
    """
    mode = mask.mode
    if mode in ("L", "1"):
        return np.asarray(mask.convert("L")), ""
    if mode in SIXTEEN_BIT:
        values = np.asarray(mask, dtype=np.int64)
        if values.max() <= 255:
            return values.clip(0, 255).astype(np.uint8), ""
        return ((values.clip(0, 65535) * 255 // 65535).astype(np.uint8),
                f"mask was {mode}, scaled to 8 bits")
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in mask.info):
        see_through = np.asarray(mask.convert("RGBA"))[..., 3] < 255
        if see_through.any():
            raise BadFile(path, f"mask has transparent pixels ({int(see_through.sum()):,}); save "
                                f"it without transparency, as a grayscale image with lesion 255 "
                                f"and background 0.")
        mask = mask.convert("RGB")
    if mask.mode in ("RGB", "P"):
        rgb = np.asarray(mask.convert("RGB")).astype(np.int16)
        spread = rgb.max(axis=-1) - rgb.min(axis=-1)
        if spread.max() > GREY_TOLERANCE:
            raise BadFile(path, f"mask is a colour image ({mode}; red, green and blue differ at "
                                f"{int((spread > GREY_TOLERANCE).sum()):,} pixels); save it as a "
                                f"single-channel grayscale image with lesion 255 and background 0.")
        return np.asarray(mask.convert("L")), ""
    raise BadFile(path, f"mask mode is {mode}, expected a single-channel (grayscale) image with "
                        f"values 0 and 255.")


def load_pair(pair: Pair, lenient: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Decode (upright: see :func:`open_pair`) and validate one pair.

    Args:
        pair: the files.
        lenient: False (the ISIC layout): the image must be RGB and the mask grayscale. True (PH2
            and plain folders): images of other modes (grayscale, RGBA, 16-bit, palette, CMYK) are
            converted to RGB with a note, and masks saved as RGB (or palette, 16-bit) with equal
            channels are read as grayscale.

    Returns:
        image uint8 # (H, W, 3), mask uint8 in {0, 1} # (H, W), and a note ("" when clean,
        else e.g. "mask binarised at >127: 1,234 pixels were neither 0 nor 255"; several joined by
        "; ").

    Raises:
        BadFile: naming the file and the problem (corrupt, not RGB, mask not single-channel,
            sizes differ, mask with no value above 127).
    """
    image, mask, turned = open_pair(pair)
    notes = [turned] if turned else []
    if image.mode != "RGB":
        if not lenient:
            raise BadFile(pair.image_path, f"image mode is {image.mode}, expected RGB; convert it "
                                           f"to an RGB JPEG.")
        notes.append(f"image was {image.mode}, converted to RGB")
        try:
            image = to_rgb(image)
        except ValueError as err:
            raise BadFile(pair.image_path, str(err)) from None
    if mask.mode not in ("L", "1") and not lenient:
        raise BadFile(pair.mask_path, f"mask mode is {mask.mode}, expected a single-channel "
                                      f"(grayscale) PNG with values 0 and 255.")
    if mask.size != image.size:
        raise BadFile(pair.mask_path, f"mask is {mask.size[0]}x{mask.size[1]} but its image "
                                      f"{pair.image_path.name} is {image.size[0]}x{image.size[1]} "
                                      f"(both upright, EXIF orientation applied); they must match.")
    values, converted = grayscale_mask(mask, pair.mask_path)
    notes += [converted] if converted else []
    counts = np.bincount(values.ravel(), minlength=256)
    if counts[1:255].any():
        if not counts[128:].any():
            raise BadFile(pair.mask_path, f"mask values only reach {values.max()}, so binarising "
                                          f"at >127 would leave it empty (a 0/1 mask?); save "
                                          f"lesion pixels as 255.")
        odd = int(counts[1:255].sum())
        notes.append(f"mask binarised at >127: {odd:,} pixel{' was' if odd == 1 else 's were'} "
                     f"neither 0 nor 255")
    elif not counts[255]:
        notes.append("mask is empty (no lesion pixels)")
    return np.asarray(image), (values > 127).astype(np.uint8), "; ".join(notes)


def format_problems(problems: list[Problem], limit: int = 20) -> str:
    """Problems as lines, the first ``limit`` of them, with a count of the rest."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
