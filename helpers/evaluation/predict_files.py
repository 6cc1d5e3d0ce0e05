"""Which files ``predict`` reads and writes: the inputs, unique output names, and an output folder it never
lets harm what the user made.

- The output folder may not be an input folder or lie inside one (:func:`check_output_folder`).
- ``predict_manifest.json`` in the output folder lists the files predict wrote there (:func:`read_manifest`);
  a file of another name that an output would replace stops it before anything is written, unless asked
  (:func:`check_overwrite`). An output folder of an earlier version is recognised by its ``predictions.csv``.
- Files a manifest lists are never inputs (:func:`collect_inputs`); every file or folder left out
  (not an image, a folder that cannot be read, a linked folder, a dangling or looping link, a pipe)
  is named.
- Inputs whose names repeat, without regard to case, keep their relative paths in their outputs'
  names (:func:`output_names`).
- A second prediction into a folder adds its rows to ``predictions.csv`` (replacing those of the
  images it predicts again), one batch at a time (:func:`start_table`, :func:`add_rows`): after
  Ctrl-C the table lists the images whose outputs are complete, and the manifest every file written.
"""
from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from pathlib import Path

import pandas as pd

from helpers import cli, paths
from helpers.evaluation import outputs
from helpers.evaluation.outputs import OutputClash  # noqa: F401 (part of predict's API)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
COLUMNS = ["id", "file", "width", "height", "lesion_fraction", "mean_confidence", "ms"]  # of predictions.csv
MANIFEST = "predict_manifest.json"  # in the output folder: the files predict wrote there
TABLE = "predictions.csv"
OUTPUTS = ("_segmentation.png", "_overlay.jpg")  # after each input's id


def read_manifest(folder: str | Path) -> set[str]:
    """Names of the files predict wrote in ``folder`` (empty: none, or not a folder of predictions).

    An output folder of an earlier version, without a manifest, is recognised by its ``predictions.csv``: the
    files of the ids it lists count as predict's own.

    Raises:
        ValueError: the manifest is unreadable (the message names it and says what to do).
    """
    listed = outputs.read_manifest(folder, MANIFEST)
    return _legacy_outputs(Path(folder)) if listed is None else listed


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
    """Image files from files and folders (folders: their images, sorted); and notes naming each
    file or folder left out, and why.

    Files an earlier prediction wrote (listed in a ``predict_manifest.json``) are never inputs; a
    file given twice (itself, and in its folder) is read once. Linked folders inside a folder are
    not followed (give one as an input to include it); hidden files are counted in one note.
    """
    found, notes, seen, manifests, hidden = {}, [], set(), {}, []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in _files_in(item, notes):
                if _own_outputs(path, manifests):
                    seen.add(path.parent)
                elif (why := _not_a_file(path)) is not None:
                    notes.append(f"{path}: {why}")
                elif path.name.startswith("."):
                    hidden.append(path.name)
                elif path.suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(path.resolve(), path)
                else:
                    suffix = path.suffix or "none"
                    notes.append(f"{path}: not an image file (by its suffix {suffix})")
        elif (why := _not_a_file(item)) is None:
            found.setdefault(item.resolve(), item)
        else:
            notes.append(f"{item}: {why}")
    notes += [f"{folder}: earlier predictions (listed in its {MANIFEST})"
              for folder in sorted(seen)]
    if hidden:
        notes.append(f"{len(hidden)} hidden file(s) ({', '.join(sorted(set(hidden))[:3])}"
                     f"{', ...' if len(set(hidden)) > 3 else ''})")
    return list(found.values()), notes


def _files_in(folder: Path, notes: list[str]) -> list[Path]:
    """Every entry below ``folder`` that is not a folder, sorted; folders that cannot be read and
    linked folders (not followed) are added to ``notes``."""
    def unreadable(err: OSError) -> None:
        notes.append(f"{err.filename}: a folder that cannot be read ({err.strerror})")

    found = []
    for root, folders, files in os.walk(folder, onerror=unreadable):
        for name in folders:
            if (Path(root) / name).is_symlink():
                notes.append(f"{Path(root) / name}: a linked folder, not followed (give it as an "
                             f"input to include it)")
        found += [Path(root) / name for name in files]
    return sorted(found)


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read (None when it is a regular file, or a link to one)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if not os.path.lexists(path):
            return "no such file or folder"
        if path.is_symlink():
            return "a looping link" if err.errno == errno.ELOOP else \
                f"a dangling link (to {os.readlink(path)})"
        return f"cannot be read ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    return "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file (a device or socket)"


