"""Export a run's best model to TorchScript and ONNX, with its preprocessing as metadata and a model
card.

    python -m helpers.evaluation.export results/runs/<run id> exported/ [--format onnx torchscript]
                                        [--depth N] [--check] [--legacy-onnx]

writes ``model.onnx`` and/or ``model.pt`` and ``MODEL_CARD.md``
(:mod:`helpers.evaluation.model_card`) into the output folder; ``--check`` prints the parity
figures. ``export_manifest.json`` there lists the files export wrote: a file of another name that an
export would replace stops it before anything is written, unless ``--overwrite``
(:mod:`helpers.evaluation.outputs`), and every file is written through a temporary file and a
rename. Read an export back with :func:`helpers.evaluation.exported.read_metadata`, run it with
``python -m helpers.evaluation.predict FILE ...``.

**What the graph computes.** Normalised float32 images (B, 3, H, W), RGB, (pixel / 255 − mean) / std
with the kit's ImageNet mean and std (:data:`helpers.data.loaders.IMAGENET_MEAN`, ``IMAGENET_STD``)
→ probabilities float32 (B, 1, H, W): the sigmoid of the one output inference uses
(:func:`helpers.evaluation.inference._forward`: the model's eval-mode logits). A UNet++ with deep
supervision gives its deepest head x_0_4, or with ``--depth L`` head x_0_L of the network pruned as
:func:`helpers.evaluation.inference.pruned_copies` prunes it (only the nodes that head needs).
Thresholding, flip TTA and post-processing stay outside; the metadata says which.

**Sizes.** The batch is dynamic. UNet and UNet++ are fully convolutional: height and width are
dynamic too, any multiple of 2 ** depth. TransUNet's ONNX file from the dynamo exporter takes any
multiple of 16 as well: the model resizes its position embeddings to the input's token grid on every
call (the identity at its own grid), and torch.export keeps that resize symbolic. Tracing
(TorchScript, the legacy ONNX exporter) turns the grid into constants, so those TransUNet files take
the run's image size only: their metadata says ``"dynamic_size": false``.

**Exporters.** ONNX by ``torch.onnx.export(..., dynamo=True)`` (torch.export, then onnxscript),
opset 18, with ``torch.export.Dim`` for the batch and the sizes (multiples of ``size_multiple``):
5-13 s per tiny model, 23 s for TransUNet ``cpu``, 28 s for ``small`` on 2 busy cores. If onnxscript
is not installed, the dynamo exporter raises, or its graph does not follow the model at twice the
size (:func:`_check_symbolic`), the legacy TorchScript-based exporter (``dynamo=False``: ~0.2 s,
needs only ``onnx``) writes the file instead, and says so: the metadata's ``exporter`` and
``exporter_fallback`` (why), ``export_run(...)["fallback"]`` and one line of the command.
``--legacy-onnx`` (``legacy=True``) asks for it outright. Both match PyTorch to ~6e-8 for UNet and
UNet++ (TransUNet: ~4e-6 tiny, ~2e-5 ``small`` at 128 and 256 px: fp32 summation order in its
attention). TorchScript by ``torch.jit.trace`` (the models have no data-dependent control flow):
torch.jit is deprecated by torch (2.14 warns); it stays for now because Colab's package list has no
onnx, so notebook 04 exports TorchScript there. ``onnx``, ``onnxruntime`` and ``onnxscript`` are an
optional extra: ``pip install -r requirements-export.txt``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import cli, paths
from helpers.data.isic import DataError
from helpers.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from helpers.evaluation import inference, outputs
from helpers.evaluation.exported import (
    METADATA_FILE,
    ExportError,
    load_exported,
    normalise,
    require,
)
from helpers.evaluation.model_card import write_model_card
from helpers.evaluation.predict import run_settings, trained_size
from helpers.models.summary import count_parameters
from helpers.training import runs

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
CARD = "MODEL_CARD.md"
MANIFEST = "export_manifest.json"  # in the output folder: the files export wrote there
OPSET = 18
# the metadata's "exporter"
DYNAMO, LEGACY = "torch.onnx.export(dynamo=True)", "torch.onnx.export(dynamo=False)"
NAMES = (["images"], ["probs"])


class Probabilities(nn.Module):
    """A model wrapped for export: normalised images (B, 3, H, W) float32 → probabilities (B, 1, H,
    W) float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()  # and stays so: exporters put a module back in the mode they found it in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """sigmoid of the eval-mode logits, as inference computes its probabilities."""
        return torch.sigmoid(self.model(images).float())


