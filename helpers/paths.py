"""Where data, prepared caches and results live (the kit's home, local or on Drive); Colab
detection.

Everything lives under one **home** folder, ``<home>/data`` and ``<home>/results``, so notebooks run
the same from ``notebooks/``, from the repository root under papermill, and on Colab after a clone:

- ``KIT_HOME``: the kit's home (default: the repository of a clone; a kit installed with
  ``pip install .``, whose code sits in ``site-packages``, takes the working directory instead, and
  never writes beside its code; on Colab :mod:`helpers.runtime` sets a folder on Google Drive, so
  every notebook's runtime sees what the others made);
- ``KIT_DATA_DIR`` / ``KIT_RESULTS_DIR``: put data or results somewhere else than ``<home>/...``;
- ``KIT_LOCAL_DIR``: a local cache for a home on Drive (set by :mod:`helpers.runtime` on Colab): raw
  files extracted from zips, local copies of the prepared arrays (read every epoch) and the previous
  ``last.pt`` of a run live there, on the runtime's fast disk, not on Drive;
- ``KIT_CONTENT_ROOT``: Colab's ``/content`` (the tests point it at a temporary folder).

The repository's public address lives here once (:data:`REPO_URL`); the Colab badges and
the clone cell of the notebooks are checked against it by the tests.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

REPO_URL = "https://github.com/skin-lesion-kit/skin-lesion-kit"
HOME_ENV = "KIT_HOME"
DATA_ENV = "KIT_DATA_DIR"
RESULTS_ENV = "KIT_RESULTS_DIR"
LOCAL_ENV = "KIT_LOCAL_DIR"
CONTENT_ENV = "KIT_CONTENT_ROOT"


def repo_root() -> Path:
    """The repository root (the folder that holds ``helpers/``)."""
    return Path(__file__).resolve().parents[1]


def installed(root: Path | None = None) -> bool:
    """Whether the kit's code is an installed copy (a wheel in ``site-packages``) rather than a
    clone or an editable install: then there is no repository to hold ``data/`` and ``results/``."""
    root = root or repo_root()
    return (not (root / "pyproject.toml").is_file()
            or any(part in ("site-packages", "dist-packages") for part in root.parts))


def home_dir() -> Path:
    """The kit's home: ``$KIT_HOME``, else the repository root of a clone, else (an installed kit)
    the working directory."""
    default = Path.cwd() if installed() else repo_root()
    return _folder(HOME_ENV, os.environ.get(HOME_ENV) or default)


def data_dir() -> Path:
    """Root for raw datasets and prepared caches (``$KIT_DATA_DIR`` or ``<home>/data``)."""
    return _folder(DATA_ENV, os.environ.get(DATA_ENV) or home_dir() / "data")


def results_dir() -> Path:
    """Root for results (``$KIT_RESULTS_DIR`` or ``<home>/results``)."""
    return _folder(RESULTS_ENV, os.environ.get(RESULTS_ENV) or home_dir() / "results")


def _folder(variable: str, value: str | os.PathLike) -> Path:
    """A home folder, resolved; refused when it is an existing file.

    Raises:
        NotADirectoryError: names the variable, the file, and what to do.
    """
    folder = Path(value).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        given = f"${variable}" if os.environ.get(variable) else f"the folder (from ${HOME_ENV})"
        raise NotADirectoryError(f"{given} is {folder}, which is a file, not a folder; set "
                                 f"{variable} to a folder (created if needed), or unset it.")
    return folder


def local_dir() -> Path | None:
    """The runtime-local cache of a home on Drive (``$KIT_LOCAL_DIR``); None when the home is
    local."""
    value = os.environ.get(LOCAL_ENV)
    return Path(value).expanduser().resolve() if value else None


def mirror(path: str | os.PathLike) -> Path | None:
    """Where the local cache keeps its copy of ``path`` (a file or folder under the data or results
    home).

    ``<local>/data/...`` or ``<local>/results/...``; None without a local cache or for a path
    outside both homes.
    """
    local, path = local_dir(), Path(path).resolve()
    if local is None:
        return None
    for name, root in (("data", data_dir()), ("results", results_dir())):
        if path.is_relative_to(root):
            return local / name / path.relative_to(root)
    return None


def raw_dir(name: str) -> Path:
    """Folder for one raw dataset in the official ISIC layout, e.g. ``data/raw/synthetic``.

    With a home on Drive it is on the local cache: thousands of small files are slow on Drive, and
    the prepared arrays (which are on Drive) are all later notebooks need.
    """
    local = local_dir()
    return (local / "data" if local else data_dir()) / "raw" / name


def downloads_dir() -> Path:
    """Where the official zips are downloaded: ``data/downloads``; with a home on Drive, on the
    local cache (about 11 GB that only notebook 01 reads once: the prepared arrays on Drive are all
    later runtimes need). Give ``DATA_DIR`` a folder on Drive to keep the zips there instead."""
    local = local_dir()
    return (local / "data" if local else data_dir()) / "downloads"


def free_bytes(path: str | os.PathLike) -> int:
    """Free space, in bytes, of the file system that holds ``path`` (or its nearest existing
    parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human_bytes(count: float) -> str:
    """``1536`` → ``'1.5 kB'``; decimal units (kB, MB, GB) as Drive reports its space."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def prepared_root() -> Path:
    """Folder that holds prepared (resized, cached) datasets."""
    return data_dir() / "prepared"


def write_atomic(path: Path, write: Callable[[Path], object], *, durable: bool = False,
                 previous: Path | None = None) -> Path:
    """Write a file via a temporary sibling and a rename, so a killed process never leaves half a
    file.

    The kit's one atomic write: checkpoints, extracted zip entries, records and tables all go
    through it. The temporary name is this process's own (pid and a random part): two processes
    writing the same file never share, or remove, each other's temporary file; the last rename wins.

    Args:
        path: the final file.
        write: called with the temporary path (same suffix as ``path``), writes the content there.
        durable: fsync the file before the rename and its folder after it, so that the new content
            survives a crash of the machine too (checkpoints).
        previous: move the file already at ``path`` there first (a checkpoint's previous copy).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        if durable:
            fsync(tmp)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync(path.parent)  # the rename itself
    return path


def fsync(path: Path) -> None:
    """Flush a file's or a folder's content to the disk (where the OS and file system allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not possible on every OS / file system (a folder on some)
        pass
    finally:
        os.close(fd)


def portable(path: str | os.PathLike, home: str | os.PathLike) -> str:
    """How a run folder records ``path``: relative to ``home`` when inside it (POSIX form), else
    absolute."""
    path, home = Path(path).resolve(), Path(home).resolve()
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)


def locate(recorded: str, home: str | os.PathLike,
           moved_to: str | os.PathLike | None = None) -> Path | None:
    """The folder a recorded path names now: relative ones under ``home``; an absolute one as it is
    if it exists, else (written on another machine) ``moved_to / <its name>`` if that exists; else
    None."""
    path = Path(recorded)
    if not path.is_absolute():
        return Path(home) / path
    if path.exists():
        return path
    moved = Path(moved_to) / path.name if moved_to else None
    return moved if moved and moved.exists() else None


def in_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports ``google.colab`` at start)."""
    return "google.colab" in sys.modules


def content_root() -> Path:
    """Colab's working folder, ``/content`` (``$KIT_CONTENT_ROOT`` in the tests' emulated Colab)."""
    return Path(os.environ.get(CONTENT_ENV) or "/content")


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = "main") -> str:
    """The address that opens ``notebooks/<notebook>`` from GitHub in Colab."""
    slug = repo_url.removeprefix("https://github.com/").rstrip("/")
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook}"


def mount_drive() -> Path:
    """Mount Google Drive at ``/content/drive`` (once per runtime; again if the mount died) and
    return your files' folder, ``MyDrive``.

    Raises:
        RuntimeError: not running on Colab (there is no Drive to mount).
    """
    if not in_colab():
        raise RuntimeError("Google Drive can only be mounted inside Colab; elsewhere set "
                           "MOUNT_DRIVE = False and KIT_HOME to an ordinary folder (empty: the "
                           "repository).")
    from google.colab import drive  # type: ignore[import-not-found]  # optional: only on Colab

    mount_point = content_root() / "drive"
    try:
        os.listdir(mount_point / "MyDrive")
    except FileNotFoundError:
        drive.mount(str(mount_point))
    except OSError:  # mounted once, but the mount died (e.g. "Transport endpoint is not connected")
        drive.mount(str(mount_point), force_remount=True)
    return mount_point / "MyDrive"


@contextlib.contextmanager
def scoped_env(**values):
    """Environment variables set to ``values`` (as strings) for the block, then restored (e.g. a
    scratch results folder for a benchmark: ``with scoped_env(KIT_RESULTS_DIR=tmp): ...``)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
