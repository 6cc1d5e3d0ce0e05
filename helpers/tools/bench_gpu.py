"""The benchmark's ``step`` section and what it compares against: a model's training step on a resident batch.

    python -m helpers.tools.bench --sections step --compile      # part of helpers.tools.bench; the rows go to results/bench.csv

What the device alone can do, without data loading: images/s of AdamW training steps with mixed precision,
channels_last and torch.compile switched on and off (mixed precision only on CUDA: on the CPU those rows
are skipped with a note), the achieved TFLOP/s (3 × forward FLOPs per image, the usual forward + backward
estimate) and, on a GPU of :data:`PEAK_TFLOPS`, the share of its peak dense fp16/bf16 tensor rate. Also the
loader-worker counts the ``data`` section sweeps (:func:`worker_counts`).
"""
from __future__ import annotations

import os
import time

import torch

from helpers.models import build_model
from helpers.models.summary import count_flops
from helpers.training.devices import (
    amp_dtype,
    grad_scaler,
    peak_memory_gb,
    pick_device,
    reset_peak_memory,
)
from helpers.training.losses import DiceBCELoss

# Peak dense (no sparsity) fp16/bf16 tensor-core TFLOP/s from the vendors' datasheets, matched in this order
# against torch.cuda.get_device_name (so "A100" before "A10", "L40S" before "L4", "H100 PCIe" before "H100").
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("A10", 125.0),
               ("L40S", 362.0), ("L4", 121.0), ("V100", 125.0), ("T4", 65.0))


def peak_tflops(device: torch.device | None = None) -> float:
    """The peak dense fp16/bf16 tensor TFLOP/s of ``device`` (NaN on the CPU and on GPUs not in :data:`PEAK_TFLOPS`)."""
    device = device or pick_device()
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), float("nan"))


def worker_counts(limit: str | None = None) -> list[int]:
    """Loader worker counts to sweep: 0, 2, 4, 8 up to this process's CPU count (``limit``: e.g. ``"0,2"``)."""
    if limit:
        return sorted({int(n) for n in str(limit).split(",")})
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [n for n in (0, 2, 4, 8) if n <= cpus]


def model_overrides(profile, name: str) -> dict:
    """The config fields a profile's run changes on a model (UNet++ deep supervision included), as ``make_spec``."""
    overrides = dict(profile.model_overrides.get(name, {}))
    if name == "unetpp":
        overrides.setdefault("deep_supervision", profile.deep_supervision)
    return overrides


def step_speed(model_name: str, config: str, size: int, batch_size: int, steps: int, amp: bool,
               channels_last: bool, compile_model: bool, overrides: dict | None = None) -> dict:
    """Training steps on one resident random batch (no data loading).

    Returns:
        ``{"images_per_s": ..., "peak_gb": ...}`` (peak GPU memory of the timed steps; NaN on the CPU).
    """
    device = pick_device()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, config, **(overrides or {})).to(device, memory_format=fmt).train()
    net = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = amp_dtype(device) if amp else None
    scaler, criterion = grad_scaler(device, dtype), DiceBCELoss()
    images = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)  # (B, 3, S, S)
    masks = (torch.rand(batch_size, 1, size, size, device=device) > 0.5).float()  # (B, 1, S, S)
    reset_peak_memory(device)
    for k in range(steps + 2):  # two warm-up steps (compilation, cuDNN autotuning)
        if k == 2:
            torch.cuda.synchronize() if device.type == "cuda" else None
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(images)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(criterion(logits, masks)).backward()
        scaler.step(optimizer)
        scaler.update()
    torch.cuda.synchronize() if device.type == "cuda" else None
    return {"images_per_s": steps * batch_size / (time.perf_counter() - start), "peak_gb": peak_memory_gb(device)}


def switches(cuda: bool, with_compile: bool) -> list[tuple[bool, bool, bool]]:
    """(amp, channels_last, compile) settings to time: AMP on/off on CUDA only, channels_last on/off, and
    torch.compile (when asked) at the fastest setting only (AMP where there is one, channels_last), as each
    compilation costs tens of seconds."""
    out = [(a, c, False) for a in ((False, True) if cuda else (False,)) for c in (False, True)]
    return out + ([(cuda, True, True)] if with_compile else [])


def bench_steps(profile, steps: int, with_compile: bool) -> list[dict]:
    """Training-step throughput of each model of ``profile`` with the device's switches on and off."""
    device = pick_device()
    cuda, peak, out = device.type == "cuda", peak_tflops(device), []
    if not cuda:
        print("step: no CUDA GPU here, so no mixed-precision rows and no share of a peak rate (NaN).")
    elif peak != peak:
        print(f"step: {torch.cuda.get_device_name(device)} is not in bench_gpu.PEAK_TFLOPS; its share of peak is NaN.")
    for name in profile.models:
        config, size, overrides = profile.model_configs[name], profile.image_size, model_overrides(profile, name)
        flops = count_flops(build_model(name, config, **overrides), size)
        for amp, channels_last, compiled in switches(cuda, with_compile):
            speed = step_speed(name, config, size, profile.batch_size, steps, amp, channels_last, compiled, overrides)
            tflops = 3 * flops * speed["images_per_s"] / 1e12
            out.append({"section": "step", "name": "train step", "model": name, "config": config, "image_size": size,
                        "batch_size": profile.batch_size, "amp": amp, "channels_last": channels_last,
                        "compile": compiled, **speed, "tflops": tflops, "peak_tflops": peak,
                        "pct_of_peak": 100 * tflops / peak})
    return out