def prepare(run_dir: str | Path, depth: int | None = None) -> tuple[Probabilities, dict]:
    """A run's best model, pruned to ``depth`` (UNet++), wrapped for export; and the export's
    metadata.

    Raises:
        FileNotFoundError: no ``config.json`` or no best checkpoint (the message says what to do).
        ExportError: a depth for a model other than a deep-supervised UNet++, or outside 1..depth.
        ValueError: ``config.json`` is unreadable, or its image size is not the one the run was
            trained at.
    """
    run_dir, config = Path(run_dir), runs.load_run_config(run_dir)
    image_size = trained_size(run_dir)  # before any work: an edited config.json is refused
    model = runs.load_run_model(run_dir, which="best")
    if depth is not None:
        if config["model"] != "unetpp" or not model.config.deep_supervision:
            raise ExportError(f"{run_dir / 'config.json'}: --depth prunes a UNet++ trained with "
                              f"deep supervision; this run is a {config['model']}"
                              f"{' without it' if config['model'] == 'unetpp' else ''}. "
                              f"Leave --depth out.")
        if not 1 <= depth <= model.config.depth:
            raise ExportError(f"--depth {depth}: this UNet++ has depths 1 to {model.config.depth}.")
        model = inference.pruned_copies(model)[f"L{depth}"]
    dynamic = config["model"] != "transunet"
    multiple = 2 ** model.config.depth if dynamic else 16
    metadata = {
        "kit_export": 1, "run_id": config.get("run_id", run_dir.name), "model": config["model"],
        "model_config": config["model_config"], "model_overrides": config["model_overrides"],
        "config": dataclasses.asdict(model.config), "prune_depth": depth,
        "params": count_parameters(model),
        "input": "float32 (B, 3, H, W), RGB, (pixel / 255 - mean) / std",
        "output": "float32 (B, 1, H, W): lesion probabilities (sigmoid applied)",
        "image_size": image_size, "dynamic_size": dynamic, "size_multiple": multiple,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **_settings(run_dir),
        "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return Probabilities(model), metadata


def _settings(run_dir: Path) -> dict:
    settings = run_settings(run_dir)
    return {"threshold": settings["threshold"], "tta": settings["tta"],
            "postprocess": settings["post"]}


def export_torchscript(module: nn.Module, path: str | Path, metadata: dict,
                       example: torch.Tensor) -> dict:
    """Trace ``module`` on ``example`` (B, 3, H, W) and save it with the metadata as the extra file
    ``kit.json``.

    Returns:
        The metadata written (``metadata`` with its format and exporter).
    """
    metadata = {**metadata, "format": "torchscript", "exporter": "torch.jit.trace", "opset": None}
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarning on the models' size checks; jit's deprecation warnings
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
        extra = {METADATA_FILE: json.dumps(metadata)}
        paths.write_atomic(Path(path),
                           lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    return metadata


def export_onnx(module: nn.Module, path: str | Path, metadata: dict, example: torch.Tensor,
                opset: int = OPSET, legacy: bool = False) -> dict:
    """Export ``module`` to ONNX with the dynamo exporter (or the legacy one: ``legacy``, or as a
    fallback when the dynamo one cannot), and write the metadata into ``metadata_props`` (one entry
    per key, JSON values).

    The batch is dynamic; height and width too under the dynamo exporter, and under the legacy one
    where ``metadata["dynamic_size"]`` (what tracing allows).

    Returns:
        The metadata written: ``metadata`` with ``format``, ``opset``, ``exporter`` (the one that
        wrote the file), ``exporter_fallback`` (why the legacy exporter stood in for the dynamo one,
        or None) and the file's own ``dynamic_size``.

    Raises:
        ExportError: onnx is not installed.
    """
    onnx = require("onnx")
    fallback = None
    if not legacy:
        try:
            proto = _dynamo_proto(module, metadata, example, opset)
        # torch.export and the translation to ONNX raise many kinds
        except Exception as err:  # noqa: BLE001
            fallback, legacy = _fallback_reason(err), True
    if legacy:
        proto = _legacy_proto(onnx, module, metadata, example, opset)
    written = {**metadata, "format": "onnx", "exporter": LEGACY if legacy else DYNAMO,
               "exporter_fallback": fallback, "opset": opset,
               "dynamic_size": metadata["dynamic_size"] or not legacy}
    for key, value in written.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    paths.write_atomic(Path(path), lambda tmp: onnx.save(proto, str(tmp)))
    return written


def _dynamo_proto(module: nn.Module, metadata: dict, example: torch.Tensor, opset: int):
    """The ONNX ModelProto of the dynamo exporter: batch, height and width symbolic (sizes multiples
    of ``metadata["size_multiple"]``).

    Raises:
        ExportError: onnxscript is not installed, or the graph pinned a size
            (:func:`_check_symbolic`).
        Exception: anything torch.export or the translation to ONNX raises.
    """
    require("onnxscript")
    dim, step = torch.export.Dim, metadata["size_multiple"]
    shape = {0: dim("batch", max=4096), 2: dim("height", min=1, max=512) * step,
             3: dim("width", min=1, max=512) * step}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's and onnxscript's warnings
        program = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=NAMES[0], output_names=NAMES[1],
                                    dynamic_shapes={NAMES[0][0]: shape}, verbose=False)
    _check_symbolic(program, module, example)
    return program.model_proto


def _check_symbolic(program, module: nn.Module, example: torch.Tensor) -> None:
    """Refuse a captured graph that does not follow the model at another batch and twice the
    example's size: torch.onnx turns a guard on a size (``int(x.shape[-1])``, ``if size == ...``)
    into a runtime assert that ONNX drops, so such a graph keeps its input axes named yet computes
    the traced size only (its range constraints do not show it).

    Raises:
        ExportError: the graph raised, or its output differs from the model's by 1e-4 or more.
    """
    other = torch.randn(1, 3, 2 * example.shape[-2], 2 * example.shape[-1],
                        generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            gap = float((program.exported_program.module()(other) - module(other)).abs().max())
    # a shape mismatch surfaces as whatever the pinned op raises
    except Exception as err:  # noqa: BLE001
        gap, why = (float("inf"),
                    f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:120]}")
    else:
        why = f"max |difference| {gap:.1e}"
    if not gap < 1e-4:
        raise ExportError(f"the dynamo exporter's graph does not follow the model at "
                          f"{tuple(other.shape)} ({why}): the model branches on its input size, "
                          f"which the graph pinned to the traced one")


def _legacy_proto(onnx, module: nn.Module, metadata: dict, example: torch.Tensor, opset: int):
    """The ONNX ModelProto of the legacy TorchScript-based exporter: batch dynamic, height and width
    where ``metadata["dynamic_size"]``."""
    axes = {0: "batch", **({2: "height", 3: "width"} if metadata["dynamic_size"] else {})}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=NAMES[0], output_names=NAMES[1],
                          dynamic_axes={NAMES[0][0]: axes, NAMES[1][0]: axes})
    return onnx.load_from_string(buffer.getvalue())


