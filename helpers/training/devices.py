"""Devices and processes: which device a run uses, its mixed precision, and the same ``fit()`` under
``torchrun``.

    torchrun --nproc_per_node=4 -m helpers.training --profile t4 --models unet,unetpp
             --fractions 0.1,1.0

``torchrun`` starts one process per GPU and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`setup` joins them into a process group (NCCL on CUDA, gloo on the CPU), each process
uses the GPU of its local rank, the model is wrapped in ``DistributedDataParallel`` (with
synchronised batch norm on GPUs), each process loads its share of every global batch, and only
rank 0 writes checkpoints and logs. Without ``torchrun`` all of this is a no-op. The command line
itself lives with the grid, in :mod:`helpers.training.grid`.

GPU memory, counted in GB of 2**30 bytes (torch's and ``nvidia-smi``'s unit): :func:`limit_memory`
caps what a run may use (15 GB with fp16 AMP is the T4 path, emulated on a bigger GPU; a real T4
shows torch 14.7 GB of its nominal 15), and :func:`peak_memory_gb` reads the most it used since
:func:`reset_peak_memory`. On the CPU these do nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

GB = 2 ** 30  # bytes in a GB of GPU memory


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    machine."""

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
    """The device this process computes on: ``$KIT_DEVICE`` when set (a command's ``--device``:
    ``cpu``, ``cuda``, ``cuda:1``, ``mps``), else this process's GPU (its local rank's under
    torchrun), else the CPU."""
    wanted = os.environ.get("KIT_DEVICE", "").strip()
    if wanted:
        chosen = torch.device(wanted)
        if chosen.type == "cuda" and chosen.index is None and torch.cuda.is_available():
            return torch.device("cuda",
                                int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device("cpu")


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype of a run (None: fp32).

    Args:
        device: where the run computes; on the CPU the kit always trains in fp32.
        amp: ``auto`` (bf16 on GPUs that have it, compute capability ≥ 8, else fp16 as on a T4),
            ``bf16``, ``fp16`` (with a gradient scaler; forces the T4 path on any GPU) or ``off``.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"AMP = {amp!r} is not valid: choose auto, bf16, fp16 or off.")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return (torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0)
                else torch.float16)
    return torch.bfloat16 if amp == "bf16" else torch.float16


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """The gradient scaler of a run: on with fp16 (whose narrow range underflows small gradients
    without it), whatever the GPU; off, a pass-through, with bf16 and fp32. Its state goes into
    every ``last.pt``."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def limit_memory(device: torch.device, gb: float | None) -> float | None:
    """Let this process allocate at most ``gb`` GB on ``device`` (None: all of it); a no-op on the
    CPU.

    ``limit_memory(device, 15)`` with fp16 AMP emulates a Colab T4 (15 GB) on a bigger GPU: a batch
    size that does not fit a T4 stops with an out-of-memory error here too. The cap does not change
    results.

    Returns:
        The fraction of the GPU's memory allowed (1.0 when ``gb`` is None or more than the GPU has),
        or None on the CPU.
    """
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory / GB
    if gb is not None and gb > total:
        print(f"GPU_MEMORY_GB = {gb:g} is more than this GPU's {total:.1f} GB: no cap.")
    fraction = 1.0 if gb is None else min(1.0, gb / total)
    # memory cached by an earlier run would otherwise be reused past the cap
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def reset_peak_memory(device: torch.device) -> None:
    """Start counting :func:`peak_memory_gb` afresh (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """The most GPU memory tensors of this process held since :func:`reset_peak_memory`, in GB (NaN
    on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else float("nan")


def hardware(device: torch.device, info: DistInfo) -> str:
    """What a run ran on, for its config: the GPU's name, or ``cpu: N cores``; and the process
    count."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu: {os.cpu_count()} cores")
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
