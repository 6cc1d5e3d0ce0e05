"""Benchmarks that print figures: data path, training throughput, inference latency.

    python -m helpers.tools.bench                      # this machine, the profile for its device
    python -m helpers.tools.bench --profile t4 --data-source folder --data-dir /path/to/isic
    python -m helpers.tools.bench --sections step --compile     # on a GPU: TFLOP/s against its peak, torch.compile

Every row goes to ``results/bench.csv`` (appended) with the hardware, torch version and
settings. Sections:

- ``data``: images/s of a data path at 256 px. The *naive recipe* (as the original study did)
  decodes a JPEG and a PNG per item every epoch, resizes, and runs a heavy albumentations
  chain (shift-scale-rotate, one of elastic/grid/optical distortion, one of noise/blur, one of
  colour jitters, normalise). The *kit* reads the cached uint8 arrays and runs
  :func:`helpers.data.loaders.train_transform`, normalising on the device. Each with 0, 2, 4 and 8 loader
  workers, as many as there are CPUs (``--workers 0,2`` to choose).
- ``train``: end-to-end training images/s, the naive recipe (the study's loader with 2 workers, its fp16
  AMP on CUDA and fp32 elsewhere, ``loss.item()`` every batch) beside the kit's
  :func:`helpers.training.engine.fit`, and achieved TFLOP/s (3 × forward FLOPs per image, the usual forward +
  backward estimate).
- ``step``: one model's training step on a resident batch, with AMP, channels_last and
  torch.compile switched where the device has them, TFLOP/s and their share of the GPU's peak
  (what the GPU alone can do; :mod:`helpers.tools.bench_gpu`).
- ``infer``: ms/image at batch 1 and at the evaluation batch size.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else importing albumentations asks PyPI for a newer version
import albumentations as A  # noqa: E402
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from helpers import cli, paths
from helpers.data.loaders import (
    LesionDataset,
    seed_worker,
    single_threaded_opencv,
    to_model_input,
    train_transform,
)
from helpers.data.sources import SOURCES, ensure_prepared
from helpers.evaluation.inference import iter_probs
from helpers.models import build_model, list_configs
from helpers.models.summary import count_flops
from helpers.profiles import PROFILES, resolve_config
from helpers.tools.bench_gpu import bench_steps, worker_counts
from helpers.training import engine, runs
from helpers.training.devices import DistInfo, amp_dtype, grad_scaler, hardware, pick_device
from helpers.training.losses import DiceBCELoss

DATA_SIZE = 256
SECTIONS = ("data", "train", "step", "infer")
NAIVE_WORKERS = 2  # the original study's loader on Colab (2 CPU cores)


def naive_transform(size: int) -> A.Compose:
    """The heavy per-item chain of the naive recipe (resize included, as it decodes originals)."""
    return A.Compose([
        A.Resize(size, size),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-45, 45), p=0.5),
        A.OneOf([A.ElasticTransform(), A.GridDistortion(), A.OpticalDistortion()], p=0.3),
        A.OneOf([A.GaussNoise(), A.GaussianBlur(), A.MotionBlur()], p=0.3),
        A.OneOf([A.ColorJitter(), A.HueSaturationValue(), A.RandomBrightnessContrast()], p=0.5),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Normalize(),
    ])


class NaiveDataset(Dataset):
    """Decodes the original JPEG and PNG of every item, every epoch (the naive recipe)."""

    def __init__(self, table: pd.DataFrame, size: int):
        self.table, self.transform = table.reset_index(drop=True), naive_transform(size)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(Image.open(self.table.at[i, "image_path"]).convert("RGB"))
        mask = (np.asarray(Image.open(self.table.at[i, "mask_path"]).convert("L")) > 127).astype(np.uint8)
        out = self.transform(image=image, mask=mask)
        return torch.from_numpy(out["image"]).permute(2, 0, 1).contiguous(), torch.from_numpy(out["mask"]).float()[None]


def images_per_second(loader: DataLoader, batches: int, consume=lambda images: images) -> float:
    """Images/s over ``batches`` batches, epochs repeated as needed, timed from the first batch.

    The first batch (worker start-up) is not timed; ``batches`` should be well above the
    batches that workers prefetch (2 per worker), so that the figure is the steady rate.
    """
    def stream():
        while True:
            yield from loader

    iterator = stream()
    next(iterator)
    count, start = 0, time.perf_counter()
    for _, (images, _) in zip(range(batches), iterator):
        consume(images)
        count += len(images)
    return count / (time.perf_counter() - start)


def bench_data(prepared, workers: list[int], batches: int) -> list[dict]:
    """Naive vs kit data path at 256 px, with each number of loader processes in ``workers``."""
    rows = prepared.indices("train")
    naive = NaiveDataset(prepared.table.iloc[rows], DATA_SIZE)
    kit = LesionDataset(prepared.images, prepared.masks, rows, train_transform())
    out = []
    for n in sorted(set(workers)):
        kit_input = lambda images: to_model_input(images, memory_format=torch.channels_last)  # as fit does
        for name, dataset, consume in (("naive recipe", naive, lambda x: x), ("kit", kit, kit_input)):
            if n:
                single_threaded_opencv()
            loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=n, persistent_workers=n > 0,
                                worker_init_fn=seed_worker)
            out.append({"section": "data", "name": name, "workers": n, "image_size": DATA_SIZE,
                        "images_per_s": images_per_second(loader, batches, consume)})
    return out


def naive_train(prepared, model_name: str, config: str, size: int, batch_size: int, steps: int) -> float:
    """Images/s of the naive recipe end to end: per-item decoding in 2 workers, the study's fp16 AMP on CUDA
    (fp32 elsewhere), ``loss.item()`` every batch (a host sync)."""
    device = pick_device()
    model = build_model(model_name, config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    criterion, dtype = DiceBCELoss(), amp_dtype(device, "fp16")
    scaler = grad_scaler(device, dtype)
    single_threaded_opencv()
    loader = DataLoader(NaiveDataset(prepared.table.iloc[prepared.indices("train")], size), batch_size=batch_size,
                        shuffle=True, num_workers=NAIVE_WORKERS, drop_last=True)

    def step(images, masks=None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images.to(device))
        loss = criterion(logits, masks.to(device))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()

    def stream():  # epochs repeated as needed
        while True:
            yield from loader

    iterator, count = stream(), 0
    step(*next(iterator))
    start = time.perf_counter()
    for _, (images, masks) in zip(range(steps), iterator):
        step(images, masks)
        count += len(images)
    return count / (time.perf_counter() - start)


def kit_train(prepared, profile, model_name: str) -> float:
    """Images/s of the kit's own ``fit`` for one epoch (training part only, from history.csv)."""
    spec = runs.make_spec(model_name, 1.0, 0, prepared, profile.with_(num_epochs=1))
    result = engine.fit(spec, prepared, num_workers=profile.num_workers, progress=False)
    return float(pd.read_csv(Path(result["run_dir"]) / "history.csv")["images_per_s"].iloc[-1])


