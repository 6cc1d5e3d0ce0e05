"""Building blocks shared by the segmentation models.

UNet, UNet++ and the TransUNet decoder all use the same two pieces: a 3x3
convolution followed by batch norm and ReLU, and two of those in a row (what
the UNet paper calls a "double conv" and the UNet++ code a "VGG block"). The
convolutions have no bias because batch norm follows them.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (same padding, no bias) → BatchNorm → ReLU.

    Args:
        in_channels: Channels of the input feature map.
        out_channels: Channels of the output feature map.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two ConvBNReLU in a row; keeps the spatial size.

    Args:
        in_channels: Channels of the input feature map.
        out_channels: Channels of the output feature map.
        mid_channels: Channels between the two convolutions (default: out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 mid_channels: int | None = None) -> None:
        mid_channels = mid_channels or out_channels
        super().__init__(ConvBNReLU(in_channels, mid_channels),
                         ConvBNReLU(mid_channels, out_channels))


def check_input_size(images: torch.Tensor, multiple: int, model_name: str) -> None:
    """Raise a clear error unless images are (B, 3, H, W) with H and W multiples of `multiple`.

    Args:
        images: Input batch, expected shape (B, 3, H, W).
        multiple: Required divisor of H and W (2 ** number of downsamplings).
        model_name: Model name used in the error message.

    Raises:
        ValueError: If the tensor is not 4-D or H or W is not a multiple of `multiple`.
    """
    if images.dim() != 4:
        raise ValueError(
            f"{model_name} expects images of shape (B, C, H, W); got {tuple(images.shape)} — "
            "add a batch dimension with images.unsqueeze(0)"
        )
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if height % multiple or width % multiple:
        side = max(multiple, 256 // multiple * multiple)
        raise ValueError(
            f"{model_name} needs input height and width that are multiples of {multiple}; "
            f"got {height}x{width} — resize or pad to e.g. {side}x{side}"
        )
