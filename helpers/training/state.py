"""One training run: what it trains with, and how far it has come.

:func:`build_run` makes a run's model, loaders, optimizer, learning-rate schedule, gradient scaler and loss
from its :class:`~helpers.training.runs.RunSpec`, seeded so that the same spec always starts the same way,
and the ``config.json`` record of it (every setting, the hardware, the kit's version and git commit), and
holds them in a :class:`RunState`, which :func:`helpers.training.engine.fit` trains.
:class:`RunProgress` (epochs done, history, best Dice) and :class:`EpochProgress` (one epoch's running loss)
say how far it has come: what :class:`helpers.training.checkpointer.Checkpointer` saves and resumes.
Seeding and the learning-rate schedule live here too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import paths, version_info
from helpers.data.loaders import Loaders, make_loaders
from helpers.data.prep import Prepared
from helpers.models import build_model, load_encoder_weights, load_pretrained
from helpers.models.summary import count_parameters
from helpers.training import devices, runs
from helpers.training.averaging import WeightAverage, decay_for
from helpers.training.devices import amp_dtype, pick_device
from helpers.training.losses import DiceBCELoss


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally insist on deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                kind: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up to the base lr, then cosine decay to 0 at ``total_steps``
    (``kind="cosine"``) or the base lr to the end (``kind="constant"``)."""
    if kind not in ("cosine", "constant"):
        raise ValueError(f"Unknown schedule {kind!r}; choose 'cosine' or 'constant'.")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * done))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def init_from_imagenet(model: nn.Module) -> None:
    """Start a model from torchvision's ImageNet weights, through the torch hub cache (``$TORCH_HOME``;
    read from there without a download when the file is there): a UNet's or UNet++'s ResNet-34 encoder
    (``r34`` configs), or a TransUNet's ResNet-50 always and its ViT-B/16 where it fits."""
    if getattr(model.config, "encoder", None):
        report = load_encoder_weights(model, download=True)
    elif not hasattr(model.config, "hidden_size"):
        raise ValueError(f"{type(model).__name__} with config {model.config} has no ImageNet weights; choose "
                         "its 'r34' configuration (model_configs) or take it out of pretrained")
    elif model.config.hidden_size == 768 and model.config.mlp_dim == 3072:  # ViT-B/16 sized
        report = load_pretrained(model, download=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            from torchvision.models import ResNet50_Weights  # here: importing it costs seconds

            torch.save(ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True), Path(tmp) / "r50.pt")
            report = load_pretrained(model, resnet_weights=Path(tmp) / "r50.pt")
    print(f"ImageNet initialisation: {report}")


@dataclasses.dataclass(kw_only=True)
class RunState:
    """Everything one ``fit`` call trains with (how far it has come: :class:`RunProgress`)."""

    spec: runs.RunSpec
    device: torch.device
    dtype: torch.dtype | None  # mixed precision (None: fp32)
    dist: devices.DistInfo     # this process, under torchrun
    model: nn.Module
    net: nn.Module             # the model, in DistributedDataParallel under torchrun
    loaders: Loaders
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module       # 0.5·Dice + 0.5·BCE, in fp32
    config: dict               # what config.json records
    average: WeightAverage | None = None  # the weights' moving average (ema_epochs > 0), else None

    @property
    def evaluated(self) -> nn.Module:
        """The model validation scores and ``best.pt`` keeps: the weights' average when there is one."""
        return self.average.model if self.average is not None else self.model

    @property
    def run_id(self) -> str:
        """The run's name (:func:`helpers.training.runs.run_id`)."""
        return self.config["run_id"]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a forward pass: ``torch.autocast`` with the run's dtype, off in fp32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


@dataclasses.dataclass
class RunProgress:
    """How far a run has come: what ``last.pt`` records beside the weights, optimizer, schedule and scaler."""

    epochs_done: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)  # one row per epoch done: history.csv
    best: float = -math.inf    # the best validation Dice so far
    finished: bool = False     # the last epoch is done, or early stopping stopped the run
    batches: int = 0           # batches of the next epoch done when a mid-epoch checkpoint was saved
    loss_sum: float = 0.0      # their summed training loss
    images: int = 0            # and how many images it sums over

    @property
    def started(self) -> bool:
        """True when anything was trained before (the run resumes)."""
        return self.epochs_done > 0 or self.batches > 0