def bench_train(prepared, profile, steps: int) -> list[dict]:
    """End-to-end training throughput: the naive recipe beside the kit, then the kit per model."""
    out, size = [], profile.image_size
    for name in profile.models:
        config = profile.model_configs[name]
        flops = count_flops(build_model(name, config, **profile.model_overrides.get(name, {})), size)
        settings = {"section": "train", "model": name, "config": config, "image_size": size,
                    "batch_size": profile.batch_size, "amp": profile.amp, "workers": profile.num_workers}
        kit = kit_train(prepared, profile, name)
        out.append({**settings, "name": "kit (fit)", "images_per_s": kit, "tflops": 3 * flops * kit / 1e12})
        if name == "unet":
            naive = naive_train(prepared, name, config, size, profile.batch_size, steps)
            amp = "fp16" if amp_dtype(pick_device(), "fp16") else "off"
            out.append({**settings, "name": "naive recipe", "amp": amp, "workers": NAIVE_WORKERS, "images_per_s": naive,
                        "tflops": 3 * flops * naive / 1e12})
    return out


def bench_inference(prepared, profile) -> list[dict]:
    """ms/image of each model at batch 1 and at the evaluation batch size (the profile's batch size)."""
    device, rows, out = pick_device(), prepared.indices("test"), []
    for name in profile.models:
        config = profile.model_configs[name]
        model = build_model(name, config, **profile.model_overrides.get(name, {})).to(device)
        for batch in (1, profile.batch_size):
            timed = list(iter_probs(model, prepared.images, rows[: max(8, 2 * batch)], batch_size=batch,
                                    amp=profile.amp != "off"))
            seconds, count = sum(t for _, _, t in timed), sum(len(b) for b, _, _ in timed)
            out.append({"section": "infer", "name": "inference", "model": name, "config": config,
                        "image_size": profile.image_size, "batch_size": batch, "amp": profile.amp,
                        "images_per_s": count / seconds, "ms_per_image": 1000 * seconds / count})
    return out


