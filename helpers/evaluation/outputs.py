"""Output folders that keep what the user made: what ``predict`` and ``export`` may write there, and
how.

Each command lists the files it wrote in a manifest in its output folder (``predict_manifest.json``,
``export_manifest.json``). Before anything is written:

- an output path that is an existing file, not a folder, is refused (:func:`check_folder`);
- a file the command did not write, which an output would replace, stops it unless ``--overwrite``
  (:func:`check_clash`); names are compared without regard to case (they collide on macOS and
  Windows), and a link counts as a file, dangling or not.

Every output is written to a temporary file of its own and renamed into place
(:func:`helpers.paths.write_atomic`): a link in the output folder is replaced, never written
through, and an interrupted write leaves no half file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from helpers import cli, paths


class OutputClash(FileExistsError):
    """The output folder holds files the command did not write, which its outputs would replace."""


def check_folder(out_dir: str | Path, what: str = "OUTPUT") -> Path:
    """The output folder, refused when the path is an existing file
    (:func:`helpers.cli.check_out_folder`).

    Raises:
        cli.BadValue: names the path and says what to give instead.
    """
    return cli.check_out_folder(out_dir, what)


def read_manifest(folder: str | Path, name: str) -> set[str] | None:
    """The names listed in ``folder/name`` (None when there is no manifest).

    Raises:
        ValueError: the manifest is unreadable (the message names it and says what to do).
    """
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err}); delete it if every "
                         f"file in {folder} may be overwritten, or choose another output "
                         f"folder.") from None
    return set(map(str, files))


def write_manifest(folder: Path, name: str, files: Iterable[str], written_by: str) -> None:
    """Add ``files`` to the manifest ``folder/name`` (an unreadable one is started anew),
    atomically."""
    try:
        listed = read_manifest(folder, name) or set()
    except ValueError:  # unreadable, and the command was told to replace everything
        listed = set()
    data = {"written_by": written_by, "files": sorted(listed | set(files))}
    paths.write_atomic(folder / name, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def check_clash(out_dir: Path, planned: Iterable[str], own: set[str], command: str,
                overwrite: bool = False) -> None:
    """Refuse, before anything is written, outputs that would replace files ``command`` did not
    write.

    A name clashes when an entry of ``out_dir`` has it without regard to case (a link too, even a
    dangling one) and is not in ``own``.

    Raises:
        OutputClash: such files exist and ``overwrite`` is false (the message names some of them).
    """
    try:
        present = {entry.name.lower(): entry.name for entry in os.scandir(out_dir)}
    except (FileNotFoundError, NotADirectoryError):
        return
    clash = sorted({present[name.lower()] for name in planned if name.lower() in present} - own)
    if clash and not overwrite:
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        shown = ", ".join(clash[:3]) + more
        raise OutputClash(f"{out_dir}: {len(clash)} file(s) there were not written by {command} "
                          f"and would be replaced ({shown}); choose an empty output folder, or "
                          f"pass --overwrite if they may go.")