@dataclasses.dataclass(kw_only=True)
class EpochProgress:
    """One epoch's training so far. The loss is summed on the device: reading it waits for the GPU."""

    epoch: int
    batches: int               # batches done, including those of an interrupted runtime before this one
    total: int                 # batches in the epoch
    loss_sum: torch.Tensor
    images: int                # how many images loss_sum sums over
    look_every: int            # read the loss this often (in batches): a tenth of the epoch
    seen: int = 0              # images this runtime trained on, for images/s
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, loss: torch.Tensor, count: int) -> None:
        """Count one batch: its mean loss and its number of images."""
        self.loss_sum += loss * count
        self.images += count
        self.seen += count
        self.batches += 1

    def time_to_look(self) -> bool:
        """True every tenth of the epoch and at its last batch."""
        return self.batches % self.look_every == 0 or self.batches == self.total

    def mean_loss(self) -> float:
        """The mean training loss so far, in this process."""
        return float(self.loss_sum) / self.images

    def result(self, dist: devices.DistInfo) -> tuple[float, float]:
        """The epoch's mean loss over all processes, and the images per second they trained on together."""
        seconds = time.perf_counter() - self.started
        totals = torch.stack([self.loss_sum, torch.tensor(float(self.images), device=self.loss_sum.device)])
        totals = devices.all_reduce_sum(totals, dist)
        return float(totals[0] / totals[1]), self.seen * dist.world_size / seconds


def build_run(spec: runs.RunSpec, prepared: Prepared, *, checkpoint_dir: Path, num_workers: int = 0,
              gpu_memory_gb: float | None = None) -> RunState:
    """Build model, loaders, optimizer, schedule, scaler and loss of a run, from its spec, as a fresh start.

    Args:
        spec: the run: every setting that changes its result.
        prepared: its data.
        checkpoint_dir: where its checkpoints go (recorded in its config).
        num_workers: loader worker processes.
        gpu_memory_gb: on CUDA, let the run use at most this many GB
            (:func:`helpers.training.devices.limit_memory`; None: no cap).
    """
    info, device = devices.setup(), pick_device()
    devices.limit_memory(device, gpu_memory_gb)  # before anything is allocated there
    seed_everything(spec.seed)  # the same start whatever ran before in this process
    model = build_model(spec.model, spec.model_config, **spec.model_overrides)
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and, measured, on the CPU too
    net = devices.wrap(model, device, info)
    loaders = make_loaders(prepared, spec.fraction, spec.batch_size, num_workers, spec.seed,
                           distributed=info.world_size > 1, augment=spec.augment == "kit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps = len(loaders.train)
    warmup = round(spec.warmup_epochs * steps)
    schedule = lr_schedule(optimizer, spec.num_epochs * steps, warmup, spec.schedule)
    dtype = amp_dtype(device, spec.amp)
    average = WeightAverage(model, decay_for(spec.ema_epochs, steps)) if spec.ema_epochs > 0 else None
    config = run_config(spec, prepared, checkpoint_dir=checkpoint_dir, device=device, dtype=dtype, dist=info)
    config.update(gpu_memory_gb=gpu_memory_gb, params=count_parameters(model),
                  train_images=len(loaders.train.dataset))
    return RunState(spec=spec, device=device, dtype=dtype, dist=info, model=model, net=net, loaders=loaders,
                    optimizer=optimizer, scheduler=schedule, scaler=devices.grad_scaler(device, dtype),
                    criterion=DiceBCELoss(), config=config, average=average)


def run_config(spec: runs.RunSpec, prepared: Prepared, *, checkpoint_dir: Path, device: torch.device,
               dtype: torch.dtype | None, dist: devices.DistInfo) -> dict:
    """What ``config.json`` records of a run: its id, every setting, its data and checkpoint folders
    (relative to the data and run folders, so the folder moves between machines), the hardware, and which
    code ran it (the kit's version and git commit)."""
    return {"run_id": runs.run_id(spec), **dataclasses.asdict(spec),
            "settings_hash": runs.settings_hash(spec),
            "prepared_dir": paths.portable(prepared.root, paths.data_dir()),
            "checkpoint_dir": paths.portable(checkpoint_dir, runs.run_dir(spec)),
            "amp_dtype": str(dtype).removeprefix("torch.") if dtype else "off", "device": str(device),
            "hardware": devices.hardware(device, dist), "torch_version": str(torch.__version__),
            **version_info()}
