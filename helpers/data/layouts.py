"""Dataset layouts: the ISIC 2018 folders, PH2's distributed tree, and plain image and mask folders.

:func:`detect_layout` names the layout of a folder, :func:`collect` pairs its images with their
masks for a protocol. Every layout gives the same :class:`~helpers.data.isic.Pair` (its ``isic_id``
is the file stem outside ISIC) and is validated by :func:`~helpers.data.isic.load_pair`; outside
ISIC leniently (images of any mode converted to RGB with a note, RGB masks with equal channels read
as grayscale).

``isic``
    The official folders (``ISIC2018_Task1-2_Training_Input`` ...), up to three levels down; see
    :mod:`helpers.data.isic`.
``ph2``
    PH2 as distributed, recognised by itself (the top folder may be nested up to four levels down
    and have any name)::

        PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
        PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp
        PH2 Dataset images/IMD002/IMD002_roi/...          (other folders are ignored)

``folders``
    Anything else: images and masks in two folders found by name (``images/`` and ``masks/``, and
    the like) or side by side in one folder, masks named ``<image id><suffix>``; see
    :mod:`helpers.data.folders`.

Protocols: ``seed`` (all pairs, split 70/15/15 later), ``external`` (all pairs are test images:
another dataset to score trained models on; for ISIC every official split found) and ``official``
(ISIC only).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from helpers.data import folders, isic
from helpers.data.folders import (
    FOLDER_DEPTH,
    IMAGE_DIRS,
    MASK_DIRS,
    levels,
    list_entries,
    list_files,
    subdirs,
)
from helpers.data.folders import (
    MASK_SUFFIXES as MASK_SUFFIXES,  # re-exported: this module's API before the split
)
from helpers.data.folders import ONE_FOLDER_HELP as ONE_FOLDER_HELP
from helpers.data.folders import SUFFIX_HELP as SUFFIX_HELP
from helpers.data.isic import FILE_SUFFIXES, SPLIT_DIRS, DataError, Pair, Problem, duplicate_problem

LAYOUTS = ("isic", "ph2", "folders")
PROTOCOLS = ("seed", "official", "external")
PH2_DEPTH = 4     # ph2: case folders (IMDxxx) at most this far below the root
PH2_IMAGE, PH2_LESION = "_Dermoscopic_Image", "_lesion"


@dataclass
class Scan:
    """What :func:`scan` found: the layout, the mask suffix used (``folders`` only), the pairs and
    the problems."""

    layout: str
    mask_suffix: str | None
    entries: list[tuple[str, Pair]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- detection

def _has_isic(root: Path) -> bool:
    for split in SPLIT_DIRS:
        try:
            if isic.find_split_dirs(root, split) is not None:
                return True
        # its images are there, its masks not: still the ISIC layout (collect says so)
        except DataError:
            return True
    return False


def _is_ph2_case(folder: Path) -> bool:
    wanted = (folder.name + PH2_IMAGE).lower()
    return any(sub.name.lower() == wanted for sub in subdirs(folder))


def _ph2_case_parents(root: Path) -> list[Path]:
    """The folders holding PH2 case folders (``IMD002``...) at the shallowest depth they are
    found."""
    for level in levels(root, PH2_DEPTH, stop=lambda f: f.name.lower().endswith(PH2_IMAGE.lower())):
        parents = sorted({f.parent for f in level if f != root and _is_ph2_case(f)})
        if parents:
            return parents
    return []


def detect_layout(root: str | Path) -> str:
    """The layout of a dataset folder: ``"isic"`` (official ISIC 2018 folders found), ``"ph2"`` (a
    PH2 tree found), else ``"folders"`` (plain image and mask folders; :func:`collect` says if
    nothing pairs).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; point DATA_DIR at the folder that holds the "
                        f"images and masks.")
    if _has_isic(root):
        return "isic"
    if _ph2_case_parents(root):
        return "ph2"
    return "folders"


# ------------------------------------------------------------------------------------------ layouts

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
                            + ("" if split == "train" else ", or use protocol='seed'") + ".")
        searched += 1
        pairs, problems = isic.pair_files(*dirs)
        found.problems += problems
        for pair in pairs:
            if pair.isic_id in seen:  # in two official splits
                found.problems.append(duplicate_problem([seen[pair.isic_id], pair.image_path],
                                                        "image"))
                continue
            seen[pair.isic_id] = pair.image_path
            found.entries.append(("test" if protocol == "external" else split, pair))
    if not searched:
        raise DataError(f"{root}: no official ISIC 2018 image folders found (e.g. "
                        f"{SPLIT_DIRS['train'][0]}, up to three levels down); point DATA_DIR at "
                        f"the unpacked ISIC 2018 Task 1 data, or leave LAYOUT on 'auto'.")
    if not found.entries and not found.problems:
        raise DataError(f"{root}: the ISIC folders hold no images; put the images and masks there "
                        f"(unzip the official zips) or point DATA_DIR elsewhere.")
    return found


