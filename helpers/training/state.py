"""Building and resuming one training run: the state that :func:`helpers.training.loop.fit` works with.

``start_run`` builds the model, loaders, optimizer, learning-rate schedule and gradient scaler of a
run from its :class:`~helpers.training.runs.RunSpec`, writes its ``config.json`` and, when a
checkpoint exists (in its checkpoint folder, e.g. on Drive, or in this runtime's local copy),
restores everything from the newest readable one, including where in an epoch it stopped. A
checkpoint whose settings differ from the spec's is never resumed silently: :class:`SettingsChanged`
names the fields. ``RunState`` also saves ``last.pt`` and ``best.pt`` (through a local copy when the
folder is on Drive; on a failed write it stops, or with ``local_fallback`` goes on with the local
copy only, loudly). Seeding and the schedule live here too, so a resumed run starts exactly as an
uninterrupted one would have gone on.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers import paths
from helpers.data.loaders import make_loaders
from helpers.models import build_model
from helpers.models.summary import count_parameters
from helpers.training import devices, runs
from helpers.training.checkpoints import (
    CheckpointError,
    CheckpointWriteError,
    load_latest,
    make_state,
    restore_state,
    save_checkpoint,
    save_weights_atomic,
)
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


def lr_schedule(optimizer, total_steps: int, warmup_steps: int = 0,
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
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class SettingsChanged(RuntimeError):
    """A run folder's checkpoint or finished result was made with other settings than the ones asked for."""


