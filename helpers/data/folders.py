"""Plain image and mask folders (the ``folders`` layout of :mod:`helpers.data.layouts`), and the folder
walking every layout uses (:func:`list_entries`, :func:`subdirs`, :func:`levels`, :func:`list_files`).

Images and masks lie in two folders found by name (case-insensitive, up to three levels down, ``-`` and
spaces read as ``_``; several pairs of them, e.g. ``train/images`` and ``test/images``, are merged) or side
by side in one folder::

    images: images image imgs img inputs input
    masks:  masks mask labels label ground_truth groundtruth gt annotations annotation
            segmentations segmentation

Files are JPEG, PNG, BMP or TIFF (images and masks alike); an image's id is its file stem and its mask is
named ``<id><suffix>.<any of those>``. The suffix is ``_segmentation``, ``_lesion``, ``_mask`` or none
(``""``; two folders only), or ``"auto"``: the one of these that pairs the most files (a tie or no pair at
all is an error naming the folder). Images side by side with masks need a suffix.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from helpers.data.isic import FILE_SUFFIXES, IGNORED, DataError, Pair, Problem, duplicate_problem

MASK_SUFFIXES = ("_segmentation", "_lesion", "_mask")  # "auto" chooses among these and "" (none)
IMAGE_DIRS = ("images", "image", "imgs", "img", "inputs", "input")
MASK_DIRS = ("masks", "mask", "labels", "label", "ground_truth", "groundtruth", "gt", "annotations", "annotation",
             "segmentations", "segmentation")
FOLDER_DEPTH = 3  # image/mask folders at most this far below the root
SUFFIX_HELP = "set the study setting mask_suffix to '_segmentation', '_lesion', '_mask' or '' (none)"
ONE_FOLDER_HELP = "set the study setting mask_suffix to '_segmentation', '_lesion' or '_mask'"


# ---------------------------------------------------------------------------------------------------- folder walking

def list_entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries, sorted by name, or a DataError naming it."""
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder}: cannot be read ({err.strerror or err}); check that it exists and that "
                        f"you may read it.") from err


def subdirs(folder: Path) -> list[Path]:
    """Sub-folders worth looking into (not hidden, not macOS zip leftovers)."""
    return [Path(e.path) for e in list_entries(folder)
            if e.is_dir() and not e.name.startswith(".") and e.name != "__MACOSX"]


def levels(root: Path, depth: int, stop=lambda folder: False):
    """Folders level by level: ``[root]``, its sub-folders, theirs..., ``depth`` levels down; a folder for which
    ``stop`` is true is yielded but not entered."""
    level = [root]
    for _ in range(depth + 1):
        yield level
        level = [sub for folder in level if not stop(folder) for sub in subdirs(folder)]
        if not level:
            return