def run_sections(profile, args) -> list[dict]:
    """The rows of the sections named in ``args.sections``."""
    sections, rows = args.sections.split(","), []
    if "data" in sections:
        data_profile = resolve_config(profile.name, image_size=DATA_SIZE, synthetic_count=args.images)
        prepared = ensure_prepared(data_profile, args.data_source, args.data_dir)
        rows += bench_data(prepared, worker_counts(args.workers), args.batches)
    if {"train", "infer"} & set(sections):
        prepared = ensure_prepared(profile, args.data_source, args.data_dir)
        rows += bench_train(prepared, profile, args.steps) if "train" in sections else []
        rows += bench_inference(prepared, profile) if "infer" in sections else []
    rows += bench_steps(profile, args.steps, args.compile) if "step" in sections else []
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, append the rows to results/bench.csv; errors as one line
    (:func:`helpers.cli.run`)."""
    return cli.run(_main, argv)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.tools.bench``."""
    parse = argparse.ArgumentParser(prog="python -m helpers.tools.bench",
                                    description="Benchmark the data path, training and inference.")
    parse.add_argument("--profile", default="", choices=["", *PROFILES],
                       help="the profile (default: $KIT_PROFILE, else class on Colab or with a GPU and cpu otherwise)")
    parse.add_argument("--data-source", default="synthetic", choices=SOURCES)
    parse.add_argument("--data-dir", default=None, help="the dataset's folder or zip (with --data-source folder)")
    parse.add_argument("--images", type=int, default=160, help="synthetic images to generate")
    parse.add_argument("--batches", type=int, default=24, help="batches timed per data-path row")
    parse.add_argument("--steps", type=int, default=4, help="steps timed per training row")
    parse.add_argument("--compile", action="store_true", help="also time torch.compile in the step section")
    parse.add_argument("--sections", default=",".join(SECTIONS), help=f"of {','.join(SECTIONS)} (default: all)")
    parse.add_argument("--models", default=None, help="models to time, e.g. unet,unetpp (default: the profile's)")
    parse.add_argument("--model-config", default=None, metavar="MODEL=CONFIG,...",
                       help="named configurations of the models, e.g. unetpp=small (default: the profile's)")
    parse.add_argument("--image-size", type=int, default=None, help="side of the training images (default: the "
                                                                     "profile's)")
    parse.add_argument("--workers", default=None, help="loader workers the data section sweeps, e.g. 0,2 "
                                                       "(default: 0, 2, 4, 8 up to the CPU count)")
    cli.add_device(parse)
    return cli.add_debug(parse)


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    cli.use_device(args.device)
    if unknown := sorted(set(args.sections.split(",")) - set(SECTIONS)):
        raise cli.BadValue(f"--sections names unknown section(s) {unknown}; choose from {','.join(SECTIONS)}.")
    results = paths.results_dir()
    profile = resolve_config(args.profile or None, synthetic_count=args.images, models=args.models,
                             image_size=args.image_size,
                             model_configs=cli.model_config_pairs(args.model_config, list_configs()))
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as scratch, paths.scoped_env(**{paths.RESULTS_ENV: scratch}):
        rows = run_sections(profile, args)  # training rows write their run folders into the scratch folder
    table = pd.DataFrame(rows).assign(profile=profile.name, data=args.data_source, hardware=hardware(pick_device(), DistInfo()),
                                      torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    pd.set_option("display.width", 200)
    print(table.drop(columns=["torch", "date"]).round(3).to_string(index=False))
    results.mkdir(parents=True, exist_ok=True)
    out = results / "bench.csv"
    earlier = pd.read_csv(out) if out.exists() else None
    pd.concat([earlier, table], ignore_index=True).to_csv(out, index=False)
    print(f"rows appended to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
