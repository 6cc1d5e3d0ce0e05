"""Prepare a dataset once: validate, resize, cache as uint8 arrays, split, pick fractions.

Training never decodes a JPEG or PNG: :func:`prepare` writes, into one folder,

    images.npy    uint8 (N, S, S, 3)   resized with area averaging (PIL BOX)
    masks.npy     uint8 (N, S, S)      values {0, 1}, resized nearest-neighbour
    splits.csv    one row per image: isic_id, split, train_rank, in_10/25/50/100,
                  original height/width, lesion fraction, source files
    originals.zip the original ground-truth PNGs of the validation and test images (for scores at
                  the original size and the challenge export, also where the raw data is gone, as on
                  a fresh Colab runtime)
    prepared.json what was prepared, from where, with which settings, and any notes

The source is a folder in any layout of :mod:`helpers.data.layouts` (the official ISIC folders, a
PH2 tree, or plain image and mask folders). Three protocols: ``seed`` (a seeded 70/15/15 split of
the training images, as the original study did), ``official`` (ISIC only: train on the training set,
validate on the official validation set, test on the official test set) and ``external`` (every
image is a test image: another dataset to score trained models on; no training rows). Training
fractions are nested and deterministic: a seeded order of the training images, fraction ``f`` keeps
the first ``round(f * n_train)`` of them, so 10 % ⊂ 25 % ⊂ 50 % ⊂ 100 %.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from helpers import paths
from helpers.data import layouts
from helpers.data.folders import normal_suffix
from helpers.data.isic import (
    BadFile,
    DataError,
    Pair,
    Problem,
    format_problems,
    grayscale_mask,
    load_pair,
    upright,
)
from helpers.paths import write_atomic

PREP_VERSION = 3  # 2: originals.zip; 3: photos upright (EXIF orientation applied)
# prepared.json: written last
FILES = ("images.npy", "masks.npy", "splits.csv", "originals.zip", "prepared.json")
ORIGINALS = "originals.zip"
SEED_RATIOS = (0.70, 0.15, 0.15)
FRACTION_COLUMNS = {0.10: "in_10", 0.25: "in_25", 0.50: "in_50", 1.00: "in_100"}


@dataclass
class Prepared:
    """A prepared dataset: arrays (memory-mapped) and the per-image table."""

    root: Path
    images: np.ndarray   # (N, S, S, 3) uint8
    masks: np.ndarray    # (N, S, S) uint8 {0, 1}
    table: pd.DataFrame  # one row per image, in array order
    manifest: dict
    # where the files are read (a local copy of a home on Drive); default root
    read_from: Path | None = None

    def original_mask_png(self, row: int) -> bytes:
        """The original ground-truth PNG of an image: from originals.zip, else the raw file if it is
        still there.

        Raises:
            FileNotFoundError: neither (a training image, or a preparation made before originals.zip
                existed).
        """
        path = Path(self.table["mask_path"].iloc[row])
        archive = (self.read_from or self.root) / ORIGINALS
        name = f"{self.table['isic_id'].iloc[row]}.png"
        if archive.is_file():  # first: the mask as it was when the data was prepared
            with zipfile.ZipFile(archive) as zipped:
                if name in zipped.namelist():
                    return zipped.read(name)
        if path.is_file():
            return path.read_bytes()
        raise FileNotFoundError(f"The original mask of {self.table['isic_id'].iloc[row]} is "
                                f"neither at {path} nor in {archive}: prepare the data again "
                                f"(notebook 01) to store it there.")

    def original_mask(self, row: int) -> np.ndarray:
        """The original ground truth of an image as bool (H, W), lesion where > 127 (as preparing
        binarises); upright, as it was prepared (:func:`~helpers.data.isic.upright`)."""
        with Image.open(io.BytesIO(self.original_mask_png(row))) as mask:
            return np.asarray(upright(mask).convert("L")) > 127

    def has_originals(self, rows) -> bool:
        """True when the original mask of every row can be read (raw file or originals.zip)."""
        archive = (self.read_from or self.root) / ORIGINALS
        stored = set()
        if archive.is_file():
            with zipfile.ZipFile(archive) as zipped:
                stored = set(zipped.namelist())
        return all(Path(self.table["mask_path"].iloc[r]).is_file()
                   or f"{self.table['isic_id'].iloc[r]}.png" in stored
                   for r in rows)

    def indices(self, split: str, fraction: float = 1.0) -> np.ndarray:
        """Array rows of a split; for ``train``, only the given nested fraction."""
        rows = self.table["split"] == split
        if split == "train" and fraction < 1.0:
            rows &= self.table["train_rank"] < fraction_size(
                int((self.table["split"] == "train").sum()), fraction)
        return np.flatnonzero(rows.to_numpy())


def fraction_size(n_train: int, fraction: float) -> int:
    """Images in a training fraction: ``round(fraction * n_train)``, at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n_train)))


