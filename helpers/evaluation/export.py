"""Export a run's best model to TorchScript and ONNX, with its preprocessing as metadata and a model card.

    python -m helpers.evaluation.export results/runs/<run id> exported/ [--format onnx torchscript] [--depth N] [--check]

writes ``model.onnx`` and/or ``model.pt`` and ``MODEL_CARD.md`` (:mod:`helpers.evaluation.model_card`) into the
output folder; ``--check`` prints the parity figures. Read an export back with
:func:`helpers.evaluation.exported.read_metadata`, run it with ``python -m helpers.evaluation.predict FILE ...``.

**What the graph computes.** Normalised float32 images (B, 3, H, W), RGB, (pixel / 255 − mean) / std with the
kit's ImageNet mean and std (:data:`helpers.data.loaders.IMAGENET_MEAN`, ``IMAGENET_STD``) → probabilities
float32 (B, 1, H, W): the sigmoid of the one output inference uses (:func:`helpers.evaluation.inference._forward`:
the model's eval-mode logits). A UNet++ with deep supervision gives its deepest head x_0_4, or with ``--depth L``
head x_0_L of the network pruned as :func:`helpers.evaluation.inference.pruned_copies` prunes it (only the
nodes that head needs). Thresholding, flip TTA and post-processing stay outside; the metadata says which.

**Sizes.** The batch is dynamic. UNet and UNet++ are fully convolutional: height and width are dynamic too, any
multiple of 2 ** depth. TransUNet is exported at the run's image size only: tracing fixes its token grid (the
position embeddings are resized in Python for other grids), so the metadata says ``"dynamic_size": false``.

**Exporters.** TorchScript by ``torch.jit.trace`` (the models have no data-dependent control flow). ONNX by
``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, opset 18: with torch 2.14 it exports all
three models with dynamic batch (and height and width) in about 0.2 s each, needs only ``onnx``, and matches
PyTorch to ~6e-8 (TransUNet: ~3e-6 tiny, ~5e-5 ``small`` at 128 px, fp32 summation order in its attention). The
dynamo exporter (``dynamo=True``, ``--dynamo``, needs ``onnxscript``) works here too, with the same parity, but
takes 4-7 s per tiny model and needs ``torch.export.Dim`` bounds for the sizes: use it when a later torch drops
the legacy one (torch.jit and the legacy exporter are deprecated in 2.14 and only warn). ``onnx``, ``onnxruntime``
and ``onnxscript`` are an optional extra: ``pip install -r requirements-export.txt``.
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

from helpers import cli
from helpers.data.isic import DataError
from helpers.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from helpers.evaluation import inference
from helpers.evaluation.exported import METADATA_FILE, ExportError, load_exported, normalise, require
from helpers.evaluation.model_card import write_model_card
from helpers.evaluation.predict import run_settings, trained_size
from helpers.models.summary import count_parameters
from helpers.training import runs

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
OPSET = 18
NAMES = (["images"], ["probs"])


class Probabilities(nn.Module):
    """A model wrapped for export: normalised images (B, 3, H, W) float32 → probabilities (B, 1, H, W) float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()  # and stays so: exporters put a module back in the mode they found it in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """sigmoid of the eval-mode logits, as inference computes its probabilities."""
        return torch.sigmoid(self.model(images).float())