def init_from_imagenet(model: torch.nn.Module) -> None:
    """Start a model from torchvision's ImageNet weights, through the torch hub cache (``$TORCH_HOME``; read from
    there without a download when the file is there): a UNet's or UNet++'s ResNet-34 encoder (``r34`` configs),
    or a TransUNet's ResNet-50 always and its ViT-B/16 where it fits."""
    from torchvision.models import ResNet50_Weights

    from helpers.models import load_encoder_weights, load_pretrained

    if getattr(model.config, "encoder", None):
        report = load_encoder_weights(model, download=True)
    elif not hasattr(model.config, "hidden_size"):
        raise ValueError(f"{type(model).__name__} with config {model.config} has no ImageNet weights; choose its 'r34' "
                         "configuration (model_configs) or take it out of pretrained")
    elif model.config.hidden_size == 768 and model.config.mlp_dim == 3072:  # ViT-B/16 sized
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
    local_dir: Path | None    # this runtime's copy of a checkpoint folder on Drive (None: the folder is local)
    local_fallback: bool      # on a failed write, go on with local checkpoints only (opt-in)
    device: torch.device
    dtype: torch.dtype | None
    dist: devices.DistInfo
    model: torch.nn.Module
    net: torch.nn.Module  # the model, in DistributedDataParallel under torchrun
    loaders: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    criterion: Callable
    config: dict
    save_every_s: float | None
    local_only: bool = False   # a checkpoint went to local disk only (LOCAL_FALLBACK): keep them all at the end
    history: list = dataclasses.field(default_factory=list)
    best: float = -math.inf
    start_epoch: int = 1
    skip: int = 0              # batches of start_epoch done before a mid-epoch checkpoint
    partial: tuple = (0.0, 0)  # their loss sum and image count
    finished: bool = False
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    def places(self) -> list[Path]:
        """Where this run's checkpoints may be: its folder, this runtime's local copy, ``<run>/checkpoints``."""
        return list(dict.fromkeys(p for p in (self.checkpoint_dir, self.local_dir, self.folder / "checkpoints") if p))

    def _save(self, save, name: str) -> None:
        try:
            save(self.checkpoint_dir / name, self.local_dir)
        except CheckpointWriteError as err:
            if not self.local_fallback:
                raise
            local = self.local_dir or self.folder / "checkpoints"
            if local == self.checkpoint_dir:
                raise
            if self.local_dir is None:
                save(local / name, None)
            self.local_only = True
            message = (f"⚠ LOCAL_FALLBACK: {name} is only on this runtime's disk ({local}); a disconnect loses it. "
                       f"Writing {self.checkpoint_dir / name} failed: {err.__cause__ or err}")
            print(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def checkpoint(self, epoch: int, batches_done: int = 0, partial=(0.0, 0)) -> None:
        """Save last.pt: ``epoch`` finished, plus ``batches_done`` batches of the next one."""
        state = make_state(self.model, self.optimizer, self.scheduler, self.scaler, epoch, self.best,
                           self.history, self.config)
        state.update(batches_done=batches_done, partial=list(partial), finished=self.finished)
        self._save(lambda path, local: save_checkpoint(state, path, local_copy=local), "last.pt")
        self.last_save = time.monotonic()

    def save_best(self, metric: float, epoch: int) -> None:
        """Save best.pt: the weights alone."""
        self._save(lambda path, local: save_weights_atomic(self.model, path, metric=metric, epoch=epoch,
                                                           local_copy=local), "best.pt")

    def drop_last(self) -> None:
        """Delete last.pt (and its previous copies) everywhere: a finished run keeps best.pt only."""
        for place in self.places():
            for name in ("last.pt", "last.prev.pt"):
                try:
                    (place / name).unlink(missing_ok=True)
                except OSError as err:  # e.g. Drive gone: the file stays, which costs space, not results
                    print(f"Could not delete {place / name} ({err}); delete it by hand to free its space.")


def start_run(spec: runs.RunSpec, prepared, checkpoint_dir=None, num_workers: int = 0,
              minutes: float | None = None, local_fallback: bool = False, gpu_memory_gb: float | None = None) -> RunState:
    """Build model, loaders, optimizer, schedule and scaler; resume from the newest checkpoint.

    Args:
        spec: the run: every setting that changes its result.
        prepared: its data.
        checkpoint_dir: where checkpoints go (None: ``<run folder>/checkpoints``).
        num_workers: loader worker processes.
        minutes: also checkpoint within an epoch this often (None: per epoch only).
        local_fallback: when a checkpoint write keeps failing, go on with local checkpoints only (a warning
            each time) instead of stopping.
        gpu_memory_gb: on CUDA, let the run use at most this many GB (:func:`devices.limit_memory`; None: no cap).

    Returns:
        The :class:`RunState`, at the point where training goes on.

    Raises:
        SettingsChanged: the run's checkpoint was written with other settings (the message names them).
    """
    info, device, folder = devices.setup(), pick_device(), runs.run_dir(spec)
    devices.limit_memory(device, gpu_memory_gb)  # before anything is allocated there
    seed_everything(spec.seed)  # the same start whatever ran before in this process
    model = build_model(spec.model, spec.model_config, **spec.model_overrides)
    model.to(device, memory_format=torch.channels_last)  # faster on CUDA and, measured, on the CPU too
    net = devices.wrap(model, device, info)
    loaders = make_loaders(prepared, spec.fraction, spec.batch_size, num_workers, spec.seed,
                           distributed=info.world_size > 1, augment=spec.augment == "kit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps, dtype = len(loaders.train), amp_dtype(device, spec.amp)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else folder / "checkpoints"
    config = {"run_id": runs.run_id(spec), **dataclasses.asdict(spec), "settings_hash": runs.settings_hash(spec),
              "prepared_dir": paths.portable(prepared.root, paths.data_dir()),
              "checkpoint_dir": paths.portable(checkpoint_dir, folder),
              "amp_dtype": str(dtype).removeprefix("torch.") if dtype else "off", "device": str(device),
              "hardware": devices.hardware(device, info), "gpu_memory_gb": gpu_memory_gb,
              "torch_version": str(torch.__version__),
              "params": count_parameters(model), "train_images": len(loaders.train.dataset)}
    schedule = lr_schedule(optimizer, spec.num_epochs * steps, round(spec.warmup_epochs * steps), spec.schedule)
    run = RunState(folder, checkpoint_dir, paths.mirror(checkpoint_dir), local_fallback, device, dtype, info, model,
                   net, loaders, optimizer, schedule, devices.grad_scaler(device, dtype), DiceBCELoss(), config,
                   minutes * 60 if minutes is not None else None)
    resume(run, spec)
    if spec.pretrained and not (run.history or run.skip):  # a fresh start: a resumed run has its trained weights
        init_from_imagenet(model)
    if info.is_main:
        runs.write_json(folder / "config.json", config)
    return run


def resume(run: RunState, spec: runs.RunSpec) -> None:
    """Continue from the newest readable checkpoint (of :meth:`RunState.places`), if there is one.

    Raises:
        SettingsChanged: the checkpoint's recorded settings differ from ``spec``'s.
    """
    found, problems = [], []
    for place in run.places():  # one unreadable place (e.g. a half-synced last.pt on Drive) does not stop the others
        try:
            found.append(load_latest(place, run.device))
        except CheckpointError as err:
            problems.append(str(err))
    if problems and not any(state for state, _ in found):
        raise CheckpointError(" | ".join(problems))
    state, path = max(((s, p) for s, p in found if s), key=lambda sp: (sp[0]["epoch"], sp[0]["batches_done"]),
                      default=(None, None))
    if state is None:
        return
    if changed := runs.differing_settings(state["config"], spec):
        raise SettingsChanged(
            f"{path} was written with other settings than this run's ({', '.join(changed)}), so it is not "
            f"resumed. Start this run over (RESTART = True in the notebook, --restart on the command line), "
            f"or ask for the settings it was made with.")
    info = restore_state(state, run.model, run.optimizer, run.scheduler, run.scaler)
    run.history, run.best, run.finished = info["history"], info["best_metric"], state["finished"]
    run.start_epoch, run.skip, run.partial = info["epoch"] + 1, state["batches_done"], tuple(state["partial"])
    if run.dist.is_main:
        at = f", batch {run.skip} of epoch {run.start_epoch}" if run.skip else ""
        print(f"Resuming {run.config['run_id']} from {path} (epoch {info['epoch']} done{at}).")
