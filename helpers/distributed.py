"""Devices and processes: which device a run uses, and the same ``fit()`` under ``torchrun``.

    torchrun --nproc_per_node=4 -m helpers.train --profile t4 --models unet unetpp --fractions 0.1 1.0

``torchrun`` starts one process per GPU and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`setup` joins them into a process group (NCCL on CUDA, gloo on the CPU), each process
uses the GPU of its local rank, the model is wrapped in ``DistributedDataParallel`` (with
synchronised batch norm on GPUs), each process loads its share of every global batch, and only
rank 0 writes checkpoints and logs. Without ``torchrun`` all of this is a no-op. :func:`main` is
the command line behind ``python -m helpers.train`` (one process or under ``torchrun``).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and shows progress."""
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group ``torchrun`` describes (once); a single process otherwise.

    Returns:
        This process's :class:`DistInfo`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device() -> torch.device:
    """This process's GPU (its local rank's under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bf16 on GPUs that have it (compute capability ≥ 8), fp16 before (T4); None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def hardware(device: torch.device, info: DistInfo) -> str:
    """What a run ran on, for its config: the GPU's name, or ``cpu: N cores``; and the process count."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {os.cpu_count()} cores"
    return name + (f" × {info.world_size} processes" if info.world_size > 1 else "")


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several processes, else unchanged.

    Batch norm is synchronised across GPUs; on the CPU (gloo) each process normalises with its
    own batch statistics, because ``SyncBatchNorm`` needs GPUs.
    """
    if info.world_size == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over all processes (in place; unchanged with one process)."""
    if info.world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op with one process)."""
    if info.world_size > 1:
        dist.barrier()


def main(argv: list[str] | None = None) -> int:
    """Train a grid from the command line (``python -m helpers.train`` or under ``torchrun``)."""
    from helpers import sources, train
    from helpers.profiles import resolve_profile

    parser = argparse.ArgumentParser(description="Train models × fractions; under torchrun on every GPU.")
    parser.add_argument("--profile", default="", help="smoke, cpu or t4 (default: $KIT_PROFILE or by hardware)")
    parser.add_argument("--models", nargs="+", default=None, help="default: the profile's")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, help="default: the profile's")
    parser.add_argument("--data-source", default="synthetic")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--protocol", default="seed")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=0, help="0: the profile's")
    parser.add_argument("--batch-size", type=int, default=0, help="global batch size; 0: the profile's")
    parser.add_argument("--checkpoint-root", default="", help="folder for <run_id>/ checkpoint folders")
    parser.add_argument("--checkpoint-minutes", type=float, default=None, help="also save within epochs")
    parser.add_argument("--early-stopping", type=int, default=None, help="patience in epochs")
    parser.add_argument("--no-deep-supervision", action="store_true", help="UNet++ with one head (notebook 03: DEEP_SUPERVISION = False)")
    parser.add_argument("--pretrained", nargs="*", default=[], help="models to start from ImageNet (transunet)")
    args = parser.parse_args(argv)
    info = setup()
    profile = resolve_profile(args.profile, num_epochs=args.epochs, batch_size=args.batch_size,
                              fractions=args.fractions)
    for turn in ("main", "others"):  # rank 0 prepares the cache first, the others then reuse it
        if info.is_main == (turn == "main"):
            data = sources.ensure_prepared(profile, args.data_source, args.data_dir or None, args.protocol, args.seed)
        barrier(info)
    train.seed_everything(args.seed)
    overrides = None if args.no_deep_supervision else {"unetpp": {"deep_supervision": True}}
    table = train.run_grid(args.models or list(profile.models), profile.fractions, data, profile, seed=args.seed,
                           checkpoint_root=args.checkpoint_root or None, model_overrides=overrides,
                           pretrained=args.pretrained, early_stopping=args.early_stopping,
                           checkpoint_every_minutes=args.checkpoint_minutes, progress=info.is_main)
    if info.is_main:
        print(table.to_string(index=False))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