def _fallback_reason(err: Exception) -> str:
    """Why the dynamo exporter did not write the file, in one line: a missing onnxscript, or its
    error's first line."""
    if isinstance(err, ExportError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0]
    return f"the dynamo exporter failed ({type(err).__name__}: {first[:200]})"


def parity_inputs(metadata: dict, real: np.ndarray | None = None, batch_sizes=(1, 3),
                  seed: int = 0) -> dict:
    """Inputs for :func:`parity`: ``{label: float32 (B, 3, H, W)}``: random at each batch size at
    the run's size, random at twice the size (when sizes are dynamic), and ``real`` uint8 images (N,
    S, S, 3) normalised."""
    generator, size = torch.Generator().manual_seed(seed), metadata["image_size"]
    shapes = [(b, size) for b in batch_sizes] + ([(2, 2 * size)] if metadata["dynamic_size"]
                                                 else [])
    found = {f"random {b}x3x{s}x{s}": torch.randn(b, 3, s, s, generator=generator)
             for b, s in shapes}
    if real is not None and len(real):
        found[f"real {len(real)}x3x{size}x{size}"] = normalise(real, metadata["mean"],
                                                               metadata["std"])
    return found


def parity(module: nn.Module, path: str | Path, inputs: dict) -> dict[str, float]:
    """Largest absolute probability difference between PyTorch (``module``) and the export at
    ``path`` (TorchScript via torch.jit.load, ONNX via onnxruntime on the CPU), per input of
    :func:`parity_inputs`."""
    exported = load_exported(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return {label: float((module(x) - exported.probs(x)).abs().max())
                for label, x in inputs.items()}


def real_images(run_dir: str | Path, count: int = 3) -> np.ndarray | None:
    """A few uint8 images (N, S, S, 3) of the run's prepared data (test split first), or None if it
    is not here."""
    try:
        prepared = runs.load_run_data(run_dir)
    except (FileNotFoundError, KeyError, DataError):  # not prepared on this machine
        return None
    rows = prepared.indices("test")
    rows = rows if len(rows) else np.arange(len(prepared.images))
    return np.asarray(prepared.images[rows[:count]])


def available_formats() -> tuple[str, ...]:
    """The formats this environment can export and check: TorchScript always, ONNX when onnx and
    onnxruntime are installed (``pip install -r requirements-export.txt``; Colab has neither)."""
    has_onnx = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    return ("onnx", "torchscript") if has_onnx else ("torchscript",)


def export_run(run_dir: str | Path, out_dir: str | Path, formats=("onnx", "torchscript"), *,
               depth: int | None = None, check: bool = False, opset: int = OPSET,
               legacy: bool = False, overwrite: bool = False) -> dict:
    """Export a run's best model (see the module docstring) and write the model card next to it.

    Args:
        run_dir: ``results/runs/<run id>``.
        out_dir: where ``model.onnx``, ``model.pt`` and ``MODEL_CARD.md`` go (created).
        formats: ``onnx`` and/or ``torchscript``.
        depth: UNet++ with deep supervision only: export the network pruned at this depth.
        check: measure parity (:func:`parity`) on random inputs and a few of the run's images.
        opset, legacy: see :func:`export_onnx`.
        overwrite: replace files in ``out_dir`` that export did not write (default: refuse).

    Returns:
        ``{"files": {format: path}, "card": path, "metadata": dict, "written": {format: the file's
        metadata}, "parity": {format: {label: max |Δp|}}, "exporter": the ONNX exporter used (None
        without ONNX), "fallback": why the legacy ONNX exporter stood in for the dynamo one (None if
        it did not)}``.

    Raises:
        FileNotFoundError: not a run folder, or no best checkpoint.
        ExportError: an unknown format, a wrong depth, or a missing optional package.
        cli.BadValue: ``out_dir`` is an existing file.
        OutputClash: outputs would replace files export did not write (and ``overwrite`` is false).
    """
    unknown = sorted(set(formats) - set(FILES))
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats}; choose from "
                          f"{sorted(FILES)}.")
    for package in (("onnx", "onnxruntime") if check else ("onnx",)) if "onnx" in formats else ():
        require(package)  # before any work: say what to install
    out_dir = outputs.check_folder(out_dir)
    files = {fmt: out_dir / FILES[fmt] for fmt in dict.fromkeys(formats)}
    planned = {*(path.name for path in files.values()), CARD}
    _check_own(out_dir, planned, overwrite)
    module, metadata = prepare(run_dir, depth)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_manifest(out_dir, MANIFEST, planned, "python -m helpers.evaluation.export")
    example = torch.zeros(2, 3, metadata["image_size"], metadata["image_size"])
    written = {fmt: export_onnx(module, path, metadata, example, opset, legacy) if fmt == "onnx"
               else export_torchscript(module, path, metadata, example)
               for fmt, path in files.items()}
    card = write_model_card(run_dir, {**metadata, "opset": opset}, files, out_dir, written)
    real = real_images(run_dir) if check else None
    checked = {fmt: parity(module, path, parity_inputs(written[fmt], real))
               for fmt, path in files.items()} if check else {}
    onnx = written.get("onnx", {})
    return {"files": files, "card": card, "metadata": metadata, "written": written,
            "parity": checked, "exporter": onnx.get("exporter"),
            "fallback": onnx.get("exporter_fallback")}


