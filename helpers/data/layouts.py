"""Dataset layouts: the ISIC 2018 folders, PH2's distributed tree, and plain image and mask folders.

:func:`detect_layout` names the layout of a folder, :func:`collect` pairs its images with their masks for a
protocol. Every layout gives the same :class:`~helpers.data.isic.Pair` (its ``isic_id`` is the file stem
outside ISIC) and is validated by :func:`~helpers.data.isic.load_pair`; outside ISIC leniently (images of
any mode converted to RGB with a note, RGB masks with equal channels read as grayscale).

``isic``
    The official folders (``ISIC2018_Task1-2_Training_Input`` ...), up to three levels down; see
    :mod:`helpers.data.isic`.
``ph2``
    PH2 as distributed, recognised by itself (the top folder may be nested up to four levels down and
    have any name)::

        PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
        PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp
        PH2 Dataset images/IMD002/IMD002_roi/...          (other folders are ignored)

``folders``
    Anything else: images and masks in two folders found by name (case-insensitive, up to three
    levels down, ``-`` and spaces read as ``_``; several pairs of them, e.g. ``train/images`` and
    ``test/images``, are merged) or side by side in one folder::

        images: images image imgs img inputs input
        masks:  masks mask labels label ground_truth groundtruth gt annotations annotation
                segmentations segmentation

    Files are JPEG, PNG, BMP or TIFF (images and masks alike); an image's id is its file stem and its mask
    is named ``<id><suffix>.<any of those>``. The suffix is ``_segmentation``, ``_lesion``, ``_mask`` or
    none (``""``; two folders only), or ``"auto"``: the one of these that pairs the most files (a tie or
    no pair at all is an error naming the folder). Images side by side with masks need a suffix.

Protocols: ``seed`` (all pairs, split 70/15/15 later), ``external`` (all pairs are test images: another
dataset to score trained models on; for ISIC every official split found) and ``official`` (ISIC only).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from helpers.data import isic
from helpers.data.isic import FILE_SUFFIXES, IGNORED, SPLIT_DIRS, DataError, Pair, Problem, duplicate_problem

LAYOUTS = ("isic", "ph2", "folders")
PROTOCOLS = ("seed", "official", "external")
MASK_SUFFIXES = ("_segmentation", "_lesion", "_mask")  # "auto" chooses among these and "" (none)
IMAGE_DIRS = ("images", "image", "imgs", "img", "inputs", "input")
MASK_DIRS = ("masks", "mask", "labels", "label", "ground_truth", "groundtruth", "gt", "annotations", "annotation",
             "segmentations", "segmentation")
FOLDER_DEPTH = 3  # folders layout: image/mask folders at most this far below the root
PH2_DEPTH = 4     # ph2: case folders (IMDxxx) at most this far below the root
PH2_IMAGE, PH2_LESION = "_Dermoscopic_Image", "_lesion"
SUFFIX_HELP = "set MASK_SUFFIX (mask_suffix=) to '_segmentation', '_lesion', '_mask' or '' (none)"
ONE_FOLDER_HELP = "set MASK_SUFFIX (mask_suffix=) to '_segmentation', '_lesion' or '_mask'"


@dataclass
class Scan:
    """What :func:`scan` found: the layout, the mask suffix used (``folders`` only), the pairs and the problems."""

    layout: str
    mask_suffix: str | None
    entries: list[tuple[str, Pair]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries, sorted by name, or a DataError naming it."""
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder}: cannot be read ({err.strerror or err}); check that it exists and that "
                        f"you may read it.") from err


def _subdirs(folder: Path) -> list[Path]:
    """Sub-folders worth looking into (not hidden, not macOS zip leftovers)."""
    return [Path(e.path) for e in _entries(folder)
            if e.is_dir() and not e.name.startswith(".") and e.name != "__MACOSX"]


def _levels(root: Path, depth: int, stop=lambda folder: False):
    """Folders level by level: ``[root]``, its sub-folders, theirs..., ``depth`` levels down; a folder for which
    ``stop`` is true is yielded but not entered."""
    level = [root]
    for _ in range(depth + 1):
        yield level
        level = [sub for folder in level if not stop(folder) for sub in _subdirs(folder)]
        if not level:
            return