def seed_split(ids: list[str], seed: int, ratios=SEED_RATIOS) -> dict[str, str]:
    """Seeded random train/val/test assignment of ``ids`` (70/15/15 by default)."""
    order = np.random.default_rng(seed).permutation(sorted(ids))
    n_train, n_val = round(ratios[0] * len(ids)), round(ratios[1] * len(ids))
    return {i: "train" if k < n_train else "val" if k < n_train + n_val else "test"
            for k, i in enumerate(order)}


def collect_pairs(root: str | Path, protocol: str, mask_suffix: str | None = "auto",
                  layout: str = "auto") -> tuple[list[tuple[str, Pair]], list[Problem]]:
    """All (split, pair) of a source folder for a protocol, and the problems met pairing them
    (:func:`helpers.data.layouts.collect`: the layout is detected unless given).

    Raises:
        ValueError: an unknown protocol or layout.
        DataError: a folder the protocol needs is absent, or nothing pairs.
    """
    return layouts.collect(root, protocol, mask_suffix, layout)


def _load_resized(pair: Pair, size: int, lenient: bool = False):
    """Decode, validate and resize one pair; a DataError becomes a Problem (``lenient``: see
    ``load_pair``)."""
    try:
        image, mask, note = load_pair(pair, lenient=True) if lenient else load_pair(pair)
    except BadFile as err:
        return Problem(err.path, err.problem)
    small = np.asarray(Image.fromarray(image).resize((size, size), Image.BOX))
    small_mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return small, small_mask, image.shape[:2], float(mask.mean()), note


def _build_table(entries, results, protocol: str, seed: int) -> pd.DataFrame:
    """The per-image table: split, nested-fraction ranks, sizes, sources."""
    table = pd.DataFrame({
        "isic_id": [p.isic_id for _, p in entries],
        "split": [s for s, _ in entries],
        "orig_height": [r[2][0] for r in results],
        "orig_width": [r[2][1] for r in results],
        "lesion_fraction": [round(r[3], 5) for r in results],
        "image_path": [str(p.image_path) for _, p in entries],
        "mask_path": [str(p.mask_path) for _, p in entries],
        "note": [r[4] for r in results],
    })
    if protocol == "seed":
        table["split"] = table["isic_id"].map(seed_split(table["isic_id"].tolist(), seed))
    elif protocol == "external":  # every image a test image: no training rows, no fractions
        table["split"] = "test"
    train = table.index[table["split"] == "train"]
    rank = np.full(len(table), -1)
    # a copy: an empty index is read-only
    order = np.random.default_rng(seed + 1).permutation(np.array(train))
    rank[order] = np.arange(len(train))
    table.insert(2, "train_rank", rank)
    for fraction, column in reversed(FRACTION_COLUMNS.items()):
        table.insert(3, column, (rank >= 0) & (rank < fraction_size(len(train), fraction)))
    table.insert(2, "protocol", protocol)
    return table


