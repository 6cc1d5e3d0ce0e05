"""Turn notebook 01's ``DATA_SOURCE`` into a dataset folder, then prepare it.

``DATA_SOURCE`` is one of:

- ``"bundled"`` (the default of the ``demo``, ``cpu`` and ``class`` profiles, offline): the 2,594
  real ISIC 2018 Task 1 training pairs at 128 px that come with the kit
  (:mod:`helpers.data.bundled`), read as a zip;
- ``"synthetic"`` (the ``smoke`` profile's, offline): the procedural sample of
  :mod:`helpers.data.synthetic`, drawn blobs for tests and for notebook 01's lesson on broken files;
- ``"folder"``: ``DATA_DIR`` is a dataset folder in a layout of :mod:`helpers.data.layouts`: the
  official ISIC layout (an unpacked download, your own copy), PH2 as distributed, or images and
  masks in plain folders (``images/`` and ``masks/``, or side by side);
- ``"zip"``: ``DATA_DIR`` is a zip file, or a folder of zip files (e.g. on Google Drive),
  extracted safely into ``data/raw/<name>``;
- ``"isic2018"`` (the ``t4`` profile's): download the official challenge zips (resumable) into
  ``data/downloads`` (on Colab: the runtime's disk), or ``DATA_DIR`` when given (e.g. a Drive folder
  kept between runtimes), then extract.

An empty ``DATA_SOURCE`` means the profile's (:func:`helpers.profiles.default_data_source`). A
profile with ``data_subset`` draws that many pairs of a real source at random (seeded), e.g. the
demo's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import paths
from helpers.data import bundled, locks
from helpers.data.archives import safe_extract
from helpers.data.download import fetch_official
from helpers.data.isic import DataError
from helpers.data.prep import (
    STAMP,
    Prepared,
    is_prepared,
    load_prepared,
    prepare,
    prepared_name,
    settings,
    source_stamp,
    stale_source,
    write_stamp,
)
from helpers.data.synthetic import generate_sample
from helpers.profiles import RunConfig, default_data_source

SOURCES = ("bundled", "synthetic", "folder", "zip", "isic2018")
PROTOCOLS = ("seed", "official", "external")
BOTH = ("seed", "official")  # what PROTOCOL="both" prepares


def protocol_list(protocol: str) -> list[str]:
    """``"seed"``, ``"official"``, ``"external"`` or ``"both"`` (seed and official) as the list of
    protocols to prepare."""
    chosen = list(BOTH) if protocol == "both" else [protocol]
    if not set(chosen) <= set(PROTOCOLS):
        raise DataError(f"PROTOCOL={protocol!r} is not one of {PROTOCOLS + ('both',)}.")
    return chosen


def dataset_name(data_source: str, data_dir: str | None, profile: RunConfig,
                 sample_seed: int = 0) -> str:
    """Short name of a source, used in cache and result folder names (``-n300``: a subset of 300
    pairs)."""
    name = _source_name(data_source, data_dir, profile, sample_seed)
    # None: no profile (an external test set, taken whole)
    subset = getattr(profile, "data_subset", None)
    return f"{name}-n{subset}" if data_source != "synthetic" and subset is not None else name


def _source_name(data_source: str, data_dir: str | None, profile: RunConfig,
                 sample_seed: int = 0) -> str:
    """The name of the whole source (its raw folder's name)."""
    if data_source == "synthetic":
        return f"synthetic-{profile.synthetic_count}-s{sample_seed}"
    if data_source in ("isic2018", "bundled"):
        return "isic2018" if data_source == "isic2018" else bundled.DATASET
    stem = Path(str(data_dir)).name.removesuffix(".zip") or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem)


def chosen_source(data_source: str | None, profile: RunConfig) -> str:
    """``DATA_SOURCE`` as given, or the profile's when empty; checked.

    Raises:
        DataError: an unknown source, or the bundled archive asked for an image size above its own.
    """
    data_source = data_source or default_data_source(profile.name)
    if data_source not in SOURCES:
        raise DataError(f"DATA_SOURCE={data_source!r} is not one of {SOURCES}.")
    if data_source == "bundled":
        bundled.check_size(profile.image_size, profile.name)
    return data_source


