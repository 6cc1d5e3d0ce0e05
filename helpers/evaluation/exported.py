"""Exported models read back: their metadata, and an adapter that lets the kit's inference run them.

A file written by :mod:`helpers.evaluation.export` (TorchScript ``.pt`` or ONNX ``.onnx``) maps normalised float32
images (B, 3, H, W) to lesion probabilities (B, 1, H, W) and carries its preprocessing as JSON metadata: in an
ONNX file one ``metadata_props`` entry per key (its value JSON-encoded), in a TorchScript file the extra file
``kit.json``. :func:`read_metadata` reads either back without running anything.

:class:`ExportedModel` follows the kit's model contract (images → logits, with a parameter that says its device),
so :func:`helpers.evaluation.inference.iter_probs`, its flip TTA and ``predict.py`` run an export exactly as they
run a run folder's model; its :meth:`~ExportedModel.to_input` normalises uint8 images with the file's own mean and
std. ONNX runs on the CPU (onnxruntime's CPU provider), TorchScript on any device.
"""
from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data.loaders import to_model_input

METADATA_FILE = "kit.json"  # the TorchScript extra file holding the metadata
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript"}
INSTALL = "pip install -r requirements-export.txt"


class ExportError(ValueError):
    """An export cannot be written or read; the message names the file and says what to do."""


def require(module: str):
    """Import an optional export package (``onnx``, ``onnxruntime``, ``onnxscript``), or say how to install it.

    Raises:
        ExportError: the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f"{module} is not installed (ONNX export and checks are an optional extra): "
                          f"{INSTALL}") from err


def is_export(path: str | Path) -> bool:
    """True for a file whose suffix an export has (``.onnx``, ``.pt``); a run folder is not one."""
    return Path(path).is_file() and Path(path).suffix.lower() in SUFFIXES


def read_metadata(path: str | Path) -> dict:
    """The metadata an export carries: image size, mean, std, threshold, model, run id, opset...

    Raises:
        FileNotFoundError: no such file.
        ExportError: not an export of this kit (e.g. a ``best.pt`` checkpoint), or onnx is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; export a run with python -m helpers.evaluation.export.")
    kind = SUFFIXES.get(path.suffix.lower())
    onnx = require("onnx") if kind == "onnx" else None
    try:
        if kind == "onnx":
            proto = onnx.load(str(path), load_external_data=False)
            found = {p.key: json.loads(p.value) for p in proto.metadata_props}
        elif kind == "torchscript" and zipfile.is_zipfile(path):  # TorchScript: a zip with <archive>/extra/kit.json
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
                found = json.loads(archive.read(names[0])) if names else {}
        else:
            found = {}
    except Exception as err:  # noqa: BLE001 (protobuf's DecodeError, zipfile's BadZipFile, a JSON error...)
        raise ExportError(f"{path} is unreadable (truncated or corrupt: {type(err).__name__}: {err}); export the run "
                          f"again with python -m helpers.evaluation.export RUN OUT_DIR.") from None
    if "image_size" not in found:
        raise ExportError(f"{path} is not a model exported by this kit (no kit metadata in it); a checkpoint such as "
                          f"best.pt is not an export: pass its run folder, or export it with "
                          f"python -m helpers.evaluation.export RUN OUT_DIR.")
    return found


def normalise(images, mean, std) -> torch.Tensor:
    """uint8 images (B, H, W, 3) → float32 (B, 3, H, W) with an export's mean and std
    (:func:`helpers.data.loaders.to_model_input`, the arithmetic training used)."""
    return to_model_input(np.asarray(images), mean=mean, std=std)


class ExportedModel(nn.Module):
    """An exported file as a kit model: ``probs`` gives its probabilities, ``forward`` their logits.

    Args:
        path: a ``.onnx`` or TorchScript ``.pt`` export.
        device: where TorchScript runs (default the CPU); ONNX always runs on the CPU.

    Attributes:
        metadata: what :func:`read_metadata` returns.
        image_size: the side the model was trained at (and, when ``metadata["dynamic_size"]`` is false, the only one).
    """

    def __init__(self, path: str | Path, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.path, self.metadata = Path(path), read_metadata(path)
        self.image_size = int(self.metadata["image_size"])
        device = torch.device("cpu" if device is None or self.path.suffix.lower() == ".onnx" else device)
        self.anchor = nn.Parameter(torch.zeros(0, device=device), requires_grad=False)  # says the device
        if self.path.suffix.lower() == ".onnx":
            ort = require("onnxruntime")
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.script = None
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in 2.14 (and still works)
                self.session, self.script = None, torch.jit.load(str(self.path), map_location=device).eval()

    def probs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised float32 images (B, 3, H, W) → probabilities float32 (B, 1, H, W), on the inputs' device."""
        if self.script is not None:
            return self.script(inputs.float())
        name = self.session.get_inputs()[0].name
        out = self.session.run(None, {name: inputs.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(inputs.device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) = logit(probs): inference applies the sigmoid again (a round trip within ~1e-7)."""
        return torch.logit(self.probs(inputs).double()).float()

    def to_input(self, images) -> torch.Tensor:
        """uint8 images (B, H, W, 3) → the normalised float32 input (B, 3, H, W), with the export's mean and std."""
        return normalise(images, self.metadata["mean"], self.metadata["std"])

    def settings(self) -> dict:
        """Threshold, TTA and post-processing the export was made with (``predict.run_settings``'s keys)."""
        meta = self.metadata
        return {"threshold": float(meta["threshold"]), "tta": bool(meta["tta"]), "post": bool(meta["postprocess"])}


def load_exported(path: str | Path, device: str | torch.device | None = None) -> ExportedModel:
    """An export as an :class:`ExportedModel` in eval mode (see there)."""
    return ExportedModel(path, device).eval()
