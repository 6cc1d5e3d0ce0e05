"""Publish executed notebooks beside a study, so a reader sees finished notebooks without running them.

    python -m helpers.tools.publish results/notebooks/demo --out results/demo_notebooks

The absolute paths of the kit's home, data and results in the outputs become relative (``results/...``,
``data/...``), and large PNG outputs become JPEGs, so the copies stay a few MB. The study itself (report,
tables, per-run scores) is copied by :mod:`helpers.reporting.snapshot`.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
from pathlib import Path

from PIL import Image

from helpers import cli, paths

JPEG_ABOVE = 100_000  # base64 characters: a PNG output larger than this is published as a JPEG


def as_jpeg(png: str, quality: int = 85) -> str:
    """A base64 PNG as a base64 JPEG (transparent parts on white)."""
    with Image.open(io.BytesIO(base64.b64decode(png))) as image:
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image, mask=image.convert("RGBA").getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=quality, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def shrink_output(output: dict, quality: int = 85) -> bool:
    """Replace a cell output's large PNG by a JPEG of it when that is at least a quarter smaller; True if it did."""
    data = output.get("data", {})
    png = data.get("image/png")
    if not isinstance(png, str) or len(png) <= JPEG_ABOVE:
        return False
    jpeg = as_jpeg(png, quality)
    if len(jpeg) >= 0.75 * len(png):
        return False
    del data["image/png"]
    data["image/jpeg"] = jpeg
    meta = output.get("metadata", {})
    if "image/png" in meta:
        meta["image/jpeg"] = meta.pop("image/png")
    return True


def shrink_images(notebook: dict, quality: int = 85) -> int:
    """Replace each large PNG output (photos, galleries, curves) of a notebook by a JPEG of it when that is at
    least a quarter smaller, so published notebooks stay a few MB; returns how many were replaced."""
    outputs = (output for cell in notebook.get("cells", []) for output in cell.get("outputs", []))
    return sum(shrink_output(output, quality) for output in outputs)


def machine_paths() -> list[tuple[str, str]]:
    """(absolute path of this machine, what a published notebook shows instead), the longest first."""
    homes = {str(paths.results_dir()): "results", str(paths.data_dir()): "data", str(paths.home_dir()): ".",
             str(paths.repo_root()): "."}
    if paths.local_dir():
        homes[str(paths.local_dir())] = "<runtime disk>"
    return sorted(homes.items(), key=lambda item: -len(item[0]))  # results inside the home go first


def relative_paths(text: str, homes: list[tuple[str, str]]) -> str:
    """``text`` with each absolute path of ``homes`` replaced, whole path components only (/x/home2 stays)."""
    for absolute, relative in homes:
        text = re.sub(re.escape(absolute) + r"(?![\w.-])", relative.replace("\\", r"\\"), text)
    return text


def publish_notebooks(executed: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Copy the executed notebooks of ``executed`` (e.g. ``results/notebooks/demo``) to ``dest``, paths made
    relative (:func:`relative_paths`) and large PNG outputs made JPEGs (:func:`shrink_images`).

    Returns:
        The notebooks written.

    Raises:
        FileNotFoundError: no executed notebook in ``executed``.
    """
    notebooks = sorted(Path(executed).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"{executed} holds no executed notebook: run them first (make demo, or "
                                f"python -m helpers.pipeline --profile <name>).")
    homes, written = machine_paths(), []
    Path(dest).mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        published = json.loads(relative_paths(notebook.read_text(), homes))
        shrink_images(published)
        (Path(dest) / notebook.name).write_text(json.dumps(published, indent=1, ensure_ascii=False) + "\n")
        written.append(Path(dest) / notebook.name)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tools.publish FOLDER [--out DEST]``; errors as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("executed", metavar="FOLDER", help="folder of executed notebooks, e.g. results/notebooks/demo")
    parser.add_argument("--out", default=None,
                        help="where the copies go (default: <results>/notebooks-published)")
    parser.add_argument("--dest", default=None, help=argparse.SUPPRESS)  # the older spelling of --out
    args = cli.add_debug(parser).parse_args(argv)
    out = cli.out_folder(args.out, args.dest)
    written = publish_notebooks(args.executed, out or paths.results_dir() / "notebooks-published")
    print(f"✓ {len(written)} notebook(s) in {written[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
