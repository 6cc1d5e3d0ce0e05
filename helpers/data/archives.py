"""Safe and resumable zip extraction.

`safe_extract` unpacks a dataset zip. It refuses zip-slip entries (absolute paths, drive
letters, ``..``) before writing anything, turns Windows backslash paths into folders, skips
junk entries (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, licence files), writes each file
atomically (temp file, then rename) and leaves alone files that are already in place with the
right size, so a second call writes nothing. Importing this module has no side effects.
"""
from __future__ import annotations

import logging
import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from helpers import paths

logger = logging.getLogger(__name__)

JUNK_FOLDERS = frozenset({"__MACOSX"})
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ATTRIBUTION.txt",
                        "LICENSE.txt"})
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class ArchiveError(RuntimeError):
    """A zip cannot be extracted. The message names the zip and says what to do."""


class UnsafeArchiveError(ArchiveError):
    """A zip holds entries that would be written outside the target folder."""


def normalise_name(name: str) -> str:
    """Returns a zip entry name with Windows backslashes turned into ``/``."""
    return name.replace("\\", "/")


def is_unsafe(name: str) -> bool:
    """Tells whether an entry name is absolute, has a drive letter or a ``..`` component."""
    name = normalise_name(name)
    return name.startswith("/") or bool(_DRIVE_LETTER.match(name)) or ".." in name.split("/")


def is_junk(parts: tuple[str, ...]) -> bool:
    """Tells whether an entry (split into path parts) is OS or licence clutter to skip."""
    name = parts[-1]
    return (any(p in JUNK_FOLDERS for p in parts) or name in JUNK_NAMES
            or name.startswith("._"))


def _relative_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """Returns where an entry goes below the target, or None for folders and junk."""
    name = normalise_name(info.filename)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if name.endswith("/") or not parts or is_junk(parts):
        return None
    return PurePosixPath(*parts)


def _check_safe(zf: zipfile.ZipFile, zip_path: Path, dest_dir: Path) -> None:
    root = dest_dir.resolve()
    bad = [info.filename for info in zf.infolist() if is_unsafe(info.filename)
           or not (root / normalise_name(info.filename).lstrip("/")).resolve().is_relative_to(root)]
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise UnsafeArchiveError(
            f"{zip_path} holds {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} that would be "
            f"written outside {dest_dir}: {shown}. Nothing was extracted. Do not use this zip; "
            "download the official file again.")


def _plan(zf: zipfile.ZipFile, dest_dir: Path) -> tuple[list, int]:
    """Returns the (entry, target) pairs still to extract and how many files are in place."""
    todo, in_place = [], 0
    for info in zf.infolist():
        rel = _relative_path(info)
        if rel is None:
            continue
        target = dest_dir.joinpath(*rel.parts)
        if target.is_file() and target.stat().st_size == info.file_size:
            in_place += 1
        else:
            todo.append((info, target))
    return todo, in_place


def _check_space(zip_path: Path, dest_dir: Path, todo: list) -> None:
    needed = sum(info.file_size for info, _ in todo)
    free = shutil.disk_usage(dest_dir).free
    if needed > free:
        raise ArchiveError(f"Extracting {zip_path} needs {needed / 1e9:.1f} GB but only "
                           f"{free / 1e9:.1f} GB is free in {dest_dir}. Free some space or "
                           "extract somewhere else.")


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Writes one entry to `target` atomically (:func:`helpers.paths.write_atomic`)."""
    def copy(tmp: Path) -> None:
        with zf.open(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)  # reading to the end checks the CRC

    paths.write_atomic(target, copy)


def _check_not_encrypted(zf: zipfile.ZipFile, zip_path: Path) -> None:
    """Refuse a password-protected zip before anything is extracted, naming it."""
    locked = [info.filename for info in zf.infolist() if info.flag_bits & 0x1]
    if locked:
        shown = ", ".join(locked[:3]) + (f" and {len(locked) - 3} more" if len(locked) > 3 else "")
        raise ArchiveError(f"{zip_path} is encrypted (password-protected: {shown}), so the kit cannot extract it. "
                           f"Extract it yourself with its password and give the folder instead (DATA_SOURCE "
                           f"'folder', or --data-dir FOLDER).")


def _corrupt(zip_path: Path, err: BaseException) -> ArchiveError:
    return ArchiveError(f"{zip_path} is incomplete or corrupt ({err}). Delete it and download "
                        "it again (an interrupted copy or download leaves such a file).")


def safe_extract(zip_path: Path, dest_dir: Path, *, progress: bool = True) -> list[Path]:
    """Extracts a zip into `dest_dir` safely, writing only what is missing or the wrong size.

    Paths inside the zip are kept, including a nested top folder such as
    ``data/ISIC2018_Task1-2_Training_Input/...``.

    Args:
        zip_path: the zip file.
        dest_dir: the folder to extract into (created if needed).
        progress: show a tqdm bar over the entries.

    Returns:
        The paths written by this call; empty when everything was already in place.

    Raises:
        FileNotFoundError: `zip_path` does not exist.
        UnsafeArchiveError: an entry would land outside `dest_dir` (nothing is written).
        ArchiveError: the zip is truncated or corrupt, encrypted, or the disk is too full.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} does not exist; download it first or fix the path.")
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _check_safe(zf, zip_path, dest_dir)
            _check_not_encrypted(zf, zip_path)
            dest_dir.mkdir(parents=True, exist_ok=True)
            todo, in_place = _plan(zf, dest_dir)
            _check_space(zip_path, dest_dir, todo)
            for info, target in tqdm(todo, desc=zip_path.name, unit="file",
                                     disable=not progress or not todo):
                _extract_one(zf, info, target)
                written.append(target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise _corrupt(zip_path, err) from err
    logger.info("%s: extracted %d file(s), %d already in place", zip_path.name, len(written),
                in_place)
    return written