def _norm(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _files(folder: Path) -> tuple[list[Path], list[Problem]]:
    """Image-format files directly in a folder, and problems for other files (hidden and licence files skipped)."""
    files, problems = [], []
    for entry in _entries(folder):
        if entry.name.lower() in IGNORED or entry.name.startswith((".", "_")) or entry.is_dir():
            continue
        if Path(entry.name).suffix.lower() in FILE_SUFFIXES:
            files.append(Path(entry.path))
        else:
            problems.append(Problem(Path(entry.path), f"not an image or mask file (by its suffix "
                                                      f"{Path(entry.name).suffix or 'none'}; expected one of "
                                                      f"{', '.join(FILE_SUFFIXES)}); move it out of this folder."))
    return files, problems


# ---------------------------------------------------------------------------------------------------- detection

def _has_isic(root: Path) -> bool:
    for split in SPLIT_DIRS:
        try:
            if isic.find_split_dirs(root, split) is not None:
                return True
        except DataError:  # its images are there, its masks not: still the ISIC layout (collect says so)
            return True
    return False


def _is_ph2_case(folder: Path) -> bool:
    wanted = (folder.name + PH2_IMAGE).lower()
    return any(sub.name.lower() == wanted for sub in _subdirs(folder))


def _ph2_case_parents(root: Path) -> list[Path]:
    """The folders holding PH2 case folders (``IMD002``...) at the shallowest depth they are found."""
    for level in _levels(root, PH2_DEPTH, stop=lambda f: f.name.lower().endswith(PH2_IMAGE.lower())):
        parents = sorted({f.parent for f in level if f != root and _is_ph2_case(f)})
        if parents:
            return parents
    return []


def detect_layout(root: str | Path) -> str:
    """The layout of a dataset folder: ``"isic"`` (official ISIC 2018 folders found), ``"ph2"`` (a PH2 tree
    found), else ``"folders"`` (plain image and mask folders; :func:`collect` says if nothing pairs).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; point DATA_DIR at the folder that holds the images and masks.")
    if _has_isic(root):
        return "isic"
    if _ph2_case_parents(root):
        return "ph2"
    return "folders"


# ---------------------------------------------------------------------------------------------------- layouts

def _isic(root: Path, protocol: str) -> Scan:
    splits = ("train",) if protocol == "seed" else ("train", "val", "test")
    found = Scan("isic", None)
    seen: dict[str, Path] = {}
    searched = 0
    for split in splits:
        dirs = isic.find_split_dirs(root, split)
        if dirs is None:
            if protocol == "external":
                continue
            raise DataError(f"{root}: no {split} images found (looked for the official folder "
                            f"{SPLIT_DIRS[split][0] if split == 'train' else split} up to three "
                            f"levels down). Point DATA_DIR at the unpacked ISIC 2018 Task 1 data"
                            + ("" if split == "train" else ", or use PROTOCOL='seed'") + ".")
        searched += 1
        pairs, problems = isic.pair_files(*dirs)
        found.problems += problems
        for pair in pairs:
            if pair.isic_id in seen:  # in two official splits
                found.problems.append(duplicate_problem([seen[pair.isic_id], pair.image_path], "image"))
                continue
            seen[pair.isic_id] = pair.image_path
            found.entries.append(("test" if protocol == "external" else split, pair))
    if not searched:
        raise DataError(f"{root}: no official ISIC 2018 image folders found (e.g. {SPLIT_DIRS['train'][0]}, up to "
                        f"three levels down); point DATA_DIR at the unpacked ISIC 2018 Task 1 data, or leave "
                        f"LAYOUT on 'auto'.")
    if not found.entries and not found.problems:
        raise DataError(f"{root}: the ISIC folders hold no images; put the images and masks there "
                        f"(unzip the official zips) or point DATA_DIR elsewhere.")
    return found


def _ph2(root: Path, protocol: str) -> Scan:
    parents = _ph2_case_parents(root)
    if not parents:
        raise DataError(f"{root}: no PH2 case folders found (IMDxxx/IMDxxx{PH2_IMAGE}/IMDxxx.bmp, up to "
                        f"{PH2_DEPTH} levels down); point DATA_DIR at the unpacked PH2 data, or leave LAYOUT on 'auto'.")
    found = Scan("ph2", None)
    seen: dict[str, Path] = {}
    split = "test" if protocol == "external" else "train"
    for parent in parents:
        for case in _subdirs(parent):
            if not _is_ph2_case(case):
                if re.fullmatch(r"IMD\d+", case.name, re.IGNORECASE):
                    found.problems.append(Problem(case, f"PH2 case folder has no {case.name}{PH2_IMAGE} folder; "
                                                        f"add it or remove the case folder."))
                continue
            pair = _ph2_pair(case, found.problems)
            if pair is None:
                continue
            if pair.isic_id.lower() in seen:
                found.problems.append(duplicate_problem([seen[pair.isic_id.lower()], pair.image_path], "image"))
                continue
            seen[pair.isic_id.lower()] = pair.image_path
            found.entries.append((split, pair))
    return found


def _named_file(folder: Path, stem: str, problems: list[Problem], kind: str, what: str) -> Path | None:
    """The one file ``<stem>.<image suffix>`` in a folder; None (and a problem) when missing or there twice."""
    files = [f for f in _files(folder)[0] if f.stem.lower() == stem.lower()]
    if len(files) > 1:
        problems.append(duplicate_problem(files, kind))
        return None
    if not files:
        problems.append(Problem(folder, f"no {what} here ({stem}.bmp or another image format); add it, or "
                                        f"remove the case folder."))
        return None
    return files[0]


def _ph2_pair(case: Path, problems: list[Problem]) -> Pair | None:
    case_id = case.name
    subs = {sub.name.lower(): sub for sub in _subdirs(case)}
    lesion_dir = subs.get((case_id + PH2_LESION).lower())
    if lesion_dir is None:
        problems.append(Problem(case, f"PH2 case has no lesion mask ({case_id}{PH2_LESION}/{case_id}{PH2_LESION}.bmp "
                                      f"missing); add it, or remove the case folder (or set ON_BAD_FILE='skip')."))
        return None
    found = len(problems)
    image = _named_file(subs[(case_id + PH2_IMAGE).lower()], case_id, problems, "image", "dermoscopic image")
    mask = _named_file(lesion_dir, case_id + PH2_LESION, problems, "mask", "lesion mask")
    if len(problems) > found:
        return None
    return Pair(case_id, image, mask)


def _folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(images folder, masks folder) pairs of the folders layout; one folder (images and suffixed masks side
    by side) comes as (folder, folder).

    Raises:
        DataError: nothing looks like images; a folder with two image (or mask) folders.
    """
    def named(folder: Path, names: tuple[str, ...]) -> list[Path]:
        return [sub for sub in _subdirs(folder) if _norm(sub.name) in names]

    def is_named(folder: Path) -> bool:
        return _norm(folder.name) in IMAGE_DIRS + MASK_DIRS

    for level in _levels(root, FOLDER_DEPTH, stop=is_named):
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
            elif masks and _files(folder)[0]:  # images loose in the folder, masks in a sub-folder
                found.append((folder, masks[0]))
        if found:
            return found
    for level in _levels(root, FOLDER_DEPTH):  # no named folders: images and masks side by side
        found = [(folder, folder) for folder in level if _files(folder)[0]]
        if found:
            return found
    if not _entries(root):
        raise DataError(f"{root} is empty; put the images and masks there, or point DATA_DIR at the folder "
                        f"that holds them.")
    raise DataError(f"{root} matches no dataset layout: no official ISIC 2018 folders, no PH2 tree "
                    f"(IMDxxx/IMDxxx{PH2_IMAGE}), no image and mask folders (images: {', '.join(IMAGE_DIRS)}; "
                    f"masks: {', '.join(MASK_DIRS)}) and no image files ({', '.join(FILE_SUFFIXES)}) up to "
                    f"{FOLDER_DEPTH} levels down. Put the images in images/ and the masks in masks/ (or point "
                    f"DATA_DIR at the folder that holds them).")


def _split_listing(images_dir: Path, masks_dir: Path) -> tuple[list[Path], list[Path], list[Problem]]:
    """Image files and mask files of a folder pair (one folder: all files on both sides), and odd files."""
    images, problems = _files(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no image files here (looked for {', '.join(FILE_SUFFIXES)}); put the "
                        f"images there or point DATA_DIR at the folder that holds them.")
    if masks_dir == images_dir:
        return images, images, problems
    masks, more = _files(masks_dir)
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
                  found: Scan, split: str, seen: dict[str, Path]) -> None:
    """Pair one folder pair's files by id with ``suffix``; orphans, odd names and duplicates become problems."""
    wanted = suffix.lower()
    one_folder = images_dir == masks_dir
    by_image: dict[str, list[Path]] = {}
    by_mask: dict[str, list[Path]] = {}
    for path in masks:
        stem = path.stem
        if stem.lower().endswith(wanted) and len(stem) > len(wanted):
            by_mask.setdefault(stem[:len(stem) - len(wanted)].lower(), []).append(path)
        elif not one_folder:
            found.problems.append(Problem(path, f"unrecognised mask file name; expected <image name>{suffix}"
                                                f"{path.suffix} (the mask suffix is {suffix!r}; {SUFFIX_HELP})."))
    for path in images:
        if not (one_folder and path.stem.lower().endswith(wanted)):
            by_image.setdefault(path.stem.lower(), []).append(path)
    twice = set()  # ids in two files: left out, their partner is no orphan
    for kind, listing in (("image", by_image), ("mask", by_mask)):
        for key in [k for k, files in listing.items() if len(files) > 1]:
            found.problems.append(duplicate_problem(listing.pop(key), kind))
            twice.add(key)
    for key in twice:
        by_image.pop(key, None)
        by_mask.pop(key, None)
    for key in sorted(set(by_image) - set(by_mask)):
        image = by_image[key][0]
        found.problems.append(Problem(image, f"image has no mask ({image.stem}{suffix}.png or another image "
                                             f"format missing in {masks_dir})"))
    for key in sorted(set(by_mask) - set(by_image)):
        mask = by_mask[key][0]
        found.problems.append(Problem(mask, f"mask has no image ({mask.stem[:len(mask.stem) - len(wanted)]}.jpg "
                                            f"or another image format missing in {images_dir})"))
    for key in sorted(set(by_image) & set(by_mask)):
        image = by_image[key][0]
        if key in seen:  # the same id in another folder pair
            found.problems.append(duplicate_problem([seen[key], image], "image"))
            continue
        seen[key] = image
        found.entries.append((split, Pair(image.stem, image, by_mask[key][0])))


