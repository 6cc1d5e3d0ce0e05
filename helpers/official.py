"""The official ISIC 2018 Task 1 zips: one table, and fetching the ones a protocol needs.

The seed protocol needs only the training zips; the official protocol also needs the
validation (100 images) and test (1,000 images) zips. Zips already complete in the download
folder, or in a Drive folder kept between Colab runtimes, are reused.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpers.download import notify, download

OFFICIAL_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2018"


@dataclass(frozen=True)
class OfficialFile:
    """One official ISIC 2018 Task 1 zip and what it should contain."""

    key: str  # e.g. "train_images"
    file_name: str  # the zip's name on the challenge bucket
    url: str  # the official download URL
    size: int | None  # bytes; None: the server's Content-Length is used instead
    folder: str  # the top folder inside the zip
    split: str  # "train", "val" or "test"
    count: int  # images (or masks) inside


# key, folder inside (= zip name without ".zip"), split, image count, size in bytes.
# Sizes are None: no byte size could be confirmed from a reliable source, so the server's
# Content-Length (or Content-Range total) is the expected size.
_TABLE = (
    ("train_images", "ISIC2018_Task1-2_Training_Input", "train", 2594, None),
    ("train_masks", "ISIC2018_Task1_Training_GroundTruth", "train", 2594, None),
    ("val_images", "ISIC2018_Task1-2_Validation_Input", "val", 100, None),
    ("val_masks", "ISIC2018_Task1_Validation_GroundTruth", "val", 100, None),
    ("test_images", "ISIC2018_Task1-2_Test_Input", "test", 1000, None),
    ("test_masks", "ISIC2018_Task1_Test_GroundTruth", "test", 1000, None),
)
OFFICIAL_FILES: dict[str, OfficialFile] = {
    key: OfficialFile(key, f"{folder}.zip", f"{OFFICIAL_BASE_URL}/{folder}.zip", size, folder,
                      split, count)
    for key, folder, split, count, size in _TABLE}


def _complete_zip(path: Path, size: int | None) -> bool:
    """Tells whether `path` is a readable zip (central directory intact) of the right size."""
    return path.is_file() and size in (None, path.stat().st_size) and zipfile.is_zipfile(path)


def official_files(splits=("train", "val", "test")) -> list[OfficialFile]:
    """Returns the table rows for `splits`; raises ValueError naming any unknown split."""
    known = {f.split for f in OFFICIAL_FILES.values()}
    if unknown := sorted(set(splits) - known):
        raise ValueError(f"Unknown split(s) {unknown}; choose from {sorted(known)}.")
    return [f for f in OFFICIAL_FILES.values() if f.split in splits]


def fetch_official(dest_dir: Path, splits=("train", "val", "test"), base_url: str | None = None,
                   drive_dir: Path | None = None, *, progress: bool = True) -> list[Path]:
    """Downloads the official Task 1 zips for `splits`, reusing complete zips already present.

    A complete zip in `dest_dir` or `drive_dir` is reused; others are downloaded into
    `drive_dir` if given (so a new Colab runtime finds them on Drive), else into `dest_dir`.

    Args:
        dest_dir: the local folder for the zips.
        splits: any of "train", "val", "test".
        base_url: replaces the official bucket URL (a mirror or a test server).
        drive_dir: a persistent folder (Google Drive) where zips are kept and reused.
        progress: show progress bars and messages.

    Returns:
        The paths of the zips, in table order.
    """
    folders = [Path(dest_dir)] + ([Path(drive_dir)] if drive_dir is not None else [])
    paths = []
    for entry in official_files(splits):
        found = [d / entry.file_name for d in folders
                 if _complete_zip(d / entry.file_name, entry.size)]
        if found:
            notify(f"{entry.file_name}: reusing {found[0]}", progress)
            paths.append(found[0])
            continue
        target = folders[-1] / entry.file_name
        if target.exists():
            notify(f"{target} is not a complete zip; downloading it again.", progress)
            target.unlink()
        url = f"{base_url.rstrip('/')}/{entry.file_name}" if base_url else entry.url
        paths.append(download(url, target, entry.size, progress=progress))
    return paths
