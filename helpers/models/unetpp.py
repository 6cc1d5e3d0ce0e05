"""UNet++ (Zhou et al., 2018): UNet with nested, dense skip pathways.

Node x_{i}_{j} sits at depth i (i poolings) and column j. The backbone column
x_{i}_0 is a plain encoder; every other node fuses all earlier nodes of its row
with the bilinearly upsampled node below-left:

    x_{i}_{j} = block([x_{i}_0, ..., x_{i}_{j-1}, up(x_{i+1}_{j-1})])

Each block is two 3x3 conv-BN-ReLU (a "VGG block"). With `base=32` (filters
32, 64, 128, 256, 512) the network has 9.0 M parameters.

Deep supervision puts a 1x1 head on each of x_0_1 ... x_0_4: in training mode
the model returns the list of their logits (the loss averages them); in eval
mode it returns the logits of one head. Setting `prune_depth` to L (1..depth)
makes eval use head x_0_L and compute only the nodes it needs (the paper's
pruned UNet++ L^L, faster at inference).

With `encoder="resnet34"` (the `r34` configuration) the backbone column x_{i}_0
is a torchvision ResNet-34 (see `helpers.models.encoders`): depth 5, rows of
base, 64, 64, 128, 256 and 512 filters; the nested nodes and heads are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from helpers.models.blocks import DoubleConv, check_input_size
from helpers.models.encoders import RESNET_LEVELS, backbone


@dataclass(frozen=True)
class UNetPPConfig:
    """Hyper-parameters of a UNet++.

    Attributes:
        base: Filters of row 0; row i has base * 2**i filters (with an encoder:
            filters of row 0 only).
        depth: Number of poolings (the paper's L = 4).
        in_channels: Channels of the input images.
        deep_supervision: Put a head on every x_0_j and return all of them in training.
        prune_depth: Eval output from head x_0_{prune_depth} only (needs deep supervision);
            None uses the deepest head.
        encoder: None (the conv stack) or a pretrainable encoder, "resnet34".
    """

    base: int = 32
    depth: int = 4
    in_channels: int = 3
    deep_supervision: bool = False
    prune_depth: int | None = None
    encoder: str | None = None


UNETPP_CONFIGS: dict[str, UNetPPConfig] = {
    "paper": UNetPPConfig(base=32),  # 9.0 M parameters
    "small": UNetPPConfig(base=16),  # 2.3 M parameters
    "cpu": UNetPPConfig(base=8),  # 0.57 M parameters: about a cpu UNet's cost per image
    "tiny": UNetPPConfig(base=4),  # for tests and the smoke profile
    # 26.3 M parameters, 21.3 M of them ResNet-34
    "r34": UNetPPConfig(base=16, depth=RESNET_LEVELS, encoder="resnet34"),
}


class UNetPlusPlus(nn.Module):
    """UNet++ for binary segmentation: images (B, C, H, W) → logits (B, 1, H, W).

    Args:
        config: A UNetPPConfig (default: the paper configuration).
    """

    def __init__(self, config: UNetPPConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetPPConfig()
        self.encoder, self.filters = backbone(config.encoder, config.in_channels,
                                              config.base, config.depth)
        for i in range(config.depth + 1):
            for j in range(config.depth + 1 - i):
                if j > 0 or self.encoder is None:  # an encoder is the column x_{i}_0
                    self.add_module(f"x_{i}_{j}", self._node(i, j))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        num_heads = config.depth if config.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(self.filters[0], 1, kernel_size=1)
                                   for _ in range(num_heads))
        self.prune_depth = config.prune_depth

    def _node(self, i: int, j: int) -> DoubleConv:
        """Block of node x_{i}_{j}: its input is j same-row maps plus one upsampled map (or the
        pooled one)."""
        if j == 0:
            in_channels = self.config.in_channels if i == 0 else self.filters[i - 1]
        else:
            in_channels = j * self.filters[i] + self.filters[i + 1]
        return DoubleConv(in_channels, self.filters[i])

    @property
    def prune_depth(self) -> int | None:
        """Depth L of the head used in eval mode (None: the deepest)."""
        return self._prune_depth

    @prune_depth.setter
    def prune_depth(self, value: int | None) -> None:
        if value is not None and not self.config.deep_supervision:
            raise ValueError("prune_depth needs the deep-supervision heads; build with "
                             "deep_supervision=True")
        if value is not None and not 1 <= value <= self.config.depth:
            raise ValueError(f"prune_depth must be between 1 and {self.config.depth} or None; "
                             f"got {value}")
        self._prune_depth = value

    def _nodes(self, images: torch.Tensor, depth: int) -> dict[tuple[int, int], torch.Tensor]:
        """Compute every node x_{i}_{j} with i + j <= depth, diagonal by diagonal."""
        nodes: dict[tuple[int, int], torch.Tensor] = {}
        if self.encoder is not None:  # x_{i}_0 for i <= depth, first
            nodes.update({(i, 0): features
                          for i, features in enumerate(self.encoder(images, depth))})
        for diagonal in range(depth + 1):
            for i in range(diagonal, -1, -1):
                j = diagonal - i
                if (i, j) in nodes:
                    continue
                block = getattr(self, f"x_{i}_{j}")
                if j == 0:
                    inputs = images if i == 0 else self.pool(nodes[(i - 1, 0)])
                else:
                    row = [nodes[(i, k)] for k in range(j)]
                    inputs = torch.cat([*row, self.up(nodes[(i + 1, j - 1)])], dim=1)
                nodes[(i, j)] = block(inputs)  # (B, base * 2**i, H / 2**i, W / 2**i)
        return nodes

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment a batch.

        Args:
            images: Float tensor (B, C, H, W); H and W multiples of 2 ** depth.

        Returns:
            Logits (B, 1, H, W); with deep supervision in training mode, the list
            of logits of heads x_0_1 ... x_0_depth, each (B, 1, H, W).
        """
        check_input_size(images, 2**self.config.depth, "UNet++")
        deep = self.config.deep_supervision
        if deep and self.training:
            nodes = self._nodes(images, self.config.depth)
            return [head(nodes[(0, j + 1)]) for j, head in enumerate(self.heads)]
        depth = self.prune_depth or self.config.depth
        nodes = self._nodes(images, depth)
        head = self.heads[depth - 1] if deep else self.heads[0]
        return head(nodes[(0, depth)])  # (B, 1, H, W)
