"""Start the ResNet-34 encoder of a UNet or UNet++ (`r34` configs) from torchvision's ImageNet weights.

Only when asked: `load_encoder_weights(model, weights=path)` reads a local file, a
torchvision state dict saved with

    torch.save(torchvision.models.resnet34(weights="IMAGENET1K_V1").state_dict(), "resnet34.pt")

and `load_encoder_weights(model, download=True)` goes through the torch hub
cache (`torch.hub.load_state_dict_from_url`, the way torchvision itself and the
TransUNet loader fetch weights): the file `<hub dir>/checkpoints/resnet34-b627a593.pth`
is read if it is there (set TORCH_HOME to put the hub dir elsewhere, e.g. on
Drive) and downloaded from torchvision's URL otherwise. Every torchvision key
but `fc.*` lands under `encoder.` with the same name; the full-resolution level
0, the decoder and the heads keep their random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from helpers.models.transunet_weights import LoadReport

_WEIGHTS = {"resnet34": "ResNet34_Weights"}  # encoder name → its torchvision weights enum (IMAGENET1K_V1)


def _weights(encoder: str):
    """The torchvision ImageNet weights of an encoder (torchvision imported only here: it costs seconds)."""
    import torchvision  # heavy (seconds): only where ImageNet weights are read

    return getattr(torchvision.models, _WEIGHTS[encoder]).IMAGENET1K_V1
_SCRATCH = ("encoder.full.",)  # encoder parts that have no ImageNet counterpart (the full-resolution level 0)


def hub_file(encoder: str = "resnet34") -> Path:
    """Where the torch hub cache keeps an encoder's ImageNet weights (read there without a download)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(encoder).url).name


def _save_hint(encoder: str) -> str:
    return f"torch.save(torchvision.models.{encoder}(weights='IMAGENET1K_V1').state_dict(), '{encoder}.pt')"


def _read(path: Path, encoder: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file; errors name the file and how to make a fitting one."""
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r}: no such file — check the path, or save one with {_save_hint(encoder)}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # truncated file, not a torch file, pickled objects
        raise ValueError(f"{path} could not be read as a state dict ({error}); save one with {_save_hint(encoder)}") from error
    return state


def _download(encoder: str) -> dict[str, torch.Tensor]:
    """The weights from the torch hub cache, downloaded there first if missing."""
    weights = _weights(encoder)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True, weights_only=True)
    except OSError as error:  # URLError, HTTPError, socket timeouts and connection errors
        raise RuntimeError(
            f"Could not download torchvision's {encoder} ImageNet weights ({weights}) from {weights.url}: the machine "
            f"seems offline ({error}). On a machine with internet access run {_save_hint(encoder)}, copy the file here "
            f"and pass weights='{encoder}.pt'; or put torchvision's file at {hub_file(encoder)} (the torch hub cache; "
            "set TORCH_HOME to move it), where runs with pretrained find it; or take the model out of pretrained."
        ) from error


def _targets(model: nn.Module, state: object, where: str) -> dict[str, torch.Tensor]:
    """Model key → tensor for every encoder tensor the model has; checks keys and shapes first."""
    encoder = model.encoder.name
    if not isinstance(state, dict) or "layer1.0.conv1.weight" not in state:
        raise ValueError(f"{where} does not look like a torchvision {encoder} state dict (no key 'layer1.0.conv1.weight'); "
                         f"save one with {_save_hint(encoder)}")
    own = model.state_dict()
    wanted = [key for key in own if key.startswith("encoder.") and not key.startswith(_SCRATCH)]
    lacking = [key for key in wanted if key.removeprefix("encoder.") not in state]
    if lacking:
        raise ValueError(f"{where} lacks {len(lacking)} tensors of a {encoder} (e.g. {lacking[0].removeprefix('encoder.')!r}); "
                         f"is it another network's? Save the right one with {_save_hint(encoder)}")
    for key in wanted:
        source = state[key.removeprefix("encoder.")]
        if not isinstance(source, torch.Tensor) or source.shape != own[key].shape:
            shape = tuple(source.shape) if isinstance(source, torch.Tensor) else type(source).__name__
            raise ValueError(f"{where}: tensor {key.removeprefix('encoder.')!r} has shape {shape} but the model's {key} "
                             f"has {tuple(own[key].shape)}; ImageNet weights fit a {encoder} on 3-channel images — check that "
                             f"the model has in_channels=3 and that the file is a {encoder}'s "
                             f"(save one with {_save_hint(encoder)})")
    return {key: state[key.removeprefix("encoder.")] for key in wanted}


def load_encoder_weights(model: nn.Module, weights: str | Path | None = None, download: bool = False) -> LoadReport:
    """Fill the encoder of a UNet or UNet++ built with an encoder (`r34`) with ImageNet weights, in place.

    Args:
        model: A UNet or UNetPlusPlus whose config has encoder="resnet34".
        weights: Path of a saved torchvision resnet34 state dict, or None.
        download: Without a path, read the torch hub cache's copy, downloading it there if missing (needs internet).

    Returns:
        A LoadReport: loaded (encoder keys), missing (level 0, decoder, heads) and unused ("resnet34:fc.*") keys.

    Raises:
        ValueError: If the model has no encoder, nothing is to be loaded, or the file is not a fitting state dict.
        FileNotFoundError: If the file does not exist.
        RuntimeError: If a download fails (the machine seems offline).
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "name"):
        name = type(model).__name__
        raise ValueError(f"this {name} has no pretrainable encoder (its config has encoder=None): choose the r34 "
                         "configuration, with --model-config unet=r34 (or unetpp=r34) on the command line, "
                         "SETTINGS = {\"model_configs\": {\"unet\": \"r34\"}} in a notebook, or "
                         "build_model('unet', 'r34') in code")
    if weights is not None:
        where, state = str(weights), _read(Path(weights), encoder.name)
    elif download:
        where, state = f"the {encoder.name} weights from the torch hub cache ({hub_file(encoder.name)})", _download(encoder.name)
    else:
        raise ValueError("nothing to load: pass weights='resnet34.pt' (a saved torchvision state dict) or download=True")
    targets = _targets(model, state, where)
    own = model.state_dict()
    with torch.no_grad():
        for key, value in targets.items():
            own[key].copy_(value)
    used = {key.removeprefix("encoder.") for key in targets}
    return LoadReport(loaded=list(targets), missing=[key for key in own if key not in targets],
                      unused=[f"{encoder.name}:{key}" for key in state if key not in used])
