"""The T4 path on any GPU: fp16 with a gradient scaler, a cap on GPU memory, and the peak memory each run records.

The CPU tests fake what they need of CUDA; the two marked ``cuda`` run only where a CUDA GPU is present.
"""
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.profiles import resolve_config
from helpers.reporting import report, tables
from helpers.training import __main__ as training_cli
from helpers.training import devices, engine, grid, runs, state
from helpers.training.checkpointer import Checkpointer
from helpers.training.checkpoints import load_checkpoint

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _config(**changes):
    return resolve_config("smoke", **{"image_size": 32, "batch_size": 10, "num_epochs": 1, "split_seed": 0,
                                      "models": "unet", "fractions": "1.0", "seeds": 0, **changes})


def test_fp16_takes_a_grad_scaler_even_on_a_gpu_with_bf16(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))  # an H100/H200: bf16 there
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    assert devices.amp_dtype(gpu, "auto") == torch.bfloat16
    assert not devices.grad_scaler(gpu, torch.bfloat16).is_enabled()  # bf16 needs no scaling
    assert devices.amp_dtype(gpu, "fp16") == torch.float16
    assert devices.grad_scaler(gpu, torch.float16).is_enabled()  # the T4 path, scaler included
    assert not devices.grad_scaler(torch.device("cpu"), devices.amp_dtype(torch.device("cpu"), "fp16")).is_enabled()


def test_the_scaler_state_is_checkpointed_and_resumed(tiny, results, monkeypatch):
    """fp16 autocast runs on the CPU too: forced here, it takes the fit → last.pt → resume path of a T4."""
    monkeypatch.setattr(state, "pick_device", lambda: torch.device("cpu"))  # the CPU, also where a GPU is present
    monkeypatch.setattr(state, "amp_dtype", lambda device, amp: torch.float16)
    spec = runs.make_spec("unet", 1.0, 0, tiny, _config())
    engine.fit(spec, tiny, keep_last=True, progress=False)
    saved = load_checkpoint(runs.run_dir(spec) / "checkpoints" / "last.pt")["scaler"]
    assert math.isfinite(saved["scale"]) and saved["scale"] > 0
    assert runs.load_run_config(runs.run_dir(spec))["amp_dtype"] == "float16"
    saver = Checkpointer(spec)
    run = state.build_run(spec, tiny, checkpoint_dir=saver.checkpoint_dir)
    assert saver.resume(run).epochs_done == 1  # from last.pt
    assert run.scaler.is_enabled() and run.scaler.get_scale() == saved["scale"]


def test_the_memory_cap_is_a_fraction_of_the_gpu_and_a_no_op_on_the_cpu(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * devices.GB))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device: asked.append(f))
    gpu = torch.device("cuda", 0)
    assert devices.limit_memory(gpu, 15) == pytest.approx(15 / 80) and asked == [pytest.approx(15 / 80)]
    assert devices.limit_memory(gpu, None) == 1.0  # no cap: all of it again
    assert devices.limit_memory(gpu, 100) == 1.0 and "more than this GPU's 80.0 GB" in capsys.readouterr().out
    assert devices.limit_memory(torch.device("cpu"), 15) is None and len(asked) == 3
    assert math.isnan(devices.peak_memory_gb(torch.device("cpu")))


@pytest.mark.parametrize("value", [0, -2, "lots", True, float("inf"), float("nan")])
def test_the_memory_cap_is_validated_with_a_clear_error(value):
    with pytest.raises(ValueError, match=r"GPU_MEMORY_GB = .* expected a number of GB above 0, e.g. 15 .* None"):
        resolve_config("smoke", gpu_memory_gb=value)


def test_the_memory_cap_does_not_change_the_run(tiny):
    assert resolve_config("smoke", gpu_memory_gb="15").gpu_memory_gb == 15.0 and resolve_config("smoke").gpu_memory_gb is None
    capped, free = (runs.make_spec("unet", 1.0, 0, tiny, _config(gpu_memory_gb=gb)) for gb in (15, None))
    assert "gpu_memory_gb" not in runs.SPEC_FIELDS and capped == free and runs.run_id(capped) == runs.run_id(free)
    args = training_cli.parser().parse_args(["--profile", "smoke", "--gpu-memory-gb", "15", "--amp", "fp16"])
    assert (training_cli.config_from_args(args).gpu_memory_gb, training_cli.config_from_args(args).amp) == (15.0, "fp16")


def test_a_cpu_run_records_empty_peak_memory_and_the_tables_show_a_dash(tiny, results, monkeypatch):
    capped = []
    monkeypatch.setattr(state, "pick_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(devices, "limit_memory", lambda device, gb: capped.append((device.type, gb)))
    table = grid.run_grid(_config(gpu_memory_gb=15), tiny, progress=False)
    folder = table["run_dir"].iloc[0]
    assert capped == [("cpu", 15.0)] and runs.load_run_config(folder)["gpu_memory_gb"] == 15.0
    history = runs.read_history(folder)
    assert list(history.columns[-2:]) == ["images_per_s", "peak_gpu_gb"]
    assert (history["images_per_s"] > 0).all() and history["peak_gpu_gb"].isna().all()
    done = json.loads((runs.run_dir(table["run_id"].iloc[0]) / "done.json").read_text())
    assert done["peak_gpu_gb"] is None and pd.isna(table["peak_gpu_gb"].iloc[0])
    summary = tables.collect_summary(results, n_boot=10)
    assert "peak_gpu_gb" in summary and summary["peak_gpu_gb"].isna().all()
    assert list(report.cost_table(summary)["peak GPU memory"]) == ["–"]

    done["peak_gpu_gb"] = 3.26  # as a run on a GPU records it
    (runs.run_dir(table["run_id"].iloc[0]) / "done.json").write_text(json.dumps(done))
    summary = tables.collect_summary(results, n_boot=10)
    assert summary["peak_gpu_gb"].iloc[0] == 3.26
    assert list(report.cost_table(summary)["peak GPU memory"]) == ["3.3 GB (cap 15)"]
    assert report.cost_table(summary.assign(gpu_memory_gb=np.nan))["peak GPU memory"].iloc[0] == "3.3 GB"


@cuda
def test_fp16_under_a_15_gb_cap_records_its_peak_memory_and_a_finite_scale(tiny, results):
    device = devices.pick_device()
    try:  # 20 training images in batches of 10: 2 steps
        table = grid.run_grid(_config(amp="fp16", gpu_memory_gb=15), tiny, keep_last=True, progress=False)
        fraction = torch.cuda.get_per_process_memory_fraction(device)
    finally:
        devices.limit_memory(device, None)
    total = torch.cuda.get_device_properties(device).total_memory / devices.GB
    assert fraction == pytest.approx(min(1.0, 15 / total))
    folder = runs.run_dir(table["run_id"].iloc[0])
    assert runs.load_run_config(folder)["amp_dtype"] == "float16"
    history = runs.read_history(folder)
    assert (history["peak_gpu_gb"] > 0).all() and table["peak_gpu_gb"].iloc[0] == pytest.approx(history["peak_gpu_gb"].max())
    saved = load_checkpoint(folder / "checkpoints" / "last.pt")["scaler"]
    assert math.isfinite(saved["scale"]) and saved["scale"] > 0


@cuda
def test_peak_memory_counts_from_the_last_reset():
    device = devices.pick_device()
    big = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device)  # 0.25 GB
    del big
    devices.reset_peak_memory(device)
    small = torch.empty(2 ** 20, dtype=torch.uint8, device=device)  # 1 MB
    assert 0 < devices.peak_memory_gb(device) < 0.25 and small.numel()
