"""Building and resuming one training run: the state that :func:`helpers.train.fit` works with.

``start_run`` builds the model, loaders, optimizer, cosine schedule and gradient scaler of a run,
writes its ``config.json`` and, when a checkpoint exists (on Drive or its local fallback), restores
everything from the newest readable one, including where in an epoch it stopped. ``RunState``
also saves ``last.pt``. Seeding and the schedule live here too, so a resumed run starts exactly
as an uninterrupted one would have gone on.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from helpers import distributed, runs
from helpers.checkpoints import load_latest, make_state, restore_state, save_checkpoint
from helpers.data import make_loaders
from helpers.distributed import amp_dtype, pick_device
from helpers.losses import DiceBCELoss
from helpers.models import build_model
from helpers.models.summary import count_parameters


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally insist on deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def cosine_schedule(optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up to the base lr, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def init_from_imagenet(model: torch.nn.Module) -> None:
    """Start a TransUNet from torchvision's ImageNet weights: ResNet-50 always, ViT-B/16 where it fits."""
    from torchvision.models import ResNet50_Weights
    from helpers.models import load_pretrained

    if model.config.hidden_size == 768 and model.config.mlp_dim == 3072:  # ViT-B/16 sized
        report = load_pretrained(model, download=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True), Path(tmp) / "r50.pt")
            report = load_pretrained(model, resnet_weights=Path(tmp) / "r50.pt")
    print(f"ImageNet initialisation: {report}")


@dataclasses.dataclass
class RunState:
    """Everything one ``fit`` call works with."""

    folder: Path
    checkpoint_dir: Path
    fallback_dir: Optional[Path]
    device: torch.device
    dtype: Optional[torch.dtype]
    dist: distributed.DistInfo
    model: torch.nn.Module
    net: torch.nn.Module  # the model, in DistributedDataParallel under torchrun
    loaders: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    criterion: Callable
    config: dict
    save_every_s: Optional[float]
    history: list = dataclasses.field(default_factory=list)
    best: float = -math.inf
    start_epoch: int = 1
    skip: int = 0              # batches of start_epoch done before a mid-epoch checkpoint
    partial: tuple = (0.0, 0)  # their loss sum and image count
    finished: bool = False
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    def checkpoint(self, epoch: int, batches_done: int = 0, partial=(0.0, 0)) -> None:
        """Save last.pt: ``epoch`` finished, plus ``batches_done`` batches of the next one."""
        state = make_state(self.model, self.optimizer, self.scheduler, self.scaler, epoch, self.best,
                           self.history, self.config)
        state.update(batches_done=batches_done, partial=list(partial), finished=self.finished)
        save_checkpoint(state, self.checkpoint_dir / "last.pt", fallback_dir=self.fallback_dir)
        self.last_save = time.monotonic()


def start_run(spec, prepared, profile, checkpoint_dir, num_epochs, warmup_epochs, minutes, criterion) -> RunState:
    """Build model, loaders, optimizer, schedule and scaler; resume from the newest checkpoint.

    Args:
        spec: the run; prepared: its data; profile: batch size, lr, AMP, workers.
        checkpoint_dir: where checkpoints go (None: ``<run folder>/checkpoints``).
        num_epochs: planned epochs; warmup_epochs: linear warm-up, in epochs.
        minutes: also checkpoint within an epoch this often (None: per epoch only).
        criterion: the loss (None: ``DiceBCELoss()``).

    Returns:
        The :class:`RunState`, at the point where training goes on.
    """
    info, device, folder = distributed.setup(), pick_device(), runs.run_dir(spec)
    seed_everything(spec.seed)  # the same start whatever ran before in this process
    model = build_model(spec.model, spec.model_config, **spec.model_overrides)
    if spec.pretrained:
        init_from_imagenet(model)
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and, measured, on the CPU too
    net = distributed.wrap(model, device, info)
    loaders = make_loaders(prepared, spec.fraction, profile.batch_size, profile.num_workers, spec.seed,
                           distributed=info.world_size > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    steps, dtype, local = len(loaders.train), amp_dtype(device) if profile.amp else None, folder / "checkpoints"
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else local
    config = {"run_id": runs.run_id(spec), **dataclasses.asdict(spec), "prepared_dir": str(prepared.root),
              "checkpoint_dir": str(checkpoint_dir), "profile": profile.as_dict(), "num_epochs": num_epochs,
              "batch_size": profile.batch_size, "lr": profile.lr, "weight_decay": profile.weight_decay,
              "amp": str(dtype).removeprefix("torch.") if dtype else "off", "device": str(device),
              "hardware": distributed.hardware(device, info), "torch_version": str(torch.__version__),
              "params": count_parameters(model), "train_images": len(loaders.train.dataset),
              "warmup_epochs": warmup_epochs}
    run = RunState(folder, checkpoint_dir, local if checkpoint_dir != local else None, device, dtype, info, model, net,
               loaders, optimizer, cosine_schedule(optimizer, num_epochs * steps, round(warmup_epochs * steps)),
               torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), criterion or DiceBCELoss(),
               config, minutes * 60 if minutes else None)
    resume(run)
    if info.is_main:
        runs.write_json(folder / "config.json", config)
    return run


def resume(run: RunState) -> None:
    """Continue from the newest readable checkpoint (Drive or its local fallback), if there is one."""
    found = [load_latest(d, run.device) for d in (run.checkpoint_dir, run.fallback_dir) if d]
    state, path = max(((s, p) for s, p in found if s), key=lambda sp: (sp[0]["epoch"], sp[0]["batches_done"]),
                      default=(None, None))
    if state is None:
        return
    info = restore_state(state, run.model, run.optimizer, run.scheduler, run.scaler)
    run.history, run.best, run.finished = info["history"], info["best_metric"], state["finished"]
    run.start_epoch, run.skip, run.partial = info["epoch"] + 1, state["batches_done"], tuple(state["partial"])
    changed = [k for k in ("num_epochs", "batch_size", "lr", "amp") if info["config"].get(k) != run.config[k]]
    if run.dist.is_main:
        at = f", batch {run.skip} of epoch {run.start_epoch}" if run.skip else ""
        print(f"Resuming {run.config['run_id']} from {path} (epoch {info['epoch']} done{at})."
              + (f" Note: {', '.join(changed)} differ from the interrupted session's." if changed else ""))