def _folders(root: Path, protocol: str, mask_suffix: str) -> Scan:
    folder_pairs = _folder_pairs(root)
    listings, problems = [], []
    for images_dir, masks_dir in folder_pairs:
        images, masks, odd = _split_listing(images_dir, masks_dir)
        listings.append((images_dir, masks_dir, images, masks))
        problems += odd
    if mask_suffix == "auto":
        where = folder_pairs[0][1] if len(folder_pairs) == 1 else root
        suffix = _choose_suffix(listings, where)
    else:
        suffix = mask_suffix
        for images_dir, masks_dir, _, _ in listings:
            if not suffix and images_dir == masks_dir:
                raise DataError(f"{images_dir}: images and masks are in one folder, so the masks need a suffix "
                                f"(<image name>_mask.png); {ONE_FOLDER_HELP}, or move the "
                                f"masks to a masks/ folder beside an images/ folder.")
    found = Scan("folders", suffix, problems=problems)
    seen: dict[str, Path] = {}
    for images_dir, masks_dir, images, masks in listings:
        _pair_listing(images_dir, masks_dir, images, masks, suffix, found, "test" if protocol == "external" else "train",
                      seen)
    return found


# ---------------------------------------------------------------------------------------------------- entry points

def _normal_suffix(mask_suffix: str | None) -> str:
    if mask_suffix is None or str(mask_suffix).strip().lower() in ("", "none"):
        return ""
    return str(mask_suffix) if str(mask_suffix).lower() != "auto" else "auto"


