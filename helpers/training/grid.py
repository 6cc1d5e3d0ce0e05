"""The study's grid, models × fractions × seeds (its command line:
:mod:`helpers.training.__main__`).

Every run's settings come from one :class:`~helpers.profiles.RunConfig`: the profile's, with the
notebook's parameters or the command line's options on top. Finished runs with the same settings
are skipped, interrupted ones resumed; a run with other settings gets a run id of its own.

Before it trains anything the grid says how much space its checkpoints need where they go (on Colab:
Google Drive) and refuses to start when less is free (:func:`space_needed`,
:class:`NotEnoughSpace`).
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pandas as pd
import torch
import torch.distributed

from helpers import paths, profiles
from helpers.models import build_model, input_multiple
from helpers.training import devices, engine, runs, stops

COLUMNS = ["run_id", "model", "fraction", "seed", "status", *runs.DONE_KEYS, "run_dir"]


def describe(config: profiles.RunConfig) -> str:
    """What a notebook is about to train, and on what: the profile, device, precision, models and
    settings.

    Raises:
        ValueError: an image size that a model of the grid cannot take (:func:`check_sizes`).
    """
    check_sizes(config)
    device = devices.pick_device()
    amp = devices.amp_dtype(device, config.amp)
    models = " · ".join(f"{m} {config.model_configs[m]!r}" for m in config.models)
    cap = (f" · GPU memory capped at {config.gpu_memory_gb:g} GB"
           if config.gpu_memory_gb and device.type == "cuda" else "")
    t4 = (" (the T4 path, emulated)"
          if cap and str(amp) == "torch.float16" and config.gpu_memory_gb <= 16 else "")
    return (f"profile {config.name}: {config.description}\n"
            f"device {device} · mixed precision {amp or 'off'}{cap}{t4} · {models} · "
            f"{config.image_size} px\n{config.num_epochs} epoch(s) per run · batch "
            f"{config.batch_size} · lr {config.lr:g} · fractions {list(config.fractions)} · seeds "
            f"{list(config.seeds)}"
            + (f" · UNet++ deep supervision {config.deep_supervision}" if "unetpp" in config.models
               else ""))


def check_sizes(config: profiles.RunConfig) -> None:
    """Refuse an image size that one of the grid's models cannot take, before anything is prepared
    or trained.

    Raises:
        ValueError: names the model, its config, the multiple it needs and the nearest size that
            works.
    """
    for model in config.models:
        overrides = config.model_overrides.get(model, {})
        step = input_multiple(model, config.model_configs.get(model, "paper"), **overrides)
        if config.image_size % step:
            near = max(step, round(config.image_size / step) * step)
            raise ValueError(f"IMAGE_SIZE = {config.image_size} does not fit {model} "
                             f"{config.model_configs.get(model, 'paper')!r}: its sides must be "
                             f"multiples of {step} (2 to the power of its poolings); use e.g. "
                             f"{near}.")


class NotEnoughSpace(OSError):
    """Less space is free where the checkpoints go than the grid needs."""


def checkpoint_bytes(model: str, model_config: str,
                     overrides: dict | None = None) -> tuple[int, int]:
    """Sizes of a model's ``best.pt`` (weights) and ``last.pt`` (weights, AdamW's two moments, the
    rest), in bytes.

    Counted from the model built on the ``meta`` device (no memory, no time), plus a small allowance
    for what a checkpoint adds (names, RNG states, history).
    """
    with torch.device("meta"):
        net = build_model(model, model_config, **(overrides or {}))
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    allowance = 256 * 1024 + 200 * len(net.state_dict())
    return weights + allowance, weights + 2 * params + 4 * allowance


def space_needed(config: profiles.RunConfig, prepared, *, keep_last: bool = False,
                 restart: bool = False) -> dict:
    """The most checkpoint space the grid uses at any time, for the runs it still has to train.

    Every run keeps ``best.pt`` (and ``last.pt`` with ``keep_last``); the run in training also has
    ``last.pt``, and while a file is replaced its new copy sits beside it for a moment.

    Returns:
        ``{"bytes": total, "runs": runs to train, "best": bytes per run's best.pt, "last": largest
        last.pt}``.
    """
    sizes, todo = {}, []
    for model in config.models:
        for fraction in config.fractions:
            for seed in config.seeds:
                spec = runs.make_spec(model, fraction, seed, prepared, config)
                if not restart and runs.is_finished(runs.run_dir(spec)):
                    continue
                key = (spec.model, spec.model_config, tuple(sorted(spec.model_overrides.items())))
                if key not in sizes:
                    overrides = {k: tuple(v) if isinstance(v, list) else v
                                 for k, v in spec.model_overrides.items()}
                    sizes[key] = checkpoint_bytes(spec.model, spec.model_config, overrides)
                todo.append(sizes[key])
    if not todo:
        return {"bytes": 0, "runs": 0, "best": 0, "last": 0}
    kept = sum(best + (last if keep_last else 0) for best, last in todo)
    # + new copies mid-write
    in_flight = max(best + (last if keep_last else 2 * last) for best, last in todo)
    return {"bytes": kept + in_flight, "runs": len(todo), "best": max(b for b, _ in todo),
            "last": max(last for _, last in todo)}


def check_space(config: profiles.RunConfig, prepared, folder: str | os.PathLike, *,
                keep_last: bool = False, restart: bool = False) -> dict:
    """Print the checkpoint space the grid needs and what is free in ``folder``; refuse when it is
    short.

    Raises:
        NotEnoughSpace: with the two figures and what to do.
    """
    need = space_needed(config, prepared, keep_last=keep_last, restart=restart)
    free = paths.free_bytes(folder)
    if need["runs"]:
        print(f"Checkpoint space: up to {paths.human_bytes(need['bytes'])} for {need['runs']} "
              f"run(s) still to train (best.pt up to {paths.human_bytes(need['best'])} each is "
              f"kept; last.pt up to {paths.human_bytes(need['last'])} while a run trains); "
              f"{paths.human_bytes(free)} free in {folder}.")
    if need["bytes"] > free:
        raise NotEnoughSpace(
            f"The grid needs up to {paths.human_bytes(need['bytes'])} for checkpoints in {folder}, "
            f"but only {paths.human_bytes(free)} is free there, so no run was started. Free space "
            f"there (on Google Drive: delete files and empty Drive's trash, which counts), or "
            f"train fewer runs at a time (FRACTIONS, MODELS, SEEDS), or choose another KIT_HOME.")
    return {**need, "free": free}


def _check_space_on_every_rank(config, prepared, folder, keep_last: bool, restart: bool) -> None:
    """Rank 0 checks the space; under torchrun every rank then stops, or none does (no rank waits
    for the others)."""
    info, error = devices.setup(), None
    if info.is_main:
        try:
            check_space(config, prepared, folder, keep_last=keep_last, restart=restart)
        except NotEnoughSpace as err:
            error = err
    if info.world_size > 1:
        failed = devices.all_reduce_sum(torch.tensor([float(error is not None)],
                                                     device=devices.pick_device()), info)
        if failed.item() and error is None:
            raise NotEnoughSpace(f"Rank 0 found too little space for the checkpoints in {folder} "
                                 f"(see its message).")
    if error is not None:
        raise error


Claim = Callable[[Path], AbstractContextManager | None]  # claim(run folder): held, or None if taken


def run_grid(config: profiles.RunConfig, prepared, *,
             checkpoint_root: str | os.PathLike | None = None, restart: bool = False,
             keep_last: bool = False, local_fallback: bool = False, callbacks: tuple = (),
             progress: bool = True, shard: tuple[int, int] | None = None,
             claim: Claim | None = None, wait_s: float = 10.0) -> pd.DataFrame:
    """Train every model of ``config`` on every fraction with every seed.

    A notebook's grid (one runtime) trains its runs in order. Workers that share a grid (the command
    line: ``python -m helpers.training``) pass ``claim``
    (:func:`helpers.training.claims.claim_run`): each run is claimed before it trains, so several
    processes started on one results folder train each run once; a run another worker holds is
    waited for, ``wait_s`` seconds at a time.

    Args:
        config: the run config (models, fractions, seeds and every training setting).
        prepared: the prepared dataset (made with the same config: image size and split seed).
        checkpoint_root: folder for one checkpoint folder per run (e.g. on Drive); default: in each
            run folder.
        restart: start every run over instead of resuming or skipping it.
        keep_last: keep each finished run's last.pt too (default best.pt only).
        local_fallback: when checkpoint writes keep failing (Drive full or gone), go on with them on
            local disk only instead of stopping.
        callbacks: called after every epoch as ``callback(run_id, history)`` (e.g. live curves).
        progress: show progress bars.
        shard: ``(i, n)``: only the grid's cells i, i + n, ... (a fixed split for schedulers); None:
            every cell.
        claim: ``claim(run folder)`` → a context manager that holds the run while it trains, or
            None when another worker holds it; None: nothing is claimed.
        wait_s: seconds between looks at the runs other workers hold.

    Returns:
        One row per run of this worker's cells: run_id, model, fraction, seed, status (trained,
        resumed, skipped, diverged, taken over: another worker trains it now), and done.json's
        fields.

    Raises:
        NotEnoughSpace: before training, when the checkpoints would not fit where they go.
        CheckpointWriteError: a checkpoint could not be written (and no ``local_fallback``).
        stops.Preempted: a signal asked to stop (:func:`helpers.training.stops.on_signals`); the run
            in training saved last.pt first.
    """
    _check_space_on_every_rank(config, prepared, checkpoint_root or paths.results_dir(), keep_last,
                               restart)
    cells = [(m, f, s) for m in config.models for f in config.fractions for s in config.seeds]
    pending = cells[shard[0]::shard[1]] if shard else cells
    options = {"restart": restart, "keep_last": keep_last, "local_fallback": local_fallback,
               "callbacks": callbacks, "progress": progress}
    rows = {}
    while pending:
        held = []
        for model, fraction, seed in pending:
            spec = runs.make_spec(model, fraction, seed, prepared, config)
            stops.stop_if_requested(f"before {runs.run_id(spec)} started, every earlier run saved")
            holding = claim(runs.run_dir(spec)) if claim else contextlib.nullcontext(True)
            if holding is None:  # another live worker trains it
                held.append((model, fraction, seed))
                continue
            with holding:
                result = _train_one(spec, prepared, config, checkpoint_root, **options)
            rows[model, fraction, seed] = {"model": model, "fraction": fraction,
                                           "seed": seed, **result}
        if held:
            print(f"{len(held)} run(s) held by other workers: waiting for them (or for their "
                  f"heartbeat to stop).", flush=True)
            time.sleep(wait_s)
            stops.stop_if_requested("while waiting for runs that other workers hold")
        # a run another worker finished is not started over
        pending, options["restart"] = held, False
    ordered = [rows[cell] for cell in cells if cell in rows]
    return pd.DataFrame(ordered).reindex(columns=COLUMNS)


def _train_one(spec: runs.RunSpec, prepared, config: profiles.RunConfig, checkpoint_root,
               **options) -> dict:
    """Train (resume, or skip) one run of the grid; a run that diverges is reported, and the grid
    goes on."""
    where = Path(checkpoint_root) / runs.run_id(spec) if checkpoint_root else None
    try:
        return engine.fit(spec, prepared, num_workers=config.num_workers, checkpoint_dir=where,
                          checkpoint_minutes=config.checkpoint_minutes,
                          gpu_memory_gb=config.gpu_memory_gb, **options)
    except engine.TrainingDiverged as err:
        print(err)
        return {"run_id": runs.run_id(spec), "run_dir": str(runs.run_dir(spec)),
                "status": "diverged"}
    except stops.TakenOver as err:  # another worker trains it now
        print(err)
        return {"run_id": runs.run_id(spec), "run_dir": str(runs.run_dir(spec)),
                "status": "taken over"}
