"""The benchmark harness runs end to end and records every row with its settings (no timing asserts)."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data.sources import ensure_prepared
from helpers.profiles import resolve_config
from helpers.tools import bench, bench_gpu, bench_predict


def test_naive_dataset_decodes_originals_and_normalises(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    prepared = ensure_prepared(resolve_config("smoke", synthetic_count=12))
    dataset = bench.NaiveDataset(prepared.table, 48)
    image, mask = dataset[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert image.min() < 0 < image.max()                      # ImageNet-normalised, not uint8
    assert mask.shape == (1, 48, 48) and set(np.unique(mask.numpy())) <= {0.0, 1.0}
    names = [type(t).__name__ for t in bench.naive_transform(48).transforms]
    assert names.count("OneOf") == 3 and "Affine" in names and "Normalize" in names


@pytest.mark.slow
def test_bench_writes_every_section_to_bench_csv(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    assert bench.main(["--profile", "smoke", "--images", "24", "--batches", "2", "--steps", "1", "--workers", "0,2"]) == 0
    table = pd.read_csv(tmp_path / "results" / "bench.csv")
    assert set(table["section"]) == {"data", "train", "step", "infer"}
    data = table[table["section"] == "data"]
    assert set(data["name"]) == {"naive recipe", "kit"} and (data["image_size"] == 256).all()
    assert sorted(data["workers"]) == [0, 0, 2, 2]                      # the loader-workers sweep
    train = table[table["section"] == "train"].set_index("name")
    assert set(train.index) == {"kit (fit)", "naive recipe"}
    assert (train.loc["naive recipe", "workers"], train.loc["naive recipe", "amp"]) == (2, "off")  # the study's loader
    step = table[table["section"] == "step"]
    assert len(step) == 3 * 2 and step["pct_of_peak"].isna().all()     # no AMP rows, no peak rate on the CPU
    assert "no CUDA GPU here" in capsys.readouterr().out
    assert (table["images_per_s"] > 0).all() and table["hardware"].str.startswith("cpu").all()
    assert (table.loc[table["section"] == "infer", "ms_per_image"] > 0).all()
    assert not (tmp_path / "results" / "runs").exists()        # bench runs leave no run folders behind
    bench.main(["--profile", "smoke", "--images", "24", "--batches", "2", "--sections", "infer"])
    assert "rows appended to" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "results" / "bench.csv")) == len(table) + 6   # appended, same columns


@pytest.mark.slow
def test_predict_benchmark_prints_speed_and_peak_memory_per_case(tmp_path, monkeypatch, capsys):
    from tests.builders import make_run

    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    make_run(tmp_path / "results", "unet_f100", "unet", 1.0, tmp_path / "data")
    monkeypatch.setattr(bench_predict, "CASES", (("64 px JPEGs", 3, (64, 48)), ("900 px JPEGs", 2, (900, 600))))
    assert bench_predict.main([]) == 0  # the newest run with a checkpoint
    table = pd.read_csv(tmp_path / "results" / "bench.csv")
    assert list(table["name"]) == ["load the model only", "3 64 px JPEGs", "2 900 px JPEGs"]
    cases = table.iloc[1:]
    assert (cases["images_per_s"] > 0).all() and (cases["peak_gb"] >= table["peak_gb"].iloc[0] * 0.9).all()
    assert (table["peak_gb"] > 0.05).all() and "extra_gb" in capsys.readouterr().out
    assert bench_predict.main([str(tmp_path / "missing")]) == 1


def test_peak_rates_by_gpu_name_and_the_switches_timed(monkeypatch):
    cuda = torch.device("cuda", 0)
    for name, peak in (("Tesla T4", 65), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA H100 80GB HBM3", 989),
                       ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989), ("NVIDIA L4", 121), ("NVIDIA L40S", 362),
                       ("NVIDIA A10G", 125)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert bench_gpu.peak_tflops(cuda) == peak, name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert np.isnan(bench_gpu.peak_tflops(cuda)) and np.isnan(bench_gpu.peak_tflops(torch.device("cpu")))
    assert bench_gpu.switches(cuda=False, with_compile=False) == [(False, False, False), (False, True, False)]
    on_gpu = bench_gpu.switches(cuda=True, with_compile=True)
    assert len(on_gpu) == 5 and on_gpu[-1] == (True, True, True)       # compile once, at the fastest setting
    assert bench_gpu.worker_counts("2,0") == [0, 2]
    monkeypatch.setattr(bench_gpu.os, "sched_getaffinity", lambda pid: set(range(6)))
    assert bench_gpu.worker_counts() == [0, 2, 4]                       # capped by the CPU count


def test_the_step_section_times_a_wider_model_at_another_size(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    assert bench.main(["--profile", "smoke", "--sections", "step", "--steps", "1", "--models", "unetpp",
                       "--model-config", "unetpp=cpu", "--image-size", "48"]) == 0
    step = pd.read_csv(tmp_path / "results" / "bench.csv")
    assert set(step["config"]) == {"cpu"} and set(step["image_size"]) == {48} and set(step["model"]) == {"unetpp"}
    assert bench.main(["--profile", "smoke", "--sections", "step", "--model-config", "unetpp=huge"]) == 2  # a bad value
