"""Initialise a TransUNet from torchvision's ImageNet ResNet-50 and ViT-B/16 weights.

The official TransUNet starts from a jointly pretrained R50+ViT-B/16 hybrid
(ImageNet-21k). Those weights are not in torchvision, so this module uses the
two torchvision models instead:

- `resnet50` (IMAGENET1K_V1) → the stem, stages 1-2 and the first six blocks of
  stage 3 (torchvision's layer3 has six; the hybrid's has nine). The three extra
  blocks start as identities: their last BatchNorm scale is set to zero.
- `vit_b_16` (IMAGENET1K_V1) → the 12 transformer layers (q/k/v from the fused
  in_proj, attention output, MLP, LayerNorms), the final LayerNorm, and the
  position embeddings without the class token, resized bicubically from 14x14
  to the model's grid. The 1x1 patch embedding (it sees ResNet features, not
  pixels), the decoder and the head keep their random initialisation.

Weights come from a local file (a torchvision state dict saved with
`torch.save(model.state_dict(), path)`) or, only with `download=True`, from
torchvision's weight enums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from helpers.models.transunet import TransUNet, resize_pos_embed

if TYPE_CHECKING:
    import torchvision

_RESNET_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
_VIT_LAYER_KEYS = {
    "ln_1": "attention_norm",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "ffn_norm",
    "mlp.0": "ffn.0",
    "mlp.3": "ffn.3",
}


@dataclass
class LoadReport:
    """What `load_pretrained` did.

    Attributes:
        loaded: Model state keys filled from the weights.
        missing: Model state keys that keep their initialisation.
        unused: Weight-file keys, prefixed with the network's name ("resnet50:", "vit_b_16:", "resnet34:"),
            with no place in the model.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        groups = sorted({_module_group(key) for key in self.missing})
        return (
            f"loaded {len(self.loaded)} tensors; {len(self.missing)} keep their initialisation "
            f"({', '.join(groups)}); {len(self.unused)} tensors of the weight files unused"
        )


def _module_group(key: str) -> str:
    """Short module name of a state key: 'backbone.layer3.6', 'transformer.patch_embed', 'decoder', 'x_i_j'."""
    parts = key.split(".")[:-1] or key.split(".")
    if parts[0].startswith("x_"):  # UNet++ nodes: one group, not fifteen
        return "x_i_j"
    keep = {"backbone": 3, "transformer": 2, "encoder": 2}.get(parts[0], 1)
    return ".".join(parts[:keep])


