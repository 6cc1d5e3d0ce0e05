"""A smaller copy of a folder in the official ISIC 2018 layout: every pair resized, the same names.

    python -m helpers.tools.shrink /path/to/isic2018 --out data/isic2018_task1_256 --size 256

Use it to take the data where the full copy cannot go: a GPU machine that sees only your working
tree, a Google Drive with little space, a class's laptops. Images are resized by area averaging and
saved as JPEG (quality 90 by default), masks by nearest neighbour as 0/255 PNG, exactly as the
preparation step resizes them, so preparing the copy at that size changes nothing more. Point
``DATA_SOURCE = "folder"`` and ``DATA_DIR`` at the copy. Scores computed "at the original resolution"
on such a copy are at the copy's resolution.

Every pair is validated first (helpers.data.isic); a bad pair stops the copy and is named, nothing is written.
Files already in the destination are kept, so an interrupted copy resumes.

``--zip`` also packs the copy into one reproducible zip (sorted names, fixed dates): the kit's bundled archive
``data/isic2018_task1_128.zip`` was made so, from a 512-px copy of the training set::

    python -m helpers.tools.shrink /path/to/isic2018_512 --out /tmp/isic128 --size 128 --zip data/isic2018_task1_128.zip
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from helpers import cli
from helpers.data.isic import SPLIT_DIRS, DataError, Problem, format_problems
from helpers.data.prep import _load_resized, collect_pairs
from helpers.paths import write_atomic

QUALITY = 90  # JPEG quality: 36 MB for the 2,594 training pairs at 256 px (the figure in docs/data.md)


def shrink_folder(source: str | Path, dest: str | Path, size: int, protocol: str = "seed", quality: int = QUALITY,
                  workers: int = 2) -> dict:
    """Write a resized copy of ``source`` to ``dest`` in the same layout.

    Args:
        source: folder holding the official ISIC 2018 Task 1 folders (up to three levels down).
        dest: the new folder (created).
        size: side of the square copies, in pixels.
        protocol: "seed" copies the training split; "official" copies train, val and test.
        quality: JPEG quality of the images.
        workers: decoding threads.

    Returns:
        ``{"pairs": n, "written": files written now, "bytes": size of the copy}``.

    Raises:
        BadValue: ``size`` is below 16 (a ValueError).
        DataError: a file is unreadable or invalid (all such files are listed); nothing was written.
    """
    if size < 16:
        raise cli.BadValue(f"size {size} is too small for a copy to train on: give at least 16 pixels, e.g. 256.")
    dest = Path(dest)
    entries, problems = collect_pairs(source, protocol)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = list(pool.map(lambda entry: _load_resized(entry[1], size), entries))
    problems += [r for r in loaded if isinstance(r, Problem)]
    if problems:
        raise DataError(f"{source}: {len(problems)} problem(s); nothing was copied:\n{format_problems(problems)}")
    written = 0
    for (split, pair), (image, mask, *_rest) in zip(entries, loaded):
        image_dir, mask_dir = (dest / name for name in SPLIT_DIRS[split])
        targets = ((image_dir / f"{pair.isic_id}.jpg", Image.fromarray(image), {"quality": quality}),
                   (mask_dir / f"{pair.isic_id}_segmentation.png", Image.fromarray(mask * 255), {}))
        for path, picture, options in targets:
            if not path.exists():
                write_atomic(path, lambda tmp, p=picture, o=options: p.save(tmp, **o))
                written += 1
    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return {"pairs": len(entries), "written": written, "bytes": total}


def zip_folder(folder: str | Path, zip_path: str | Path) -> Path:
    """Pack every file of ``folder`` into ``zip_path``, the same bytes for the same files (sorted, fixed dates)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def pack(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
                info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())

    return write_atomic(Path(zip_path), pack)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.shrink",
                                     description="Write a resized copy of an ISIC 2018 Task 1 folder.")
    parser.add_argument("source", help="folder with the official ISIC 2018 Task 1 folders")
    parser.add_argument("dest", nargs="?", default=None, help=argparse.SUPPRESS)  # the folder, without --out
    parser.add_argument("--out", default=None, help="folder for the copy")
    parser.add_argument("--size", type=int, required=True, help="side of the square copies, in pixels")
    parser.add_argument("--protocol", default="seed", choices=("seed", "official"),
                        help="seed: the training split only; official: train, val and test")
    parser.add_argument("--quality", type=int, default=QUALITY, help=f"JPEG quality (default {QUALITY})")
    parser.add_argument("--zip", help="also pack the copy into this zip file (reproducible: sorted, fixed dates)")
    args = cli.add_debug(parser).parse_args(argv)
    args.dest = cli.out_folder(args.out, args.dest)
    if args.dest is None:
        parser.error("give the folder for the copy: --out FOLDER")
    done = shrink_folder(args.source, args.dest, args.size, args.protocol, args.quality)
    print(f"✓ {done['pairs']} pairs at {args.size} px in {args.dest} ({done['bytes'] / 1e6:.1f} MB; "
          f"{done['written']} files written now)")
    if args.zip:
        packed = zip_folder(args.dest, args.zip)
        print(f"✓ packed into {packed} ({packed.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