def _norm(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def list_files(folder: Path) -> tuple[list[Path], list[Problem]]:
    """Image-format files directly in a folder, and problems for other files (hidden and licence files skipped)."""
    files, problems = [], []
    for entry in list_entries(folder):
        if entry.name.lower() in IGNORED or entry.name.startswith((".", "_")) or entry.is_dir():
            continue
        if Path(entry.name).suffix.lower() in FILE_SUFFIXES:
            files.append(Path(entry.path))
        else:
            problems.append(Problem(Path(entry.path), f"not an image or mask file (by its suffix "
                                                      f"{Path(entry.name).suffix or 'none'}; expected one of "
                                                      f"{', '.join(FILE_SUFFIXES)}); move it out of this folder."))
    return files, problems


# ---------------------------------------------------------------------------------------------------- the folders layout

def normal_suffix(mask_suffix: str | None) -> str:
    """A ``mask_suffix`` setting as used: ``""`` for none (None, ``""``, ``"none"``), ``"auto"``, else as given."""
    if mask_suffix is None or str(mask_suffix).strip().lower() in ("", "none"):
        return ""
    return str(mask_suffix) if str(mask_suffix).lower() != "auto" else "auto"


def folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(images folder, masks folder) pairs of the folders layout; one folder (images and suffixed masks side
    by side) comes as (folder, folder); empty when nothing looks like images (:mod:`helpers.data.layouts` says so).

    Raises:
        DataError: a folder with two image (or mask) folders.
    """
    def named(folder: Path, names: tuple[str, ...]) -> list[Path]:
        return [sub for sub in subdirs(folder) if _norm(sub.name) in names]

    def is_named(folder: Path) -> bool:
        return _norm(folder.name) in IMAGE_DIRS + MASK_DIRS

    for level in levels(root, FOLDER_DEPTH, stop=is_named):
        found = []
        for folder in level:
            if is_named(folder) and folder != root:
                continue
            images, masks = named(folder, IMAGE_DIRS), named(folder, MASK_DIRS)
            for kind, hits in (("image", images), ("mask", masks)):
                if len(hits) > 1:
                    raise DataError(f"{folder}: several {kind} folders ({', '.join(h.name for h in hits)}); keep "
                                    f"one, or point DATA_DIR at the folder holding the one you mean.")
            if images:
                found.append((images[0], masks[0] if masks else images[0]))
            elif masks and list_files(folder)[0]:  # images loose in the folder, masks in a sub-folder
                found.append((folder, masks[0]))
        if found:
            return found
    for level in levels(root, FOLDER_DEPTH):  # no named folders: images and masks side by side
        found = [(folder, folder) for folder in level if list_files(folder)[0]]
        if found:
            return found
    return []


def _split_listing(images_dir: Path, masks_dir: Path) -> tuple[list[Path], list[Path], list[Problem]]:
    """Image files and mask files of a folder pair (one folder: all files on both sides), and odd files."""
    images, problems = list_files(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no image files here (looked for {', '.join(FILE_SUFFIXES)}); put the "
                        f"images there or point DATA_DIR at the folder that holds them.")
    if masks_dir == images_dir:
        return images, images, problems
    masks, more = list_files(masks_dir)
    if not masks:
        raise DataError(f"{masks_dir}: no mask files here (looked for {', '.join(FILE_SUFFIXES)}); put the "
                        f"masks there, named <image name><suffix>.png, e.g. {images[0].stem}_mask.png or "
                        f"{images[0].stem}.png.")
    return images, masks, problems + more


def _count_pairs(images: list[Path], masks: list[Path], suffix: str, one_folder: bool) -> int:
    """How many images have a mask ``<stem><suffix>`` (one folder: images are the files without the suffix)."""
    wanted = suffix.lower()
    mask_keys = {f.stem.lower()[:len(f.stem) - len(wanted)] for f in masks if f.stem.lower().endswith(wanted)}
    image_keys = {f.stem.lower() for f in images if not (one_folder and f.stem.lower().endswith(wanted))}
    return len(image_keys & mask_keys)


def _choose_suffix(listings: list[tuple[Path, Path, list[Path], list[Path]]], where: Path) -> str:
    """The mask suffix that pairs the most files over all folder pairs.

    Raises:
        DataError: a tie between the best suffixes, or nothing pairs; naming ``where``.
    """
    one_folder = all(images_dir == masks_dir for images_dir, masks_dir, _, _ in listings)
    candidates = MASK_SUFFIXES + (() if one_folder else ("",))
    counts = {s: sum(_count_pairs(i, m, s, a == b) for a, b, i, m in listings if s or a != b) for s in candidates}
    best = max(counts.values())
    winners = [s for s, n in counts.items() if n == best]
    if best == 0:
        images, masks = listings[0][2], listings[0][3]
        raise DataError(f"{where}: no image pairs with a mask; looked for masks named <image name><suffix> with "
                        f"suffix {', '.join(repr(s) for s in candidates)} (e.g. image {images[0].name}, "
                        f"mask {masks[-1].name}). Rename the masks as <image name>_mask.png, or {SUFFIX_HELP}.")
    if len(winners) > 1:
        raise DataError(f"{where}: mask suffixes {' and '.join(repr(s) for s in winners)} pair equally many files "
                        f"({best}); {SUFFIX_HELP}, the one your masks use.")
    return winners[0]


def _pair_listing(images_dir: Path, masks_dir: Path, images: list[Path], masks: list[Path], suffix: str,
                  split: str, seen: dict[str, Path], entries: list[tuple[str, Pair]], problems: list[Problem]) -> None:
    """Pair one folder pair's files by id with ``suffix`` into ``entries``; orphans, odd names and duplicates
    become ``problems``."""
    wanted = suffix.lower()
    one_folder = images_dir == masks_dir
    by_image: dict[str, list[Path]] = {}
    by_mask: dict[str, list[Path]] = {}
    for path in masks:
        stem = path.stem
        if stem.lower().endswith(wanted) and len(stem) > len(wanted):
            by_mask.setdefault(stem[:len(stem) - len(wanted)].lower(), []).append(path)
        elif not one_folder:
            problems.append(Problem(path, f"unrecognised mask file name; expected <image name>{suffix}"
                                          f"{path.suffix} (the mask suffix is {suffix!r}; {SUFFIX_HELP})."))
    for path in images:
        if not (one_folder and path.stem.lower().endswith(wanted)):
            by_image.setdefault(path.stem.lower(), []).append(path)
    twice = set()  # ids in two files: left out, their partner is no orphan
    for kind, listing in (("image", by_image), ("mask", by_mask)):
        for key in [k for k, files in listing.items() if len(files) > 1]:
            problems.append(duplicate_problem(listing.pop(key), kind))
            twice.add(key)
    for key in twice:
        by_image.pop(key, None)
        by_mask.pop(key, None)
    for key in sorted(set(by_image) - set(by_mask)):
        image = by_image[key][0]
        problems.append(Problem(image, f"image has no mask ({image.stem}{suffix}.png or another image "
                                       f"format missing in {masks_dir})"))
    for key in sorted(set(by_mask) - set(by_image)):
        mask = by_mask[key][0]
        problems.append(Problem(mask, f"mask has no image ({mask.stem[:len(mask.stem) - len(wanted)]}.jpg "
                                      f"or another image format missing in {images_dir})"))
    for key in sorted(set(by_image) & set(by_mask)):
        image = by_image[key][0]
        if key in seen:  # the same id in another folder pair
            problems.append(duplicate_problem([seen[key], image], "image"))
            continue
        seen[key] = image
        entries.append((split, Pair(image.stem, image, by_mask[key][0])))


def pair_folders(root: Path, pairs: list[tuple[Path, Path]], split: str,
                 mask_suffix: str) -> tuple[str, list[tuple[str, Pair]], list[Problem]]:
    """Pair the files of the folder pairs (from :func:`folder_pairs`, not empty) with ``mask_suffix`` (``"auto"``,
    a suffix, or ``""``; see :func:`normal_suffix`), each pair labelled ``split``: the suffix used, the (split,
    pair) entries and the problems.

    Raises:
        DataError: a folder without image (or mask) files, an ambiguous or unmatched ``"auto"`` suffix, no
            suffix for images and masks in one folder; naming the folder.
    """
    listings, problems = [], []
    for images_dir, masks_dir in pairs:
        images, masks, odd = _split_listing(images_dir, masks_dir)
        listings.append((images_dir, masks_dir, images, masks))
        problems += odd
    if mask_suffix == "auto":
        where = pairs[0][1] if len(pairs) == 1 else root
        suffix = _choose_suffix(listings, where)
    else:
        suffix = mask_suffix
        for images_dir, masks_dir, _, _ in listings:
            if not suffix and images_dir == masks_dir:
                raise DataError(f"{images_dir}: images and masks are in one folder, so the masks need a suffix "
                                f"(<image name>_mask.png); {ONE_FOLDER_HELP}, or move the "
                                f"masks to a masks/ folder beside an images/ folder.")
    entries: list[tuple[str, Pair]] = []
    seen: dict[str, Path] = {}
    for images_dir, masks_dir, images, masks in listings:
        _pair_listing(images_dir, masks_dir, images, masks, suffix, split, seen, entries, problems)
    return suffix, entries, problems

