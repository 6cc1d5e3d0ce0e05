"""Resumable downloads of the official ISIC 2018 Task 1 zips.

`download` streams one URL into ``<dest>.part``. If that is interrupted, it resumes with an HTTP
``Range`` request and retries transient failures with exponential backoff. It checks the size
and renames the file into place only when it is complete. `OFFICIAL_FILES` is the one table of
the official Task 1 zips, and `fetch_official` downloads the zips for the splits you ask for.
Importing this module has no side effects.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_OFFLINE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL}
_OFFLINE_HINT = ("Could not reach {url} ({err}). This machine seems to be offline, or the host "
                 "is unreachable. Download the zips on a machine with internet, copy them here "
                 "and point DATA_SOURCE at the folder or the zip files, or use the synthetic "
                 "sample instead.")


class DownloadError(RuntimeError):
    """A download failed. The message names the URL or file and says what to do."""


class OfflineError(DownloadError):
    """The host could not be reached at all (DNS failure, refused or unreachable network)."""


class SizeMismatchError(DownloadError):
    """The file (or the server's copy) does not have the expected number of bytes."""


class _Retry(Exception):
    """A transient failure: try again and resume from what arrived."""


class _Offline(_Retry):
    """A failure suggesting there is no network: one quick retry at most."""


def notify(message: str, progress: bool) -> None:
    """Log a message, and show it under the progress bars when they are on."""
    logger.info(message)
    if progress:
        tqdm.write(message)


def _looks_offline(err: BaseException) -> bool:
    reason = getattr(err, "reason", err)
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return True
    return isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS


def _size_message(name: str, actual: int, expected: int, action: str) -> str:
    return (f"{name}: got {actual:,} bytes but expected {expected:,}. {action} If the file on "
            "the server has changed, run again with expected_size=None; otherwise check the "
            "URL or download the file by hand.")


def _check_total(url: str, part: Path, total: int | None, expected: int | None) -> None:
    if total is not None and expected is not None and total != expected:
        raise SizeMismatchError(_size_message(
            f"{part.name[:-5]} from {url}", total, expected, "Nothing was renamed into place."))


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parses ``bytes a-b/N`` or ``bytes */N`` into (a, N); unknown parts are None."""
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", header or "")
    start, total = match.groups() if match else (None, None)
    return (int(start) if start else None), (int(total) if total not in (None, "*") else None)


def _http_error(err: urllib.error.HTTPError, url: str, part: Path, offset: int,
                expected: int | None) -> int:
    """Handles an HTTP error status. Returns the total size when the part is already complete."""
    err.close()
    if err.code == 416:
        _, total = _content_range(err.headers.get("Content-Range"))
        _check_total(url, part, total, expected)
        if total is not None and offset == total:
            return total
        part.unlink(missing_ok=True)
        raise _Retry(f"{url} refused to resume at byte {offset:,}; starting over")
    if err.code >= 500 or err.code in (408, 429):
        raise _Retry(f"{url} answered HTTP {err.code} {err.reason}")
    raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}: the file is missing or "
                        "not public there. Check the URL, or download the zip by hand and point "
                        "DATA_SOURCE at it.")


def _response_plan(response, url: str, offset: int) -> tuple[int, int | None, int | None]:
    """Returns (offset to write at, total file size, body length) for a 2xx response."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None else None
    if response.status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            raise _Retry(f"{url} resumed at byte {start} instead of {offset:,}")
        return offset, total, length
    if offset:
        logger.info("%s ignored the resume request; downloading from the start", url)
    return 0, length, length


def _stream(response, url: str, part: Path, offset: int, total: int | None,
            length: int | None, chunk_size: int, progress: bool) -> None:
    received = 0
    with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[:-5], disable=not progress) as bar:
        try:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, HTTPException) as err:
            raise _Retry(f"connection to {url} broke after {received:,} bytes: {err}") from err
    if length is not None and received < length:
        raise _Retry(f"connection to {url} closed after {received:,} of {length:,} bytes")


def _attempt(url: str, part: Path, expected: int | None, timeout: float, chunk_size: int,
             progress: bool) -> int | None:
    """Downloads (or resumes) into `part` once. Returns the total size if it is known."""
    offset = part.stat().st_size if part.exists() else 0
    if expected is not None and offset >= expected > 0:
        if offset == expected:
            return expected
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        return _http_error(err, url, part, offset, expected)
    except (OSError, HTTPException) as err:
        raise (_Offline if _looks_offline(err) else _Retry)(getattr(err, "reason", err)) from err
    with response:
        offset, total, length = _response_plan(response, url, offset)
        _check_total(url, part, total, expected)
        _stream(response, url, part, offset, total, length, chunk_size, progress)
    return total


def _finish(part: Path, dest: Path, size: int | None) -> None:
    actual = part.stat().st_size
    if size is not None and actual > size:
        part.unlink()
        raise SizeMismatchError(_size_message(
            str(dest), actual, size, f"The too-large {part.name} was deleted."))
    if size is not None and actual < size:
        raise _Retry(f"{part.name} has {actual:,} of {size:,} bytes")
    os.replace(part, dest)


def download(url: str, dest: Path, expected_size: int | None = None, *, retries: int = 5,
             backoff: float = 1.0, timeout: float = 30, chunk_size: int = 1 << 20,
             progress: bool = True) -> Path:
    """Downloads `url` to `dest` and resumes an earlier partial download.

    Args:
        url: what to download.
        dest: the final file path; data first goes to ``dest`` + ``.part``.
        expected_size: the size in bytes; None trusts the server's Content-Length.
        retries: consecutive failures without progress before giving up.
        backoff: seconds before the first retry; doubles with each failure.
        timeout: socket timeout in seconds.
        chunk_size: bytes read per step.
        progress: show a tqdm bar and say when a file is skipped.

    Returns:
        `dest`, once it is complete.

    Raises:
        OfflineError: the host cannot be reached (after one quick retry).
        SizeMismatchError: the server's or the downloaded size differs from `expected_size`.
        DownloadError: a 4xx status, or too many retries (the part is kept so a rerun resumes).
    """
    dest = Path(dest)
    if dest.is_file() and expected_size in (None, dest.stat().st_size):
        notify(f"{dest.name}: already downloaded ({dest.stat().st_size:,} bytes), skipped.", progress)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    failures = offline_failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            total = _attempt(url, part, expected_size, timeout, chunk_size, progress)
            _finish(part, dest, expected_size if expected_size is not None else total)
            return dest
        except _Retry as err:
            if isinstance(err, _Offline):
                offline_failures += 1
                if offline_failures > 1:
                    raise OfflineError(_OFFLINE_HINT.format(url=url, err=err)) from err
                time.sleep(min(backoff, 0.5))
                continue
            grew = part.exists() and part.stat().st_size > before
            failures = 0 if grew else failures + 1
            if failures > retries:
                raise DownloadError(f"Gave up on {url} after {retries} retries ({err}). The "
                                    f"partial file {part} is kept: run again to resume.") from err
            logger.info("%s; retrying", err)
            time.sleep(backoff * 2 ** max(failures - 1, 0))

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