def _ph2(root: Path, protocol: str) -> Scan:
    parents = _ph2_case_parents(root)
    if not parents:
        raise DataError(f"{root}: no PH2 case folders found (IMDxxx/IMDxxx{PH2_IMAGE}/IMDxxx.bmp, "
                        f"up to {PH2_DEPTH} levels down); point DATA_DIR at the unpacked PH2 data, "
                        f"or leave LAYOUT on 'auto'.")
    found = Scan("ph2", None)
    seen: dict[str, Path] = {}
    split = "test" if protocol == "external" else "train"
    for parent in parents:
        for case in subdirs(parent):
            if not _is_ph2_case(case):
                if re.fullmatch(r"IMD\d+", case.name, re.IGNORECASE):
                    found.problems.append(Problem(case, f"PH2 case folder has no "
                                                        f"{case.name}{PH2_IMAGE} folder; add it or "
                                                        f"remove the case folder."))
                continue
            pair = _ph2_pair(case, found.problems)
            if pair is None:
                continue
            if pair.isic_id.lower() in seen:
                found.problems.append(
                    duplicate_problem([seen[pair.isic_id.lower()], pair.image_path], "image"))
                continue
            seen[pair.isic_id.lower()] = pair.image_path
            found.entries.append((split, pair))
    return found


def _named_file(folder: Path, stem: str, problems: list[Problem], kind: str,
                what: str) -> Path | None:
    """The one file ``<stem>.<image suffix>`` in a folder; None (and a problem) when missing or
    there twice."""
    files = [f for f in list_files(folder)[0] if f.stem.lower() == stem.lower()]
    if len(files) > 1:
        problems.append(duplicate_problem(files, kind))
        return None
    if not files:
        problems.append(Problem(folder, f"no {what} here ({stem}.bmp or another image format); add "
                                        f"it, or remove the case folder."))
        return None
    return files[0]


def _ph2_pair(case: Path, problems: list[Problem]) -> Pair | None:
    case_id = case.name
    subs = {sub.name.lower(): sub for sub in subdirs(case)}
    lesion_dir = subs.get((case_id + PH2_LESION).lower())
    if lesion_dir is None:
        problems.append(Problem(case, f"PH2 case has no lesion mask "
                                      f"({case_id}{PH2_LESION}/{case_id}{PH2_LESION}.bmp missing); "
                                      f"add it, or remove the case folder (or set the study "
                                      f"setting on_bad_file='skip')."))
        return None
    found = len(problems)
    image = _named_file(subs[(case_id + PH2_IMAGE).lower()], case_id, problems, "image",
                        "dermoscopic image")
    mask = _named_file(lesion_dir, case_id + PH2_LESION, problems, "mask", "lesion mask")
    if len(problems) > found:
        return None
    return Pair(case_id, image, mask)


def _folders(root: Path, protocol: str, mask_suffix: str) -> Scan:
    pairs = folders.folder_pairs(root)
    if not pairs:
        if not list_entries(root):
            raise DataError(f"{root} is empty; put the images and masks there, or point DATA_DIR "
                            f"at the folder that holds them.")
        raise DataError(f"{root} matches no dataset layout: no official ISIC 2018 folders, no PH2 "
                        f"tree (IMDxxx/IMDxxx{PH2_IMAGE}), no image and mask folders (images: "
                        f"{', '.join(IMAGE_DIRS)}; masks: {', '.join(MASK_DIRS)}) and no image "
                        f"files ({', '.join(FILE_SUFFIXES)}) up to {FOLDER_DEPTH} levels down. Put "
                        f"the images in images/ and the masks in masks/ (or point DATA_DIR at the "
                        f"folder that holds them).")
    split = "test" if protocol == "external" else "train"
    suffix, entries, problems = folders.pair_folders(root, pairs, split, mask_suffix)
    return Scan("folders", suffix, entries, problems)


# ------------------------------------------------------------------------------------- entry points

def scan(root: str | Path, protocol: str, mask_suffix: str | None = "auto",
         layout: str = "auto") -> Scan:
    """Find the pairs of a dataset folder for a protocol: the layout, the mask suffix used, pairs
    and problems.

    Args:
        root: the dataset folder.
        protocol: ``seed`` (pairs labelled ``train``, split later), ``external`` (pairs labelled
            ``test``) or ``official`` (ISIC only: the official train/val/test folders).
        mask_suffix: ``"auto"``, a suffix such as ``"_mask"``, or ``""``/None for none (``folders``
            only).
        layout: ``"auto"`` (:func:`detect_layout`) or one of :data:`LAYOUTS`.

    Raises:
        ValueError: an unknown protocol or layout.
        DataError: a folder the protocol needs is absent, nothing pairs, an ambiguous suffix,
            ``official`` outside ISIC; the message names the folder and says what to do.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    if layout != "isic" and protocol == "official":
        raise DataError(f"{root}: protocol='official' needs the official ISIC 2018 folders, but "
                        f"this is a {layout!r} dataset; use protocol='seed' (a seeded 70/15/15 "
                        f"split) or 'external' (every image a test image, to score trained models "
                        f"on it).")
    if layout == "isic":
        return _isic(root, protocol)
    if layout == "ph2":
        return _ph2(root, protocol)
    return _folders(root, protocol, folders.normal_suffix(mask_suffix))


def collect(root: str | Path, protocol: str, mask_suffix: str | None = "auto",
            layout: str = "auto") -> tuple[list[tuple[str, Pair]], list[Problem]]:
    """All (split, pair) of a dataset folder for a protocol, and the problems met pairing them (see
    :func:`scan`)."""
    found = scan(root, protocol, mask_suffix, layout)
    return found.entries, found.problems