def _check_own(out_dir: Path, planned: set[str], overwrite: bool) -> None:
    """Refuse outputs that would replace files export did not write
    (:func:`helpers.evaluation.outputs.check_clash`).

    Raises:
        OutputClash: such files exist and ``overwrite`` is false.
        ValueError: the manifest is unreadable, and ``overwrite`` is false.
    """
    try:
        own = outputs.read_manifest(out_dir, MANIFEST) or set()
    except ValueError:
        if not overwrite:
            raise
        own = set()
    outputs.check_clash(out_dir, planned | {MANIFEST}, own | {MANIFEST}, "export", overwrite)


def main(argv: list[str] | None = None) -> int:
    """``lesion-export RUN --out OUT_DIR [--format onnx,torchscript] [--depth N] [--check]
    [--legacy-onnx]`` (``python -m helpers.evaluation.export``; ``RUN OUT_DIR`` works too): errors
    as one line (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluation.export",
                                     description="Export a run's best model to ONNX and "
                                                 "TorchScript, with a model card.")
    parser.add_argument("run", help="a run folder, e.g. results/runs/<run id>")
    # the output folder, without --out
    parser.add_argument("out_dir", nargs="?", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="the output folder (model.onnx, model.pt, "
                                                    "MODEL_CARD.md)")
    parser.add_argument("--format", nargs="+", default=["onnx,torchscript"],
                        help="onnx, torchscript, or onnx,torchscript (the default: both)")
    parser.add_argument("--depth", type=int, default=None,
                        help="UNet++ with deep supervision: prune at this depth")
    parser.add_argument("--check", action="store_true",
                        help="compare the export with PyTorch and print the difference")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--legacy-onnx", action="store_true",
                        help="ONNX with torch's legacy TorchScript-based exporter instead of the "
                             "dynamo one (default)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in the output folder that export did not write "
                             "(default: refuse)")
    args = cli.add_debug(parser).parse_args(argv)
    out = cli.out_folder(args.out, args.out_dir)
    if out is None:
        parser.error("give the output folder: --out FOLDER")
    done = export_run(args.run, out, cli.comma_list(args.format), depth=args.depth,
                      check=args.check, opset=args.opset, legacy=args.legacy_onnx,
                      overwrite=args.overwrite)
    for fmt, path in done["files"].items():
        print(f"✓ {fmt}: {path} ({path.stat().st_size / 1024:.0f} kB, "
              f"{done['written'][fmt]['exporter']})")
    if done["fallback"]:
        print(f"⚠ ONNX written by the legacy exporter (dynamo=False) instead of the dynamo one: "
              f"{done['fallback']}")
    for fmt, figures in done["parity"].items():
        for label, diff in figures.items():
            print(f"  parity {fmt} {label}: max |p_torch - p_export| = {diff:.2e}")
    print(f"✓ model card: {done['card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
