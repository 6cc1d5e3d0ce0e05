"""Model size and cost: parameter counts, FLOPs and a comparison table.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode`, which
counts convolutions, transposed convolutions and matrix multiplications
(including attention) and reports them as FLOPs = 2 x multiply-adds (MACs).
Element-wise work (batch norm, activations, pooling, upsampling, softmax) is
not counted; it is a few percent of the total for these models. Many papers
quote MACs as "FLOPs"; divide our numbers by two to compare with those.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from helpers.models import ModelConfig, build_model

# Sustained fp32 speed assumed when a teaching cell sizes its work (GFLOP/s): a Colab T4 at about
# half its peak, and 2 CPU cores (measured here: the paper UNet and UNet++ run at 60-80 GFLOP/s on 2
# cores, alone; less when shared).
NOMINAL_GFLOPS = {"cuda": 4000.0, "cpu": 40.0}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of a model.

    Args:
        model: Any module.
        trainable_only: Count only parameters with requires_grad.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, image_size: int | tuple[int, int], batch: int = 1) -> int:
    """FLOPs (2 x MACs) of one forward pass in eval mode, without gradients.

    Args:
        model: A segmentation model taking (B, 3, H, W) images; may live on the
            "meta" device, which counts without computing.
        image_size: Side, or (height, width), of the input images.
        batch: Batch size of the counted forward pass.

    Returns:
        Total FLOPs for the whole batch.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    parameter = next(model.parameters())
    # (B, 3, H, W)
    images = torch.zeros(batch, 3, height, width, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_table(specs: list[tuple[str, str | ModelConfig]],
                image_size: int | tuple[int, int]) -> pd.DataFrame:
    """Parameters and forward GFLOPs per image for a list of (model name, configuration).

    The models are built on the "meta" device: nothing is allocated or computed,
    so even the paper-size models are counted instantly.

    Args:
        specs: Pairs such as [("unet", "paper"), ("transunet", "small")].
        image_size: Side, or (height, width), of the input images.

    Returns:
        A DataFrame with columns model, config, params_M, GFLOPs (FLOPs = 2 x MACs).
    """
    rows = []
    for name, config in specs:
        with torch.device("meta"):
            model = build_model(name, config)
        rows.append({
            "model": name,
            "config": config if isinstance(config, str) else type(config).__name__,
            "params_M": count_parameters(model) / 1e6,
            "GFLOPs": count_flops(model, image_size) / 1e9,
        })
    return pd.DataFrame(rows, columns=["model", "config", "params_M", "GFLOPs"])


def layer_shapes(model: nn.Module, image_size: int, batch: int = 1) -> pd.DataFrame:
    """The output shape of each block of a model, from a real forward pass on a random batch.

    Hooks the model's top-level blocks (and each block of a ``ModuleList``, e.g. UNet's ``downs``
    and ``ups``), runs one forward pass in eval mode, and lists the blocks in the order they ran. A
    block that returns a list of feature maps (an encoder's stages, e.g. the ResNet-34 of UNet++
    ``r34``) gets one row per map, ``encoder[k]``.

    Returns:
        One row per block output: block (its name), output shape ``(B, C, H, W)``, parameters (of
        the block, on its first row; 0 on the rows of its further maps).
    """
    blocks = []
    for name, child in model.named_children():
        parts = list(child.named_children()) if isinstance(child, nn.ModuleList) else [("", child)]
        blocks += [(f"{name}.{sub}" if sub else name, module) for sub, module in parts]
    rows, handles = [], []
    for name, module in blocks:
        def hook(_module, _inputs, output, name=name, module=module):
            rows.extend(_output_rows(name, output, count_parameters(module)))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.rand(batch, 3, image_size, image_size,
                             device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return pd.DataFrame(rows, columns=["block", "output shape", "params"])


def _output_rows(name: str, output, params: int) -> list[dict]:
    """Rows of :func:`layer_shapes` for one block's output: one per map of a list, else one.

    A tuple is a block's ``(features, extras)`` (e.g. TransUNet's backbone: the 1/16 map and its
    skips): the features.
    """
    while isinstance(output, tuple):
        output = output[0]
    if not isinstance(output, list):
        return [{"block": name, "output shape": tuple(output.shape), "params": params}]
    return [{"block": f"{name}[{k}]", "output shape": tuple(feature.shape),
             "params": params if k == 0 else 0}
            for k, feature in enumerate(output)]


def images_within(model: nn.Module, image_size: int, seconds: float, device: torch.device | str,
                  passes: float = 1.0, at_least: int = 4) -> int:
    """How many images a teaching cell can send through ``model`` in about ``seconds`` on
    ``device``.

    Counted from the model's FLOPs per image (on a "meta" copy: nothing is computed) at the nominal
    speed of the device's kind (:data:`NOMINAL_GFLOPS`), so the same runtime kind always gets the
    same count, whatever the load.

    Args:
        model: the model the cell runs (any device).
        image_size: side of its square inputs.
        seconds: the cell's budget.
        device: where the cell runs.
        passes: forward passes per image (e.g. 2 for a UNet++ scored at its four depths, which cost
            about two full passes together).
        at_least: the fewest images to return.
    """
    per_image = count_flops(copy.deepcopy(model).to("meta"), image_size) * passes / 1e9
    speed = NOMINAL_GFLOPS.get(torch.device(device).type, NOMINAL_GFLOPS["cpu"])
    return max(at_least, int(seconds * speed / max(per_image, 1e-9)))
