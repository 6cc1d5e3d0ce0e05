"""ISIC 2018 Task 1 folders: find the official sub-folders, pair images with masks, validate.

The official zips unpack to one folder per set, for example::

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png

The same code reads the official download, a folder of your own in that layout (a nested
top folder is fine), ``../shared/data/isic2018_task1_512`` and the synthetic sample.
Nothing is skipped silently: every orphan, broken or odd file becomes a :class:`Problem`
naming the file and what is wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_DIRS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
IMAGE_RE = re.compile(r"^(ISIC_\d{7})\.jpe?g$", re.IGNORECASE)
MASK_RE = re.compile(r"^(ISIC_\d{7})_segmentation\.png$", re.IGNORECASE)
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
    """One image and its ground-truth mask."""

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
                raise DataError(f"{hits[0]} has images but {masks} is missing: put the ground-truth "
                                f"folder {mask_name} beside it (unzip the ground-truth zip there).")
            return hits[0], masks
    return None


def _listing(folder: Path, pattern: re.Pattern, kind: str) -> tuple[dict[str, Path], list[Problem]]:
    """Files of one folder keyed by ISIC id, plus problems for names that do not fit."""
    found, problems = {}, []
    for path in sorted(folder.iterdir()):
        if path.name.lower() in IGNORED or path.name.startswith((".", "_")) or path.is_dir():
            continue
        match = pattern.match(path.name)
        if match is None:
            problems.append(Problem(path, f"unrecognised {kind} file name; expected "
                                          f"{'ISIC_XXXXXXX.jpg' if kind == 'image' else 'ISIC_XXXXXXX_segmentation.png'}"))
        else:
            found[match.group(1).upper()] = path
    return found, problems


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
        problems.append(Problem(masks[isic_id], f"mask has no image ({isic_id}.jpg missing in {images_dir})"))
    pairs = [Pair(i, images[i], masks[i]) for i in sorted(set(images) & set(masks))]
    return pairs, problems


def _open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image file, or raise DataError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as err:  # PIL raises many types for broken files
        raise BadFile(path, f"corrupt or unreadable {kind} ({err}); re-extract or re-download it, "
                            f"or remove the pair.") from err


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, str]:
    """Decode and validate one pair.

    Args:
        pair: the files.

    Returns:
        image uint8 # (H, W, 3), mask uint8 in {0, 1} # (H, W), and a note ("" when clean,
        else e.g. "mask binarised").

    Raises:
        BadFile: naming the file and the problem (corrupt, not RGB, mask not single-channel,
            sizes differ, mask with no value above 127).
    """
    image, mask = _open(pair.image_path, "image"), _open(pair.mask_path, "mask")
    if image.mode != "RGB":
        raise BadFile(pair.image_path, f"image mode is {image.mode}, expected RGB; convert it to an RGB JPEG.")
    if mask.mode not in ("L", "1"):
        raise BadFile(pair.mask_path, f"mask mode is {mask.mode}, expected a single-channel "
                                      f"(grayscale) PNG with values 0 and 255.")
    if mask.size != image.size:
        raise BadFile(pair.mask_path, f"mask is {mask.size[0]}x{mask.size[1]} but its image "
                                      f"{pair.image_path.name} is {image.size[0]}x{image.size[1]}; they must match.")
    values = np.asarray(mask.convert("L"))
    counts = np.bincount(values.ravel(), minlength=256)
    note = ""
    if counts[1:255].any():
        if not counts[128:].any():
            raise BadFile(pair.mask_path, f"mask values only reach {values.max()}, so binarising at >127 "
                                          f"would leave it empty (a 0/1 mask?); save lesion pixels as 255.")
        note = "mask binarised at >127 (it had values other than 0 and 255)"
    elif not counts[255]:
        note = "mask is empty (no lesion pixels)"
    return np.asarray(image), (values > 127).astype(np.uint8), note


def format_problems(problems: list[Problem], limit: int = 20) -> str:
    """Problems as lines, the first ``limit`` of them, with a count of the rest."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