def _fetch(path: str | Path | None, weights: torchvision.models.WeightsEnum, download: bool, argument: str):
    """Read a torchvision state dict from `path`, or download `weights` if allowed; None if neither."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{argument}={str(path)!r}: no such file — check the path")
        return torch.load(path, weights_only=True, map_location="cpu")
    if not download:
        return None
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:  # URLError, HTTPError, socket timeouts and connection errors
        model_fn = "resnet50" if "ResNet" in type(weights).__name__ else "vit_b_16"
        raise RuntimeError(
            f"Could not download torchvision's {model_fn} ImageNet weights ({weights}) from {weights.url}: "
            f"the machine seems offline ({error}). Download them on a machine with internet access with "
            f"torch.save(torchvision.models.{model_fn}(weights='IMAGENET1K_V1').state_dict(), '{model_fn}.pt'), "
            f"copy the file here and pass {argument}='{model_fn}.pt'; or set pretrained off."
        ) from error


Targets = dict[str, tuple[str, torch.Tensor]]  # model key → (weight-file key, tensor)


def _map_resnet(state: dict[str, torch.Tensor]) -> Targets:
    """torchvision resnet50 keys → TransUNet keys (the stem and stages 1-3)."""
    return {f"backbone.{key}": (key, value) for key, value in state.items() if key.startswith(_RESNET_PREFIXES)}


def _map_vit(state: dict[str, torch.Tensor], model: TransUNet) -> Targets:
    """torchvision vit_b_16 keys → TransUNet keys; position embeddings resized to the model grid."""
    targets = {}
    for key, value in state.items():
        if key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key.removeprefix("encoder.layers.encoder_layer_").split(".", 1)
            for source, target in _VIT_LAYER_KEYS.items():
                if rest == source or rest.startswith(source + "."):
                    targets[f"transformer.layers.{index}.{target}{rest[len(source):]}"] = (key, value)
        elif key.startswith("encoder.ln."):
            targets[key.replace("encoder.ln.", "transformer.norm.")] = (key, value)
    pos_embed = state["encoder.pos_embedding"][:, 1:].float()  # drop the class token: (1, 196, 768)
    side = int(pos_embed.shape[1] ** 0.5)
    resized = resize_pos_embed(pos_embed, model.transformer.grid, (side, side))  # (1, gh * gw, 768)
    targets["transformer.pos_embed"] = ("encoder.pos_embedding", resized)
    return targets


def _load_one(model: TransUNet, name: str, state: dict, targets: Targets, report: LoadReport) -> None:
    """Copy the targets the model has (after checking every shape) and record loaded and unused keys."""
    own = model.state_dict()
    targets = {key: pair for key, pair in targets.items() if key in own}  # e.g. fewer layers than the file
    for key, (_, value) in targets.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"the {name} tensor for {key} has shape {tuple(value.shape)} but the model has "
                f"{tuple(own[key].shape)}; torchvision's weights fit the 'paper' configuration (resnet_width 64, "
                "hidden_size 768, mlp_dim 3072) — build with that configuration or leave these weights out"
            )
    with torch.no_grad():
        for key, (_, value) in targets.items():
            own[key].copy_(value)
    used = {source for source, _ in targets.values()}
    report.loaded += list(targets)
    report.unused += [f"{name}:{key}" for key in state if key not in used]


def _check(state: object, required: str, what: str) -> None:
    """Raise if `state` is not a torchvision state dict holding `required`."""
    if not isinstance(state, dict) or required not in state:
        raise ValueError(
            f"{what} does not look like a torchvision state dict (no key {required!r}); "
            "save one with torch.save(model.state_dict(), path)"
        )


def load_pretrained(
    model: TransUNet,
    resnet_weights: str | Path | None = None,
    vit_weights: str | Path | None = None,
    download: bool = False,
) -> LoadReport:
    """Fill a TransUNet with torchvision ImageNet weights, in place.

    Args:
        model: The TransUNet to initialise (the 'paper' configuration for ViT weights).
        resnet_weights: Path of a saved torchvision resnet50 state dict, or None.
        vit_weights: Path of a saved torchvision vit_b_16 state dict, or None.
        download: Fetch the weights that have no path from torchvision (needs internet).

    Returns:
        A LoadReport listing loaded, missing (still initial) and unused keys.

    Raises:
        ValueError: If nothing is to be loaded, a file is not a fitting state dict,
            or a shape does not fit the model.
        RuntimeError: If a download fails (the machine seems offline).
    """
    import torchvision  # here: importing it costs seconds, and only pretrained TransUNets need it

    resnet = _fetch(resnet_weights, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, download, "resnet_weights")
    vit = _fetch(vit_weights, torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1, download, "vit_weights")
    if resnet is None and vit is None:
        raise ValueError("nothing to load: pass resnet_weights and/or vit_weights paths, or download=True")
    report = LoadReport()
    if resnet is not None:
        _check(resnet, "layer1.0.conv1.weight", f"the resnet50 weights ({resnet_weights or 'download'})")
        _load_one(model, "resnet50", resnet, _map_resnet(resnet), report)
        _zero_extra_blocks(model, resnet)
    if vit is not None:
        _check(vit, "encoder.pos_embedding", f"the vit_b_16 weights ({vit_weights or 'download'})")
        _load_one(model, "vit_b_16", vit, _map_vit(vit, model), report)
    loaded = set(report.loaded)
    report.missing = [key for key in model.state_dict() if key not in loaded]
    return report


def _zero_extra_blocks(model: TransUNet, resnet: dict[str, torch.Tensor]) -> None:
    """Make stage-3 blocks that torchvision's layer3 lacks start as identities (zero last BN scale)."""
    for index, block in enumerate(model.backbone.layer3):
        if f"layer3.{index}.bn3.weight" not in resnet:
            torch.nn.init.zeros_(block.bn3.weight)