def scan(root: str | Path, protocol: str, mask_suffix: str | None = "auto", layout: str = "auto") -> Scan:
    """Find the pairs of a dataset folder for a protocol: the layout, the mask suffix used, pairs and problems.

    Args:
        root: the dataset folder.
        protocol: ``seed`` (pairs labelled ``train``, split later), ``external`` (pairs labelled ``test``) or
            ``official`` (ISIC only: the official train/val/test folders).
        mask_suffix: ``"auto"``, a suffix such as ``"_mask"``, or ``""``/None for none (``folders`` only).
        layout: ``"auto"`` (:func:`detect_layout`) or one of :data:`LAYOUTS`.

    Raises:
        ValueError: an unknown protocol or layout.
        DataError: a folder the protocol needs is absent, nothing pairs, an ambiguous suffix, ``official``
            outside ISIC; the message names the folder and says what to do.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    if layout != "isic" and protocol == "official":
        raise DataError(f"{root}: PROTOCOL='official' needs the official ISIC 2018 folders, but this is a "
                        f"{layout!r} dataset; use PROTOCOL='seed' (a seeded 70/15/15 split) or 'external' "
                        f"(every image a test image, to score trained models on it).")
    if layout == "isic":
        return _isic(root, protocol)
    if layout == "ph2":
        return _ph2(root, protocol)
    return _folders(root, protocol, _normal_suffix(mask_suffix))


def collect(root: str | Path, protocol: str, mask_suffix: str | None = "auto",
            layout: str = "auto") -> tuple[list[tuple[str, Pair]], list[Problem]]:
    """All (split, pair) of a dataset folder for a protocol, and the problems met pairing them (see :func:`scan`)."""
    found = scan(root, protocol, mask_suffix, layout)
    return found.entries, found.problems