def left_out_line(notes: list[str], limit: int = 10) -> str:
    """The one line that names what was left out of the inputs (empty when nothing was)."""
    if not notes:
        return ""
    more = f"; and {len(notes) - limit} more" if len(notes) > limit else ""
    shown = "; ".join(notes[:limit]) + more
    return f"Left out {len(notes)} input(s): {shown}."


def output_names(paths: list[Path], taken: dict[str, str] | None = None) -> dict[Path, str]:
    """The id of each input: its file stem; inputs whose stems repeat (without regard to case) keep
    their path relative to the folder they share (``s1/images/x.png``, ``s2/images/x.png`` →
    ``s1_images_x_png``, ``s2_images_x_png``), so no output overwrites another, on any file system.

    Args:
        paths: the inputs.
        taken: ids of an earlier prediction in the output folder → the file each was predicted from;
            an id that differs from one of them only in case gets a number unless it is of the same
            file.
    """
    taken = {name.lower(): file for name, file in (taken or {}).items()}
    stems = Counter(p.stem.lower() for p in paths)
    repeated = [p.resolve() for p in paths if stems[p.stem.lower()] > 1]
    base = Path(os.path.commonpath([p.parent for p in repeated])) if repeated else None
    names, used = {}, set()
    for path in paths:
        if stems[path.stem.lower()] == 1:
            name = path.stem
        else:
            relative = path.resolve().relative_to(base)
            name = "_".join([*relative.parent.parts, relative.stem, relative.suffix.lstrip(".")])
        unique, k = name, 1
        while unique.lower() in used or not _same_file(taken.get(unique.lower()), path):
            k += 1
            unique = f"{name}_{k}"
        names[path] = unique
        used.add(unique.lower())
    return names


def _same_file(recorded: str | None, path: Path) -> bool:
    """True when an earlier prediction's id is free (None) or was made from ``path`` itself."""
    return recorded is None or Path(recorded).resolve() == path.resolve()


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
    exists (a link too; names compared without regard to case) and predict did not write it.

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
    outputs.check_clash(out_dir, planned | {MANIFEST}, own | {MANIFEST}, "predict", overwrite)
    return planned | {MANIFEST}


def write_manifest(out_dir: Path, files: set[str]) -> None:
    """Add ``files`` to the output folder's manifest (before they are written, so an interrupted run's files are
    still its own), via a temp file and a rename."""
    outputs.write_manifest(out_dir, MANIFEST, files, "python -m helpers.evaluation.predict")


def earlier_ids(out_dir: str | Path) -> dict[str, str]:
    """The ids in an earlier ``predictions.csv`` of predict's in ``out_dir`` → the file each was
    made from."""
    table = _earlier_table(Path(out_dir))
    return dict(zip(table["id"], table["file"]))


def _earlier_table(out_dir: Path) -> pd.DataFrame:
    """predict's own ``predictions.csv`` in ``out_dir`` (empty when there is none, or it is not
    predict's)."""
    try:
        own = TABLE in read_manifest(out_dir)
        table = pd.read_csv(out_dir / TABLE, dtype={"id": str, "file": str}, keep_default_na=False)
    except (OSError, ValueError):
        return pd.DataFrame(columns=COLUMNS)
    return table if own and list(table.columns) == COLUMNS else pd.DataFrame(columns=COLUMNS)


def start_table(out_dir: Path, names: list[str]) -> int:
    """Write ``predictions.csv`` with the earlier rows of predict's own table there, less those of
    ``names`` (predicted again now); the rows of this prediction are added batch by batch
    (:func:`add_rows`).

    Returns:
        How many earlier rows were kept.
    """
    earlier = _earlier_table(out_dir)
    kept = earlier[~earlier["id"].str.lower().isin({n.lower() for n in names})]
    paths.write_atomic(out_dir / TABLE, lambda tmp: kept.to_csv(tmp, index=False))
    return len(kept)


def add_rows(out_dir: Path, rows: list[dict]) -> None:
    """Append rows to ``predictions.csv`` (never through a link: the file is predict's own, made by
    :func:`start_table`)."""
    text = pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False, header=False)
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    handle = os.open(out_dir / TABLE, flags)
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as table:
        table.write(text)