def prepare(source: str | Path, out_dir: str | Path, image_size: int, protocol: str = "seed",
            seed: int = 42, on_bad_file: str = "raise", workers: int = 2, progress: bool = True, *,
            layout: str = "auto", mask_suffix: str | None = "auto",
            subset: int | None = None) -> Prepared:
    """Validate, resize and cache a source folder; reuse a finished identical preparation.

    Args:
        source: dataset folder in a layout of :mod:`helpers.data.layouts` (ISIC, PH2, image/mask
            folders).
        out_dir: where the cache goes (e.g. from :func:`prepared_name`).
        image_size: side of the square cached images.
        protocol: ``seed``, ``official`` (ISIC only) or ``external`` (every image a test image).
        seed: split and fraction seed.
        on_bad_file: ``raise`` (default; nothing is written) or ``skip`` (bad pairs are left
            out and listed in ``prepared.json`` and on screen).
        workers: decoding threads.
        progress: show a progress bar.
        layout: ``auto`` (detected) or ``isic``, ``ph2``, ``folders``.
        mask_suffix: the ``folders`` layout's mask suffix: ``auto``, e.g. ``_mask``, or ``""`` for
            none.
        subset: keep this many pairs, drawn at random across the source with ``seed`` (None: all).

    Returns:
        The :class:`Prepared` dataset.

    Raises:
        DataError: problems were found and ``on_bad_file == "raise"``; the message lists them.
    """
    if on_bad_file not in ("raise", "skip"):
        raise ValueError(f"on_bad_file must be 'raise' or 'skip', got {on_bad_file!r}")
    source, out_dir = Path(source).resolve(), Path(out_dir)
    wanted = settings(source, image_size, protocol, seed, on_bad_file, layout, mask_suffix, subset)
    if is_prepared(out_dir, wanted):
        return load_prepared(out_dir)
    found = layouts.scan(source, protocol, mask_suffix, layout)
    entries, problems, lenient = (draw(found.entries, subset, seed), list(found.problems),
                                  found.layout != "isic")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(lambda e: _load_resized(e[1], image_size, lenient), entries),
                            total=len(entries), desc=f"prepare {image_size}px",
                            disable=not progress))
    problems += [r for r in results if isinstance(r, Problem)]
    keep = [k for k, r in enumerate(results) if not isinstance(r, Problem)]
    if problems and on_bad_file == "raise":
        raise DataError(f"{len(problems)} problem(s) in {source}:\n{format_problems(problems)}\n"
                        "Fix or remove these files, or set the study setting on_bad_file='skip' "
                        "(SETTINGS in notebook 01) to leave them out, listed.")
    if problems:
        print(f"Skipping {len(problems)} bad file(s):\n{format_problems(problems)}")
    if not keep:
        raise DataError(f"{source}: no usable image/mask pairs.")
    entries, results = [entries[k] for k in keep], [results[k] for k in keep]
    table = _build_table(entries, results, protocol, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prepared.json").unlink(missing_ok=True)            # invalid until complete
    write_atomic(out_dir / "images.npy",
                 lambda tmp: np.save(tmp, np.stack([r[0] for r in results])))
    write_atomic(out_dir / "masks.npy", lambda tmp: np.save(tmp, np.stack([r[1] for r in results])))
    table.to_csv(out_dir / "splits.csv", index=False)
    write_atomic(out_dir / ORIGINALS, lambda tmp: _zip_originals(tmp, table))
    # a new id each time: local copies of an older one are stale
    manifest = {**wanted, "prepared_id": uuid.uuid4().hex,
                "layout_found": found.layout, "mask_suffix_found": found.mask_suffix,
                "count": len(table), "splits": table["split"].value_counts().to_dict(),
                "skipped": [str(p) for p in problems], "notes": int((table["note"] != "").sum())}
    (out_dir / "prepared.json").write_text(json.dumps(manifest, indent=1))
    return load_prepared(out_dir)


def draw(entries: list, subset: int | None, seed: int) -> list:
    """``subset`` of the entries, drawn at random with ``seed`` and kept in their order (None, or
    too few: all).

    A seeded draw across the whole source, not its first files, so a small demo is a fair sample of
    the data.
    """
    if subset is None or subset >= len(entries):
        return list(entries)
    keep = np.sort(np.random.default_rng(seed).choice(len(entries), size=int(subset),
                                                      replace=False))
    return [entries[k] for k in keep]


def _zip_originals(path: Path, table: pd.DataFrame) -> None:
    """Store the original mask PNGs of the validation and test images, as they are (PNG is
    compressed already); masks in another format (JPEG, BMP, TIFF) as grayscale PNGs of the same
    values."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zipped:
        for isic_id, mask_path in table.loc[table["split"] != "train",
                                            ["isic_id", "mask_path"]].itertuples(index=False):
            if Path(mask_path).suffix.lower() == ".png":
                zipped.write(mask_path, f"{isic_id}.png")
            else:
                with Image.open(mask_path) as mask:
                    values, _ = grayscale_mask(upright(mask), Path(mask_path))
                png = io.BytesIO()
                Image.fromarray(values).save(png, format="PNG")
                zipped.writestr(f"{isic_id}.png", png.getvalue())


def settings(source: str | Path, image_size: int, protocol: str, seed: int, on_bad_file: str,
             layout: str = "auto", mask_suffix: str | None = "auto",
             subset: int | None = None) -> dict:
    """What a preparation is made from and with: the part of ``prepared.json`` that must match to
    reuse it.

    ``layout`` and ``mask_suffix`` are kept as asked (``auto`` included; the suffix normalised, so
    None, ``""`` and ``"none"`` are one setting); what was found is in ``prepared.json`` as
    ``layout_found`` and ``mask_suffix_found``.
    """
    return {"version": PREP_VERSION, "source": str(Path(source).resolve()),
            "image_size": int(image_size), "protocol": protocol, "seed": int(seed),
            "on_bad_file": on_bad_file, "layout": layout, "mask_suffix": normal_suffix(mask_suffix),
            "subset": None if subset is None else int(subset)}


# what preparations made before these settings used
SETTING_DEFAULTS = {"layout": "auto", "mask_suffix": "auto", "subset": None}


def is_prepared(out_dir: str | Path, wanted: dict) -> bool:
    """True when ``out_dir`` holds a finished preparation made with the ``wanted`` :func:`settings`.

    The mask suffix only matters where the plain-folders layout was found (ISIC and PH2 name their
    masks themselves), so changing it does not prepare an ISIC or PH2 dataset again.
    """
    manifest = Path(out_dir) / "prepared.json"
    if not manifest.is_file():
        return False
    found = json.loads(manifest.read_text())
    keys = [k for k in wanted
            if not (k == "mask_suffix" and found.get("layout_found", "isic") != "folders")]
    return all(found.get(k, SETTING_DEFAULTS.get(k)) == wanted[k] for k in keys)


def local_copy(out_dir: str | Path) -> Path:
    """Where to read a preparation from: with a home on Drive, a copy on the runtime's disk (made
    once per runtime, and again if the preparation changed); otherwise ``out_dir`` itself.

    Training reads the arrays every epoch, which is fast from local disk and slow from Drive.
    """
    out_dir = Path(out_dir)
    target = paths.mirror(out_dir)
    if target is None:
        return out_dir
    manifest = (out_dir / "prepared.json").read_bytes()
    if (target / "prepared.json").is_file() and (target / "prepared.json").read_bytes() == manifest:
        return target
    (target / "prepared.json").unlink(missing_ok=True)  # incomplete until the arrays are copied
    size = sum((out_dir / name).stat().st_size for name in FILES if (out_dir / name).is_file())
    print(f"Copying the prepared data ({paths.human_bytes(size)}) from {out_dir} to this runtime's "
          f"disk.")
    for name in FILES[:-1]:
        if (out_dir / name).is_file():  # originals.zip: not in preparations made before it existed
            write_atomic(target / name, lambda tmp, name=name: shutil.copyfile(out_dir / name, tmp))
    (target / "prepared.json").write_bytes(manifest)
    return target


def load_prepared(out_dir: str | Path) -> Prepared:
    """Open a finished preparation (arrays memory-mapped; from the local copy when the home is on
    Drive).

    Raises:
        DataError: the folder holds no finished preparation.
    """
    out_dir = Path(out_dir)
    if not (out_dir / "prepared.json").exists():
        raise DataError(f"{out_dir}: no finished preparation here (prepared.json missing); run "
                        f"notebook 01 (or prep.prepare) first.")
    read_from = local_copy(out_dir)
    table = pd.read_csv(read_from / "splits.csv", keep_default_na=False)
    images = np.load(read_from / "images.npy", mmap_mode="r")
    masks = np.load(read_from / "masks.npy", mmap_mode="r")
    if len(images) != len(table) or len(masks) != len(table):
        raise DataError(f"{out_dir}: images.npy/masks.npy/splits.csv disagree in length; delete "
                        f"the folder and prepare again.")
    return Prepared(out_dir, images, masks, table,
                    json.loads((out_dir / "prepared.json").read_text()), read_from)


STAMP = "source_stamp.json"  # in a preparation of a folder or zip: what its source files were


def source_stamp(given: Path, by_content: bool = False) -> dict:
    """What a folder's (or zip's) files are: their count and a hash of their names, sizes and
    modification times.

    ``by_content``: a file's hash is of its bytes instead (the bundled archive, whose modification
    time is the time of each fresh clone, as on every new Colab runtime).
    """
    files = sorted(p for p in given.rglob("*") if p.is_file()) if given.is_dir() else [given]
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        name = path.relative_to(given) if given.is_dir() else path.name
        when = hashlib.sha256(path.read_bytes()).hexdigest() if by_content else stat.st_mtime_ns
        digest.update(f"{name}\0{stat.st_size}\0{when}\n".encode())
    return {"source": str(given.resolve()), "files": len(files), "hash": digest.hexdigest()}


def stale_source(out_dir: Path, stamp: dict) -> bool:
    """True when a preparation exists but was made from other files than ``stamp`` says are there
    now."""
    if not (Path(out_dir) / "prepared.json").is_file():
        return False
    try:
        stored = json.loads((Path(out_dir) / STAMP).read_text())
        return {key: stored.get(key) for key in stamp} != stamp
    except (OSError, ValueError, AttributeError):
        return True  # no stamp (an earlier version, or interrupted): not known to match


def write_stamp(out_dir: Path, stamp: dict) -> None:
    """Record what a preparation's source files were (read by :func:`stale_source`)."""
    paths.write_atomic(Path(out_dir) / STAMP,
                       lambda tmp: tmp.write_text(json.dumps(stamp, indent=1)))


def prepared_name(dataset: str, protocol: str, image_size: int, seed: int) -> str:
    """Folder name of a preparation, e.g. ``synthetic-60_seed_64px_s42``."""
    return f"{dataset}_{protocol}_{image_size}px_s{seed}"