def extract_zips(given: Path, dest: Path, setting: str = "DATA_SOURCE") -> Path:
    """Safely extract one zip, or every zip in a folder, into ``dest``; returns ``dest``.

    Args:
        given: a zip file, or a folder of zip files.
        dest: where their files go.
        setting: the setting that chose the zip source (``DATA_SOURCE``, ``EXTERNAL_SOURCE``); its
            folder setting is named alike (``DATA_DIR``, ``EXTERNAL_DIR``), for the error message.

    Raises:
        DataError: ``given`` is a folder without zip files.
    """
    zips = [given] if given.is_file() else sorted(given.glob("*.zip"))
    if not zips:
        folder = setting.replace("_SOURCE", "_DIR")
        raise DataError(f"{given}: no .zip files here; with {setting}='zip', {folder} must be a "
                        f"zip file or a folder of zip files.")
    for zip_path in zips:
        safe_extract(zip_path, dest)
    return dest


def _existing(data_dir: str | None) -> Path | None:
    """``DATA_DIR`` as an absolute path: as given, else relative to the repository root (papermill
    runs notebooks from ``notebooks/``, so a path typed at the repository root would not be found);
    None if absent."""
    if not data_dir:
        return None
    path = Path(data_dir).expanduser()
    for candidate in (path, paths.repo_root() / path):
        if candidate.exists():
            return candidate.resolve()
    return None


def get_source(data_source: str, data_dir: str | None, profile: RunConfig, sample_seed: int = 0,
               splits: tuple[str, ...] = ("train",), mirror: str | None = None) -> Path:
    """Make the data available locally and return its root folder (any layout of
    :mod:`helpers.data.layouts`).

    Args:
        data_source: one of :data:`SOURCES` (empty: the profile's).
        data_dir: folder or zip for ``folder``/``zip``; optional download folder for ``isic2018``.
        profile: gives the sample size for ``synthetic``.
        sample_seed: seed of the synthetic sample.
        splits: official splits to download for ``isic2018`` (``train``, ``val``, ``test``).
        mirror: base URL that replaces the official bucket for ``isic2018`` (a mirror).

    Raises:
        DataError: unknown source, or a path that does not exist, with what to do.
    """
    data_source = chosen_source(data_source, profile)
    name = _source_name(data_source, data_dir, profile, sample_seed)
    if data_source == "synthetic":
        return generate_sample(paths.raw_dir(name), profile.synthetic_count, sample_seed)
    if data_source == "bundled":  # the same path as any zip, from the archive in the kit's data/
        return extract_zips(bundled.check_archive(), paths.raw_dir(name))
    if data_source == "isic2018":
        download_dir = Path(data_dir) if data_dir else paths.downloads_dir()
        for zip_path in fetch_official(download_dir, splits=splits, base_url=mirror or None):
            safe_extract(zip_path, paths.raw_dir(name))
        return paths.raw_dir(name)
    found = _existing(data_dir)
    if found is None:
        raise DataError(f"DATA_DIR={data_dir!r} does not exist (a relative path is read from the "
                        f"current folder, then from the repository root); with "
                        f"DATA_SOURCE={data_source!r} set DATA_DIR to the folder (or zip) that "
                        f"holds the data (the ISIC 2018 Task 1 folders, a PH2 copy, or images/ and "
                        f"masks/ folders).")
    data_dir = found
    if data_source == "zip":
        return extract_zips(data_dir, paths.raw_dir(name))
    return data_dir


def expected_source(data_source: str, data_dir: str | None, profile: RunConfig,
                    sample_seed: int = 0) -> Path | None:
    """The folder :func:`get_source` would return, without fetching anything (None: a folder that is
    not there)."""
    data_source = chosen_source(data_source, profile)
    if data_source == "folder":
        return _existing(data_dir)
    return paths.raw_dir(_source_name(data_source, data_dir, profile, sample_seed))


def _given(data_source: str, data_dir: str | None) -> Path | None:
    """The file or folder whose contents a preparation is stamped with (None: the synthetic sample,
    a download)."""
    if data_source == "bundled":
        return bundled.archive_path()
    return _existing(data_dir) if data_source in ("folder", "zip") else None


