"""Where data, prepared caches and results live; Colab detection.

Everything is relative to the repository root unless an environment variable says
otherwise, so notebooks run the same from ``notebooks/``, from the repository root under
papermill, and on Colab after a clone:

- ``KIT_DATA_DIR``: raw datasets and prepared caches (default ``<repo>/data``);
- ``KIT_RESULTS_DIR``: run folders, tables, figures, executed notebooks (default ``<repo>/results``).

The repository's public address lives here once (:data:`REPO_URL`); the Colab badges and
the clone cell of the notebooks are checked against it by the tests.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

REPO_URL = "https://github.com/skin-lesion-kit/skin-lesion-kit"
DATA_ENV = "KIT_DATA_DIR"
RESULTS_ENV = "KIT_RESULTS_DIR"


def repo_root() -> Path:
    """The repository root (the folder that holds ``helpers/``)."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Root for raw datasets and prepared caches (``$KIT_DATA_DIR`` or ``<repo>/data``)."""
    return Path(os.environ.get(DATA_ENV) or repo_root() / "data").expanduser().resolve()


def results_dir() -> Path:
    """Root for results (``$KIT_RESULTS_DIR`` or ``<repo>/results``)."""
    return Path(os.environ.get(RESULTS_ENV) or repo_root() / "results").expanduser().resolve()


def raw_dir(name: str) -> Path:
    """Folder for one raw dataset in the official ISIC layout, e.g. ``data/raw/synthetic``."""
    return data_dir() / "raw" / name


def prepared_root() -> Path:
    """Folder that holds prepared (resized, cached) datasets."""
    return data_dir() / "prepared"


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Write a file via a temporary sibling and a rename, so a killed process never leaves half a file.

    Args:
        path: the final file.
        write: called with the temporary path (same suffix as ``path``), writes the content there.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def portable(path: str | os.PathLike, home: str | os.PathLike) -> str:
    """How a run folder records ``path``: relative to ``home`` when inside it (POSIX form), else absolute."""
    path, home = Path(path).resolve(), Path(home).resolve()
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)


def locate(recorded: str, home: str | os.PathLike, moved_to: str | os.PathLike | None = None) -> Path | None:
    """The folder a recorded path names now: relative ones under ``home``; an absolute one as it is if it
    exists, else (written on another machine) ``moved_to / <its name>`` if that exists; else None."""
    path = Path(recorded)
    if not path.is_absolute():
        return Path(home) / path
    if path.exists():
        return path
    moved = Path(moved_to) / path.name if moved_to else None
    return moved if moved and moved.exists() else None


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = "main") -> str:
    """The address that opens ``notebooks/<notebook>`` from GitHub in Colab."""
    slug = repo_url.removeprefix("https://github.com/").rstrip("/")
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook}"


def mount_drive(mount_point: str = "/content/drive") -> Path:
    """Mount Google Drive on Colab and return the folder of your files (``MyDrive``).

    Raises:
        RuntimeError: not running on Colab (there is no Drive to mount).
    """
    if not in_colab():
        raise RuntimeError("Google Drive can only be mounted inside Colab; elsewhere set DATA_DIR (and "
                           "checkpoint folders) to ordinary local paths.")
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mount_point)
    return Path(mount_point) / "MyDrive"
