"""The real data that comes with the kit: ISIC 2018 Task 1 at 128 px, in one archive.

``data/isic2018_task1_128.zip`` holds all 2,594 training pairs of the ISIC 2018 Task 1 challenge, centre-cropped
to a square and resized to 128 px, in the official folder layout (licence and citations in
``data/isic2018_task1_128.LICENSE.md``: CC BY-NC 4.0, non-commercial use only). ``DATA_SOURCE = "bundled"``
reads it through the same path as any zip (:func:`helpers.data.sources.get_source`), so it needs no download.

It serves every profile whose images are at most 128 px (``demo``, ``cpu``, ``class``). A larger image size
is refused (:func:`check_size`): the kit never upsamples a small copy silently.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from helpers import paths
from helpers.data.isic import DataError

ARCHIVE = "isic2018_task1_128.zip"
RESOLUTION = 128  # side of every image in the archive, in pixels
PAIRS = 2594
DATASET = "isic2018-task1-128"  # its name in prepared folders and run ids


def archive_path() -> Path:
    """Where the archive is: ``data/`` of the kit's repository (also when ``KIT_HOME`` is elsewhere)."""
    return paths.repo_root() / "data" / ARCHIVE


def _restore_hint() -> str:
    if paths.installed():  # a wheel holds the code only: the archive stays in the repository
        return (f"a kit installed with pip has no bundled data: clone the kit (git clone {paths.REPO_URL}) and run "
                f"there, or use DATA_SOURCE \"isic2018\" (the official download) or a folder of your own")
    return f"restore it with `git checkout -- data/{ARCHIVE}` in the kit's folder (or clone the kit again)"


def check_archive(path: Path | None = None) -> Path:
    """The archive, checked: present, a zip, every member's checksum right.

    Raises:
        DataError: one line naming the archive, what is wrong and how to restore it.
    """
    path = path or archive_path()
    if not path.is_file():
        raise DataError(f"{path}: the bundled data archive is missing; {_restore_hint()}.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise DataError(f"{path}: the bundled data archive is damaged ({err}); {_restore_hint()}.") from None
    if broken is not None:
        raise DataError(f"{path}: the bundled data archive is damaged ({broken} fails its checksum); "
                        f"{_restore_hint()}.")
    return path


def check_size(image_size: int, profile: str = "") -> None:
    """Refuse an image size the archive cannot serve without upsampling.

    Raises:
        DataError: names the sizes and what to use instead.
    """
    if int(image_size) <= RESOLUTION:
        return
    which = f"the {profile} profile trains" if profile else "this study trains"
    raise DataError(f"The bundled archive (data/{ARCHIVE}) holds {RESOLUTION}-px images, and {which} at "
                    f"{image_size} px: the images would be upsampled. Use DATA_SOURCE = \"isic2018\" (the "
                    f"official download) or a folder or zip of larger images, or a profile at "
                    f"{RESOLUTION} px or less (demo, cpu, class).")
