"""Encoders of UNet and UNet++: the plain conv stack's channels, or a torchvision ResNet-34.

Both decoders see an encoder as a column of feature maps, one per level: level i
has `channels[i]` channels at 1 / 2**i of the input size. `backbone(...)` is
the one place that decides those channels for both models:

- no encoder (`encoder=None`): the models build their own DoubleConv stack
  (UNet's `inc`/`downs`, UNet++'s nodes x_{i}_0) with base * 2**i channels;
- `encoder="resnet34"`: a `ResNetEncoder` with levels

      level 0  (B,  base, H,    W)     DoubleConv on the images (trained from scratch)
      level 1  (B,   64, H/2,  W/2)    conv1 → bn1 → relu (the ResNet stem)
      level 2  (B,   64, H/4,  W/4)    maxpool → layer1
      level 3  (B,  128, H/8,  W/8)    layer2
      level 4  (B,  256, H/16, W/16)   layer3
      level 5  (B,  512, H/32, W/32)   layer4

The ResNet parts keep torchvision's names (`encoder.conv1`, `encoder.layer3.2.bn1`, ...),
so ImageNet weights load by prefix (see `helpers.models.encoder_weights`). The
ResNet is built with `weights=None`: nothing is ever downloaded here.
"""

from __future__ import annotations

import torch
from torch import nn

from helpers.models.blocks import DoubleConv

ENCODERS = {"resnet34": "resnet34"}  # name → torchvision builder's name (called with weights=None)
RESNET_LEVELS = 5  # poolings of a ResNet: the stem (2x), its max pool (2x) and layer2-4 (2x each)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet as a column of feature maps, plus a full-resolution level 0.

    Args:
        name: Key of ENCODERS, e.g. "resnet34".
        in_channels: Channels of the input images (3 for ImageNet weights).
        base: Channels of the full-resolution level 0.
        depth: Deepest level kept (1..5); layers below it are not built.
    """

    def __init__(self, name: str = "resnet34", in_channels: int = 3, base: int = 16, depth: int = RESNET_LEVELS) -> None:
        super().__init__()
        if not 1 <= depth <= RESNET_LEVELS:
            raise ValueError(f"a {name} encoder has depth 1 to {RESNET_LEVELS}; got depth={depth} — use depth=5")
        import torchvision  # only here: importing it costs seconds, and only ResNet encoders need it

        resnet = getattr(torchvision.models, ENCODERS[name])(weights=None)
        self.name, self.depth = name, depth
        self.full = DoubleConv(in_channels, base)
        self.conv1 = resnet.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.channels = [base, resnet.bn1.num_features]
        for k in range(1, depth):  # level k + 1 is layer k
            layer = getattr(resnet, f"layer{k}")
            self.add_module(f"layer{k}", layer)
            self.channels.append(_out_channels(layer))

    def forward(self, images: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Feature maps of levels 0..depth; only the stages they need are computed.

        Args:
            images: (B, C, H, W) with H and W multiples of 2 ** depth.
            depth: Deepest level to compute (default: all the encoder has).

        Returns:
            List of depth + 1 maps; map i is (B, channels[i], H / 2**i, W / 2**i).
        """
        depth = self.depth if depth is None else depth
        features = [self.full(images)]  # (B, base, H, W)
        if depth >= 1:
            features.append(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/2, W/2)
        for level in range(2, depth + 1):
            previous = self.maxpool(features[-1]) if level == 2 else features[-1]  # layer1 follows the max pool
            features.append(getattr(self, f"layer{level - 1}")(previous))  # (B, channels[level], H/2**level, W/2**level)
        return features


def _out_channels(layer: nn.Sequential) -> int:
    """Output channels of a ResNet layer (its last block's last batch norm)."""
    return [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def backbone(encoder: str | None, in_channels: int, base: int, depth: int) -> tuple[ResNetEncoder | None, list[int]]:
    """The encoder of a UNet or UNet++ and the channels of its levels 0..depth.

    Args:
        encoder: Key of ENCODERS, or None for the plain stack.
        in_channels: Channels of the input images.
        base: Channels of level 0.
        depth: Deepest level (number of poolings).

    Returns:
        (encoder, channels): a ResNetEncoder, or None for the plain stack whose
        level i has base * 2**i channels.

    Raises:
        ValueError: If the encoder name is unknown or the depth does not fit it.
    """
    if encoder is None:
        return None, [base * 2**i for i in range(depth + 1)]
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)} or None (the plain stack)")
    module = ResNetEncoder(encoder, in_channels, base, depth)
    return module, list(module.channels)