def ensure_prepared(config: RunConfig, data_source: str | None = None, data_dir: str | None = None,
                    protocol: str = "seed", on_bad_file: str = "raise", sample_seed: int = 0,
                    mirror: str | None = None, *, layout: str = "auto",
                    mask_suffix: str | None = "auto") -> Prepared:
    """Get the data and prepare it at the config's image size, split with its split seed (cached:
    fast when done before).

    Every notebook calls this with its parameters, so each one also runs on a fresh runtime. A
    preparation already in the kit's home (e.g. on Drive, made by notebook 01 on another runtime) is
    used as it is: the source is not downloaded, extracted or generated again. ``layout`` and
    ``mask_suffix`` are passed to :func:`~helpers.data.prep.prepare` (``auto``: detected). An empty
    ``data_source`` is the profile's.

    Returns:
        The :class:`~helpers.data.prep.Prepared` dataset.
    """
    data_source = chosen_source(data_source, config)
    name = prepared_name(dataset_name(data_source, data_dir, config, sample_seed), protocol,
                         config.image_size, config.split_seed)
    out_dir = paths.prepared_root() / name
    with locks.preparing(out_dir):  # one worker prepares; the others wait, then use its preparation
        return _prepared_once(config, data_source, data_dir, protocol, on_bad_file, sample_seed,
                              mirror, out_dir, layout=layout, mask_suffix=mask_suffix)


def _prepared_once(config: RunConfig, data_source: str, data_dir: str | None, protocol: str,
                   on_bad_file: str, sample_seed: int, mirror: str | None, out_dir: Path, *,
                   layout: str, mask_suffix: str | None) -> Prepared:
    """:func:`ensure_prepared` in ``out_dir``, while this process holds its preparation."""
    splits = ("train",) if protocol == "seed" else ("train", "val", "test")
    source = expected_source(data_source, data_dir, config, sample_seed)
    given = _given(data_source, data_dir)
    if data_source == "bundled" and not given.is_file():
        # missing: named, with how to restore it (a damaged archive is named when it is extracted)
        bundled.check_archive(given)
    stamp = source_stamp(given, by_content=data_source == "bundled") if given is not None else None
    if given is not None:
        _refuse_a_namesake(out_dir, source if data_source == "folder" else given)
        if stale_source(out_dir, stamp):
            print(f"{given} changed since it was prepared ({stamp['files']} files now): preparing "
                  f"it again. Runs trained on the earlier files keep their folders (RESTART trains "
                  f"them again).")
            (out_dir / "prepared.json").unlink()
    subset = None if data_source == "synthetic" else config.data_subset
    if source is not None and is_prepared(out_dir,
                                          settings(source, config.image_size, protocol,
                                                   config.split_seed, on_bad_file, layout,
                                                   mask_suffix, subset)):
        return load_prepared(out_dir)
    root = get_source(data_source, data_dir, config, sample_seed, splits, mirror)
    prepared = prepare(root, out_dir, config.image_size, protocol, config.split_seed, on_bad_file,
                       layout=layout, mask_suffix=mask_suffix, subset=subset)
    if stamp is not None:
        write_stamp(out_dir, {**stamp, "given": str(given)})
    return prepared


def _refuse_a_namesake(out_dir: Path, given: Path) -> None:
    """Refuse a dataset whose folder has the name of another one already prepared here (its runs
    would share ids).

    Raises:
        DataError: names both folders and what to do.
    """
    try:
        earlier = json.loads((out_dir / STAMP).read_text()).get("given")
    except (OSError, ValueError):
        return
    if earlier and Path(earlier).resolve() != Path(given).resolve() and Path(earlier).exists():
        raise DataError(f"{given} has the folder name of {earlier}, which is already prepared in "
                        f"{out_dir}: a dataset is known by its folder's name (in the prepared data "
                        f"and in run ids), so the two would be mixed up. Rename one of the "
                        f"folders, or use another KIT_HOME for this one.")


def notebook_data(config: RunConfig, data_source: str | None = None, data_dir: str | None = None,
                  protocol: str = "seed", on_bad_file: str = "raise", mirror: str | None = None, *,
                  layout: str = "auto", mask_suffix: str | None = "auto") -> Prepared:
    """What notebooks 02 and 03 train on: the prepared data of their parameters (``both`` protocols:
    the seed one).

    Prepared by notebook 01 with the same parameters, it is found at once; on a fresh runtime
    without it, it is prepared here (seconds for the offline sample).
    """
    if protocol == "external":
        raise DataError("PROTOCOL='external' makes every image a test image, so there is nothing "
                        "to train on; train with 'seed' (or 'official'), then score the runs on "
                        "the other dataset in notebook 04 (EXTERNAL_SOURCE, EXTERNAL_DIR).")
    prepared = ensure_prepared(config, data_source, data_dir or None, protocol_list(protocol)[0],
                               on_bad_file, mirror=mirror or None, layout=layout,
                               mask_suffix=mask_suffix)
    print(f"prepared data: {prepared.root} ({len(prepared.table)} images, "
          f"{prepared.manifest['image_size']} px)")
    return prepared
