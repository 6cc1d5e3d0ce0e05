"""TransUNet (Chen et al., 2021): the R50-ViT-B/16 hybrid encoder and the cascaded upsampler.

Encoder. A ResNet-50 stem and three stages bring the images to 1/16 of their
size (1024 channels). As in the hybrid ViT (and the official code), stage 4 is
dropped and its blocks go to stage 3: (3, 4, 9) bottlenecks. The layers follow
torchvision's ResNet-50 layout (BatchNorm, stride in the 3x3 convolution,
torchvision's module names) instead of the official ResNetV2 (StdConv +
GroupNorm), so that torchvision's ImageNet ResNet-50 weights load directly
(see transunet_weights.py). A 1x1 convolution embeds each 1/16 position as a
token of `hidden_size` (768), learned position embeddings are added, and 12
pre-norm transformer layers (12 heads, MLP 3072) follow.

Decoder (CUP). The tokens are reshaped to a (hidden, H/16, W/16) map, a 3x3
conv-BN-ReLU gives 512 channels, and four blocks (bilinear x2 upsampling,
concatenation with the 1/8, 1/4 and 1/2 encoder skips, two 3x3 conv-BN-ReLU)
with (256, 128, 64, 16) channels reach full size; a 3x3 convolution gives the
logits. The paper configuration has 105.3 M parameters (105.28 M at 224 px,
as published). Position embeddings are stored for the grid of `img_size` and
resized bicubically on the fly to the input's grid, on every call: at the stored
grid the bicubic resize is exactly the identity (weights 0, 1, 0, 0), and with no
branch on the size torch.export keeps height and width symbolic (ONNX export).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.models.blocks import ConvBNReLU, DoubleConv, check_input_size


@dataclass(frozen=True)
class TransUNetConfig:
    """Hyper-parameters of a TransUNet.

    Attributes:
        img_size: Side the position embeddings are stored for (grid img_size / 16).
        in_channels: Channels of the input images.
        resnet_width: Stem channels; stage i outputs resnet_width * 4 * 2**i channels.
        resnet_blocks: Bottlenecks in stages 1, 2 and 3.
        hidden_size: Token width of the transformer.
        num_layers: Transformer layers.
        num_heads: Attention heads per layer.
        mlp_dim: Hidden width of the transformer MLP.
        dropout: Dropout on embeddings and MLP outputs.
        attention_dropout: Dropout on attention weights and the attention output.
        head_channels: Channels after the first decoder convolution.
        decoder_channels: Channels of the four upsampling blocks.
        n_skip: How many encoder skips the decoder uses (0-3: 1/8, 1/4, 1/2).
    """

    img_size: int = 256
    in_channels: int = 3
    resnet_width: int = 64
    resnet_blocks: tuple[int, int, int] = (3, 4, 9)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.0
    head_channels: int = 512
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 16)
    n_skip: int = 3


TRANSUNET_CONFIGS: dict[str, TransUNetConfig] = {
    # R50-ViT-B/16 as in the paper: 105.3 M parameters.
    "paper": TransUNetConfig(),
    # torchvision's ResNet-50 stages 1-3 as they are (3, 4, 6) and a ViT-S-sized transformer:
    # 25.3 M parameters, 34 GFLOPs per 256-px image (paper: 77; UNet paper: 96).
    "small": TransUNetConfig(resnet_blocks=(3, 4, 6), hidden_size=384, num_layers=6, num_heads=6,
                             mlp_dim=1536),
    # The cpu profile's: a narrow two-block-per-stage CNN and a 4-layer, 128-wide transformer,
    # 1.3 M parameters.
    "cpu": TransUNetConfig(
        img_size=128, resnet_width=16, resnet_blocks=(2, 2, 2), hidden_size=128, num_layers=4,
        num_heads=4, mlp_dim=512, head_channels=64, decoder_channels=(64, 32, 16, 8),
    ),
    "tiny": TransUNetConfig(
        img_size=64, resnet_width=8, resnet_blocks=(1, 1, 1), hidden_size=32, num_layers=2,
        num_heads=2, mlp_dim=64, head_channels=16, decoder_channels=(16, 8, 8, 4),
    ),
}


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int],
                     old_grid: tuple[int, int]) -> torch.Tensor:
    """Resize position embeddings (1, gh*gw, D) from grid `old_grid` to `new_grid` bicubically.

    Args:
        pos_embed: Position embeddings (1, old_h * old_w, D), row-major over the grid.
        new_grid: Target (height, width) in tokens.
        old_grid: Current (height, width) in tokens.

    Returns:
        Position embeddings (1, new_h * new_w, D).
    """
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


class ResNetBackbone(nn.Module):
    """ResNet-50 stem and three stages in torchvision's layout; returns the 1/16 map and the
    skips."""

    def __init__(self, config: TransUNetConfig) -> None:
        super().__init__()
        width = config.resnet_width
        self.conv1 = nn.Conv2d(config.in_channels, width, kernel_size=7, stride=2,
                               padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        from torchvision.models.resnet import (  # here: importing torchvision costs seconds
            Bottleneck,
        )

        in_channels = width
        for index, num_blocks in enumerate(config.resnet_blocks):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
            blocks = [Bottleneck(in_channels, planes, stride, downsample)]
            blocks += [Bottleneck(planes * 4, planes) for _ in range(num_blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = planes * 4

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the (B, 16w, H/16, W/16) features and the skips [1/8 (8w), 1/4 (4w), 1/2 (w)]."""
        half = self.relu(self.bn1(self.conv1(images)))  # (B, w, H/2, W/2)
        quarter = self.layer1(self.maxpool(half))  # (B, 4w, H/4, W/4)
        eighth = self.layer2(quarter)  # (B, 8w, H/8, W/8)
        return self.layer3(eighth), [eighth, quarter, half]  # (B, 16w, H/16, W/16)


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (torchvision's in_proj layout)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # rows: [query; key; value]
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attend over tokens (B, N, D); returns (B, N, D)."""
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D / heads)
        query = query * (dim // self.num_heads) ** -0.5  # scale before the product: safer in fp16
        weights = query @ key.transpose(-2, -1)  # (B, heads, N, N)
        weights = self.attn_drop(weights.softmax(dim=-1))
        out = (weights @ value).transpose(1, 2).reshape(batch, length, dim)  # (B, N, D)
        return self.proj_drop(self.proj(out))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: TransUNetConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, config.num_heads, config.attention_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = nn.Sequential(  # indices 0 and 3 match torchvision's MLPBlock
            nn.Linear(dim, config.mlp_dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.mlp_dim, dim), nn.Dropout(config.dropout),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Transform tokens (B, N, D); returns (B, N, D)."""
        tokens = tokens + self.attn(self.attention_norm(tokens))
        return tokens + self.ffn(self.ffn_norm(tokens))


class TransformerEncoder(nn.Module):
    """1x1 patch embedding + position embeddings + transformer layers + final LayerNorm."""

    def __init__(self, config: TransUNetConfig, in_channels: int) -> None:
        super().__init__()
        self.grid = (config.img_size // 16, config.img_size // 16)
        self.patch_embed = nn.Conv2d(in_channels, config.hidden_size, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1],
                                                  config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-6)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Encode the (B, C, h, w) feature map into tokens (B, h*w, D)."""
        # symbolic under torch.export: no int(), no branch
        grid = (features.shape[-2], features.shape[-1])
        tokens = self.patch_embed(features).flatten(2).transpose(1, 2)  # (B, h*w, D)
        # exactly pos_embed at self.grid
        pos_embed = resize_pos_embed(self.pos_embed, grid, self.grid)
        tokens = self.dropout(tokens + pos_embed)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens)


class DecoderBlock(nn.Module):
    """CUP block: bilinear x2 upsampling, optional skip concatenation, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, features: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """Upsample (B, C_in, h, w) to (B, C_out, 2h, 2w), fusing `skip` (B, C_skip, 2h, 2w) if
        given."""
        features = self.up(features)
        if skip is not None:
            features = torch.cat([features, skip], dim=1)
        return self.conv(features)


class TransUNet(nn.Module):
    """TransUNet for binary segmentation: images (B, C, H, W) → logits (B, 1, H, W).

    Args:
        config: A TransUNetConfig (default: the paper's R50-ViT-B/16).
    """

    def __init__(self, config: TransUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TransUNetConfig()
        if config.img_size % 16:
            raise ValueError(f"TransUNet img_size must be a multiple of 16; got {config.img_size} "
                             f"— use e.g. 256")
        if not 0 <= config.n_skip <= 3:
            raise ValueError(f"TransUNet n_skip must be 0, 1, 2 or 3 (skips at 1/8, 1/4, 1/2); "
                             f"got {config.n_skip}")
        width = config.resnet_width
        self.backbone = ResNetBackbone(config)
        self.transformer = TransformerEncoder(config, in_channels=16 * width)
        self.conv_more = ConvBNReLU(config.hidden_size, config.head_channels)
        skip_channels = [c if i < config.n_skip else 0
                         for i, c in enumerate((8 * width, 4 * width, width, 0))]
        in_channels = (config.head_channels, *config.decoder_channels[:-1])
        self.decoder = nn.ModuleList(
            DecoderBlock(i, o, s)
            for i, o, s in zip(in_channels, config.decoder_channels, skip_channels)
        )
        self.head = nn.Conv2d(config.decoder_channels[-1], 1, kernel_size=3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming init for convolutions (as torchvision's ResNet), Xavier for linear layers (as
        ViT)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.transformer.pos_embed, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            images: Float tensor (B, C, H, W); H and W multiples of 16.

        Returns:
            Logits (B, 1, H, W).
        """
        check_input_size(images, 16, "TransUNet")
        features, skips = self.backbone(images)  # (B, 16w, H/16, W/16)
        height, width = features.shape[-2:]
        tokens = self.transformer(features)  # (B, H/16 * W/16, D)
        # (B, D, H/16, W/16)
        features = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
        features = self.conv_more(features)  # (B, head_channels, H/16, W/16)
        for index, block in enumerate(self.decoder):
            features = block(features, skips[index] if index < self.config.n_skip else None)
        return self.head(features)  # (B, 1, H, W)
