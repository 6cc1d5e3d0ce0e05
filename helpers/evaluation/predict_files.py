"""Which files ``predict`` reads and writes: the inputs, unique output names, and an output folder it never
lets harm what the user made.

- The output folder may not be an input folder or lie inside one (:func:`check_output_folder`).
- ``predict_manifest.json`` in the output folder lists the files predict wrote there (:func:`read_manifest`);
  a file of another name that an output would replace stops it before anything is written, unless asked
  (:func:`check_overwrite`). An output folder of an earlier version is recognised by its ``predictions.csv``.
- Files a manifest lists are never inputs (:func:`collect_inputs`).
- Inputs whose names repeat keep their relative paths in their outputs' names (:func:`output_names`).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from helpers import cli, paths

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
COLUMNS = ["id", "file", "width", "height", "lesion_fraction", "mean_confidence", "ms"]  # of predictions.csv
MANIFEST = "predict_manifest.json"  # in the output folder: the files predict wrote there
TABLE = "predictions.csv"
OUTPUTS = ("_segmentation.png", "_overlay.jpg")  # after each input's id


class OutputClash(FileExistsError):
    """The output folder holds files predict did not write, which its outputs would replace."""


def read_manifest(folder: str | Path) -> set[str]:
    """Names of the files predict wrote in ``folder`` (empty: none, or not a folder of predictions).

    An output folder of an earlier version, without a manifest, is recognised by its ``predictions.csv``: the
    files of the ids it lists count as predict's own.

    Raises:
        ValueError: the manifest is unreadable (the message names it and says what to do).
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if path.is_file():
        try:
            files = json.loads(path.read_text())["files"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err}); delete it if every file in "
                             f"{folder} may be overwritten, or choose another output folder.") from None
        return set(map(str, files))
    return _legacy_outputs(folder)


def _legacy_outputs(folder: Path) -> set[str]:
    """The outputs an earlier predict (no manifest) listed in its ``predictions.csv``; empty when there is none."""
    try:
        table = pd.read_csv(folder / TABLE, dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return set()
    if list(table.columns) != COLUMNS:
        return set()
    return {TABLE} | {f"{name}{end}" for name in table["id"] for end in OUTPUTS}


def _own_outputs(path: Path, seen: dict[Path, set[str]]) -> bool:
    """True when ``path`` is a file predict wrote (listed in its folder's manifest), or that manifest itself."""
    if path.parent not in seen:
        seen[path.parent] = read_manifest(path.parent) if (path.parent / MANIFEST).is_file() else set()
    return path.name == MANIFEST or path.name in seen[path.parent]


def collect_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files from files and folders (folders: their images, sorted); and notes on what was left out.

    Files an earlier prediction wrote (listed in a ``predict_manifest.json``) are never inputs; a file given twice
    (itself, and in its folder) is read once.
    """
    found, notes, seen, manifests = {}, [], set(), {}
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if _own_outputs(path, manifests):
                    seen.add(path.parent)
                elif path.suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(path.resolve(), path)
                elif not path.name.startswith("."):
                    notes.append(f"{path}: not an image file (by its suffix {path.suffix or 'none'}), left out")
        elif item.is_file():
            found.setdefault(item.resolve(), item)
        else:
            notes.append(f"{item}: no such file or folder, left out")
    notes += [f"{folder}: earlier predictions (listed in its {MANIFEST}), left out" for folder in sorted(seen)]
    return list(found.values()), notes


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The id of each input: its file stem; inputs whose stems repeat keep their path relative to the folder
    they share (``s1/images/x.png``, ``s2/images/x.png`` → ``s1_images_x_png``, ``s2_images_x_png``), so no
    output overwrites another."""
    stems = Counter(p.stem for p in paths)
    repeated = [p.resolve() for p in paths if stems[p.stem] > 1]
    base = Path(os.path.commonpath([p.parent for p in repeated])) if repeated else None
    names, used = {}, set()
    for path in paths:
        if stems[path.stem] == 1:
            name = path.stem
        else:
            relative = path.resolve().relative_to(base)
            name = "_".join([*relative.parent.parts, relative.stem, relative.suffix.lstrip(".")])
        unique, k = name, 1
        while unique in used:  # a file of that very name exists too
            k += 1
            unique = f"{name}_{k}"
        names[path] = unique
        used.add(unique)
    return names


def check_output_folder(out_dir: str | Path, inputs: list[str | Path]) -> None:
    """Refuse an output folder that is an input folder or lies inside one (its predictions would mix with the
    images, and replace any of the same name).

    Raises:
        cli.BadValue: it is; the message says where to write instead.
    """
    out = Path(out_dir).resolve()
    for folder in (Path(p) for p in inputs if Path(p).is_dir()):
        inside = folder.resolve()
        if out == inside or out.is_relative_to(inside):
            where = "is the input folder" if out == inside else f"lies inside the input folder {folder}"
            raise cli.BadValue(f"{out_dir}: the output folder {where}, so the predictions would mix with (and could "
                               f"replace) your images; choose a folder outside it, e.g. "
                               f"{inside.parent / (inside.name + '_predictions')}.")


def check_overwrite(out_dir: str | Path, names: list[str], overwrite: bool = False) -> set[str]:
    """The files predict may write in ``out_dir`` for these ids; refuse before writing anything when one of them
    exists and predict did not write it.

    Returns:
        The names of the output files (with ``predictions.csv`` and the manifest).

    Raises:
        OutputClash: such files exist and ``overwrite`` is false (the message names some of them).
    """
    out_dir = Path(out_dir)
    planned = {TABLE} | {f"{name}{end}" for name in names for end in OUTPUTS}
    try:
        own = read_manifest(out_dir) if out_dir.is_dir() else set()
    except ValueError:
        if not overwrite:
            raise
        own = set()  # an unreadable manifest, and everything may be replaced: start a new one
    clash = sorted(f for f in planned - own if (out_dir / f).exists())
    if clash and not overwrite:
        shown = ", ".join(clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
        raise OutputClash(f"{out_dir}: {len(clash)} file(s) there were not written by predict and would be replaced "
                          f"({shown}); choose an empty output folder, or pass --overwrite if they may go.")
    return planned | {MANIFEST}


def write_manifest(out_dir: Path, files: set[str]) -> None:
    """Add ``files`` to the output folder's manifest (before they are written, so an interrupted run's files are
    still its own), via a temp file and a rename."""
    try:
        listed = sorted(read_manifest(out_dir) | set(files))
    except ValueError:  # unreadable, and check_overwrite was told to replace everything
        listed = sorted(files)
    data = {"written_by": "python -m helpers.evaluation.predict", "files": listed}
    paths.write_atomic(out_dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
