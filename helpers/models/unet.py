"""UNet (Ronneberger et al., 2015) with batch norm and same padding.

Each encoder level is two 3x3 conv-BN-ReLU; 2x2 max pooling halves the size.
Each decoder level doubles the size with a 2x2 transposed convolution (which
also halves the channels), concatenates the encoder feature map of the same
size (the skip connection) and applies two conv-BN-ReLU again. A 1x1
convolution turns the last feature map into one channel of logits.

With `base=64` and `depth=4` (channels 64, 128, 256, 512, 1024) this is the
classic 31.0 M-parameter UNet. Same padding means the output has the input's
size, so H and W must be multiples of 2 ** depth.

With `encoder="resnet34"` (the `r34` configuration) a torchvision ResNet-34
replaces the conv stack (see `helpers.models.encoders`): depth 5, levels of
base, 64, 64, 128, 256 and 512 channels; the decoder is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from helpers.models.blocks import DoubleConv, check_input_size
from helpers.models.encoders import RESNET_LEVELS, backbone


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of a UNet.

    Attributes:
        base: Channels of the first level; level i has base * 2**i channels
            (with an encoder: channels of the full-resolution level 0 only).
        depth: Number of poolings (and of upsamplings).
        in_channels: Channels of the input images.
        encoder: None (the conv stack) or a pretrainable encoder, "resnet34".
    """

    base: int = 64
    depth: int = 4
    in_channels: int = 3
    encoder: str | None = None


UNET_CONFIGS: dict[str, UNetConfig] = {
    "paper": UNetConfig(base=64),  # 31.0 M parameters, the original network
    "small": UNetConfig(base=32),  # 7.8 M parameters, a quarter of the compute
    "cpu": UNetConfig(base=16),  # 1.9 M parameters, the cpu profile
    "tiny": UNetConfig(base=4),  # for tests and the smoke profile
    # 24.5 M parameters, 21.3 M of them ResNet-34
    "r34": UNetConfig(base=32, depth=RESNET_LEVELS, encoder="resnet34"),
}


class Up(nn.Module):
    """Decoder level: transposed-conv upsampling, skip concatenation, DoubleConv.

    Args:
        in_channels: Channels coming from the level below.
        out_channels: Channels of this level (and of the skip feature map).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, features: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample `features` (B, C_in, h, w) and fuse with `skip` (B, C_out, 2h, 2w)."""
        features = self.up(features)  # (B, C_out, 2h, 2w)
        return self.conv(torch.cat([skip, features], dim=1))  # (B, C_out, 2h, 2w)


class UNet(nn.Module):
    """UNet for binary segmentation: images (B, C, H, W) → logits (B, 1, H, W).

    Args:
        config: A UNetConfig (default: the paper configuration).
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        self.encoder, widths = backbone(config.encoder, config.in_channels,
                                        config.base, config.depth)
        if self.encoder is None:  # the plain stack, under its original names
            self.inc = DoubleConv(config.in_channels, widths[0])
            self.downs = nn.ModuleList(
                nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1]))
                for i in range(config.depth)
            )
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i])
                                 for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            images: Float tensor (B, C, H, W); H and W multiples of 2 ** depth.

        Returns:
            Logits (B, 1, H, W).
        """
        check_input_size(images, 2**self.config.depth, "UNet")
        skips = self._encode(images)
        features = skips.pop()  # the bottleneck is not a skip
        for up in self.ups:
            features = up(features, skips.pop())
        return self.head(features)  # (B, 1, H, W)

    def _encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of levels 0..depth; map i is (B, widths[i], H / 2**i, W / 2**i)."""
        if self.encoder is not None:
            return self.encoder(images)
        skips = [self.inc(images)]  # (B, base, H, W)
        for down in self.downs:
            skips.append(down(skips[-1]))  # (B, base * 2**i, H / 2**i, W / 2**i)
        return skips