def prepare(run_dir: str | Path, depth: int | None = None) -> tuple[Probabilities, dict]:
    """A run's best model, pruned to ``depth`` (UNet++), wrapped for export; and the export's metadata.

    Raises:
        FileNotFoundError: no ``config.json`` or no best checkpoint (the message says what to do).
        ExportError: a depth for a model other than a deep-supervised UNet++, or outside 1..depth.
        ValueError: ``config.json`` is unreadable, or its image size is not the one the run was trained at.
    """
    run_dir, config = Path(run_dir), runs.load_run_config(run_dir)
    image_size = trained_size(run_dir)  # before any work: an edited config.json is refused
    model = runs.load_run_model(run_dir, which="best")
    if depth is not None:
        if config["model"] != "unetpp" or not model.config.deep_supervision:
            raise ExportError(f"{run_dir / 'config.json'}: --depth prunes a UNet++ trained with deep supervision; "
                              f"this run is a {config['model']}{' without it' if config['model'] == 'unetpp' else ''}. "
                              f"Leave --depth out.")
        if not 1 <= depth <= model.config.depth:
            raise ExportError(f"--depth {depth}: this UNet++ has depths 1 to {model.config.depth}.")
        model = inference.pruned_copies(model)[f"L{depth}"]
    dynamic = config["model"] != "transunet"
    multiple = 2 ** model.config.depth if dynamic else 16
    metadata = {
        "kit_export": 1, "run_id": config.get("run_id", run_dir.name), "model": config["model"],
        "model_config": config["model_config"], "model_overrides": config["model_overrides"],
        "config": dataclasses.asdict(model.config), "prune_depth": depth, "params": count_parameters(model),
        "input": "float32 (B, 3, H, W), RGB, (pixel / 255 - mean) / std",
        "output": "float32 (B, 1, H, W): lesion probabilities (sigmoid applied)",
        "image_size": image_size, "dynamic_size": dynamic, "size_multiple": multiple,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **_settings(run_dir),
        "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return Probabilities(model), metadata


def _settings(run_dir: Path) -> dict:
    settings = run_settings(run_dir)
    return {"threshold": settings["threshold"], "tta": settings["tta"], "postprocess": settings["post"]}


def export_torchscript(module: nn.Module, path: str | Path, metadata: dict, example: torch.Tensor) -> Path:
    """Trace ``module`` on ``example`` (B, 3, H, W) and save it with the metadata as the extra file ``kit.json``."""
    metadata = {**metadata, "format": "torchscript", "exporter": "torch.jit.trace", "opset": None}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarning on the models' size checks; jit's deprecation warnings
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return Path(path)


def export_onnx(module: nn.Module, path: str | Path, metadata: dict, example: torch.Tensor, opset: int = OPSET,
                dynamo: bool = False) -> Path:
    """Export ``module`` to ONNX with a dynamic batch (and height/width if ``metadata["dynamic_size"]``), and
    write the metadata into ``metadata_props`` (one entry per key, JSON values).

    Raises:
        ExportError: onnx (or, with ``dynamo``, onnxscript) is not installed.
    """
    onnx = require("onnx")
    sizes = {2: "height", 3: "width"} if metadata["dynamic_size"] else {}
    exporter = "torch.onnx.export(dynamo=True)" if dynamo else "torch.onnx.export(dynamo=False)"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer warnings
        if dynamo:
            require("onnxscript")
            dim = torch.export.Dim
            step = metadata["size_multiple"]
            shape = {0: dim("batch", max=4096), **{a: dim(n, min=1, max=512) * step for a, n in sizes.items()}}
            program = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=opset, input_names=NAMES[0],
                                        output_names=NAMES[1], dynamic_shapes={"images": shape}, verbose=False)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            axes = {0: "batch", **sizes}
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=NAMES[0],
                              output_names=NAMES[1], dynamic_axes={NAMES[0][0]: axes, NAMES[1][0]: axes})
            proto = onnx.load_from_string(buffer.getvalue())
    for key, value in {**metadata, "format": "onnx", "exporter": exporter, "opset": opset}.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(proto, str(path))
    return Path(path)


def parity_inputs(metadata: dict, real: np.ndarray | None = None, batch_sizes=(1, 3), seed: int = 0) -> dict:
    """Inputs for :func:`parity`: ``{label: float32 (B, 3, H, W)}``: random at each batch size at the run's size,
    random at twice the size (when sizes are dynamic), and ``real`` uint8 images (N, S, S, 3) normalised."""
    generator, size = torch.Generator().manual_seed(seed), metadata["image_size"]
    shapes = [(b, size) for b in batch_sizes] + ([(2, 2 * size)] if metadata["dynamic_size"] else [])
    found = {f"random {b}x3x{s}x{s}": torch.randn(b, 3, s, s, generator=generator) for b, s in shapes}
    if real is not None and len(real):
        found[f"real {len(real)}x3x{size}x{size}"] = normalise(real, metadata["mean"], metadata["std"])
    return found


def parity(module: nn.Module, path: str | Path, inputs: dict) -> dict[str, float]:
    """Largest absolute probability difference between PyTorch (``module``) and the export at ``path`` (TorchScript
    via torch.jit.load, ONNX via onnxruntime on the CPU), per input of :func:`parity_inputs`."""
    exported = load_exported(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return {label: float((module(x) - exported.probs(x)).abs().max()) for label, x in inputs.items()}


def real_images(run_dir: str | Path, count: int = 3) -> np.ndarray | None:
    """A few uint8 images (N, S, S, 3) of the run's prepared data (test split first), or None if it is not here."""
    try:
        prepared = runs.load_run_data(run_dir)
    except (FileNotFoundError, KeyError, DataError):  # not prepared on this machine
        return None
    rows = prepared.indices("test")
    rows = rows if len(rows) else np.arange(len(prepared.images))
    return np.asarray(prepared.images[rows[:count]])


def available_formats() -> tuple[str, ...]:
    """The formats this environment can export and check: TorchScript always, ONNX when onnx and onnxruntime are
    installed (``pip install -r requirements-export.txt``; Colab has neither)."""
    has_onnx = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    return ("onnx", "torchscript") if has_onnx else ("torchscript",)


def export_run(run_dir: str | Path, out_dir: str | Path, formats=("onnx", "torchscript"), *, depth: int | None = None,
               check: bool = False, opset: int = OPSET, dynamo: bool = False) -> dict:
    """Export a run's best model (see the module docstring) and write the model card next to it.

    Args:
        run_dir: ``results/runs/<run id>``.
        out_dir: where ``model.onnx``, ``model.pt`` and ``MODEL_CARD.md`` go (created).
        formats: ``onnx`` and/or ``torchscript``.
        depth: UNet++ with deep supervision only: export the network pruned at this depth.
        check: measure parity (:func:`parity`) on random inputs and a few of the run's images.
        opset, dynamo: see :func:`export_onnx`.

    Returns:
        ``{"files": {format: path}, "card": path, "metadata": dict, "parity": {format: {label: max |Δp|}}}``.

    Raises:
        FileNotFoundError: not a run folder, or no best checkpoint.
        ExportError: an unknown format, a wrong depth, or a missing optional package.
    """
    unknown = sorted(set(formats) - set(FILES))
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or formats}; choose from {sorted(FILES)}.")
    for package in (("onnx", "onnxruntime") if check else ("onnx",)) if "onnx" in formats else ():
        require(package)  # before any work: say what to install
    module, metadata = prepare(run_dir, depth)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, metadata["image_size"], metadata["image_size"])
    files = {}
    for fmt in dict.fromkeys(formats):
        path = out_dir / FILES[fmt]
        files[fmt] = (export_onnx(module, path, metadata, example, opset, dynamo) if fmt == "onnx"
                      else export_torchscript(module, path, metadata, example))
    card = write_model_card(run_dir, {**metadata, "opset": opset}, files, out_dir)
    inputs = parity_inputs(metadata, real_images(run_dir)) if check else {}
    checked = {fmt: parity(module, path, inputs) for fmt, path in files.items()} if check else {}
    return {"files": files, "card": card, "metadata": metadata, "parity": checked}


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.evaluation.export RUN OUT_DIR [--format ...] [--depth N] [--check]``: errors as one line
    (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluation.export",
                                     description="Export a run's best model to ONNX and TorchScript, with a model card.")
    parser.add_argument("run", help="a run folder, e.g. results/runs/<run id>")
    parser.add_argument("out_dir", help="the output folder (model.onnx, model.pt, MODEL_CARD.md)")
    parser.add_argument("--format", nargs="+", default=["onnx", "torchscript"], help="onnx and/or torchscript (default both)")
    parser.add_argument("--depth", type=int, default=None, help="UNet++ with deep supervision: prune at this depth")
    parser.add_argument("--check", action="store_true", help="compare the export with PyTorch and print the difference")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--dynamo", action="store_true", help="ONNX with the dynamo exporter (needs onnxscript)")
    args = cli.add_debug(parser).parse_args(argv)
    done = export_run(args.run, args.out_dir, args.format, depth=args.depth, check=args.check, opset=args.opset,
                      dynamo=args.dynamo)
    for fmt, path in done["files"].items():
        print(f"✓ {fmt}: {path} ({path.stat().st_size / 1024:.0f} kB)")
    for fmt, figures in done["parity"].items():
        for label, diff in figures.items():
            print(f"  parity {fmt} {label}: max |p_torch - p_export| = {diff:.2e}")
    print(f"✓ model card: {done['card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
