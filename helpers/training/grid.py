"""The study's grid, models × fractions × seeds, and its command line.

    python -m helpers.training --profile cpu --models unet,unetpp --fractions 0.1,1.0 --lr 3e-4
    torchrun --standalone --nproc_per_node=4 -m helpers.training --profile t4 --data-source folder --data-dir D

Every run's settings come from one :class:`~helpers.profiles.RunConfig`: the profile's, with the
notebook's parameters or the command line's options on top. Finished runs with the same settings
are skipped, interrupted ones resumed; a run with other settings gets a run id of its own.

Before it trains anything the grid says how much space its checkpoints need where they go (on Colab:
Google Drive) and refuses to start when less is free (:func:`space_needed`, :class:`NotEnoughSpace`).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.distributed

from helpers import cli, paths, profiles
from helpers.data import study
from helpers.models import build_model, input_multiple
from helpers.training import claims, devices, loop, runs

COLUMNS = ["run_id", "model", "fraction", "seed", "status", *runs.DONE_KEYS, "run_dir"]


def describe(config: profiles.RunConfig) -> str:
    """What a notebook is about to train, and on what: the profile, device, precision, models and settings.

    Raises:
        ValueError: an image size that a model of the grid cannot take (:func:`check_sizes`).
    """
    check_sizes(config)
    device = devices.pick_device()
    amp = devices.amp_dtype(device, config.amp)
    models = " · ".join(f"{m} {config.model_configs[m]!r}" for m in config.models)
    cap = f" · GPU memory capped at {config.gpu_memory_gb:g} GB" if config.gpu_memory_gb and device.type == "cuda" else ""
    t4 = " (the T4 path, emulated)" if cap and str(amp) == "torch.float16" and config.gpu_memory_gb <= 16 else ""
    return (f"profile {config.name}: {config.description}\n"
            f"device {device} · mixed precision {amp or 'off'}{cap}{t4} · {models} · {config.image_size} px\n"
            f"{config.num_epochs} epoch(s) per run · batch {config.batch_size} · lr {config.lr:g} · fractions "
            f"{list(config.fractions)} · seeds {list(config.seeds)}"
            + (f" · UNet++ deep supervision {config.deep_supervision}" if "unetpp" in config.models else ""))


def check_sizes(config: profiles.RunConfig) -> None:
    """Refuse an image size that one of the grid's models cannot take, before anything is prepared or trained.

    Raises:
        ValueError: names the model, its config, the multiple it needs and the nearest size that works.
    """
    for model in config.models:
        overrides = config.model_overrides.get(model, {})
        step = input_multiple(model, config.model_configs.get(model, "paper"), **overrides)
        if config.image_size % step:
            near = max(step, round(config.image_size / step) * step)
            raise ValueError(f"IMAGE_SIZE = {config.image_size} does not fit {model} "
                             f"{config.model_configs.get(model, 'paper')!r}: its sides must be multiples of {step} "
                             f"(2 to the power of its poolings); use e.g. {near}.")


class NotEnoughSpace(OSError):
    """Less space is free where the checkpoints go than the grid needs."""


def checkpoint_bytes(model: str, model_config: str, overrides: dict | None = None) -> tuple[int, int]:
    """Sizes of a model's ``best.pt`` (weights) and ``last.pt`` (weights, AdamW's two moments, the rest), in bytes.

    Counted from the model built on the ``meta`` device (no memory, no time), plus a small allowance for
    what a checkpoint adds (names, RNG states, history).
    """
    with torch.device("meta"):
        net = build_model(model, model_config, **(overrides or {}))
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    allowance = 256 * 1024 + 200 * len(net.state_dict())
    return weights + allowance, weights + 2 * params + 4 * allowance


def space_needed(config: profiles.RunConfig, prepared, *, keep_last: bool = False, restart: bool = False) -> dict:
    """The most checkpoint space the grid uses at any time, for the runs it still has to train.

    Every run keeps ``best.pt`` (and ``last.pt`` with ``keep_last``); the run in training also has
    ``last.pt``, and while a file is replaced its new copy sits beside it for a moment.

    Returns:
        ``{"bytes": total, "runs": runs to train, "best": bytes per run's best.pt, "last": largest last.pt}``.
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
                    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.model_overrides.items()}
                    sizes[key] = checkpoint_bytes(spec.model, spec.model_config, overrides)
                todo.append(sizes[key])
    if not todo:
        return {"bytes": 0, "runs": 0, "best": 0, "last": 0}
    kept = sum(best + (last if keep_last else 0) for best, last in todo)
    in_flight = max(best + (last if keep_last else 2 * last) for best, last in todo)  # + new copies mid-write
    return {"bytes": kept + in_flight, "runs": len(todo), "best": max(b for b, _ in todo),
            "last": max(last for _, last in todo)}


def check_space(config: profiles.RunConfig, prepared, folder: str | os.PathLike, *, keep_last: bool = False,
                restart: bool = False) -> dict:
    """Print the checkpoint space the grid needs and what is free in ``folder``; refuse when it is short.

    Raises:
        NotEnoughSpace: with the two figures and what to do.
    """
    need = space_needed(config, prepared, keep_last=keep_last, restart=restart)
    free = paths.free_bytes(folder)
    if need["runs"]:
        print(f"Checkpoint space: up to {paths.human_bytes(need['bytes'])} for {need['runs']} run(s) still to train "
              f"(best.pt up to {paths.human_bytes(need['best'])} each is kept; last.pt up to "
              f"{paths.human_bytes(need['last'])} while a run trains); {paths.human_bytes(free)} free in {folder}.")
    if need["bytes"] > free:
        raise NotEnoughSpace(
            f"The grid needs up to {paths.human_bytes(need['bytes'])} for checkpoints in {folder}, but only "
            f"{paths.human_bytes(free)} is free there, so no run was started. Free space there (on Google Drive: "
            f"delete files and empty Drive's trash, which counts), or train fewer runs at a time (FRACTIONS, MODELS, "
            f"SEEDS), or choose another KIT_HOME.")
    return {**need, "free": free}


def _check_space_on_every_rank(config, prepared, folder, keep_last: bool, restart: bool) -> None:
    """Rank 0 checks the space; under torchrun every rank then stops, or none does (no rank waits for the others)."""
    info, error = devices.setup(), None
    if info.is_main:
        try:
            check_space(config, prepared, folder, keep_last=keep_last, restart=restart)
        except NotEnoughSpace as err:
            error = err
    if info.world_size > 1:
        failed = devices.all_reduce_sum(torch.tensor([float(error is not None)], device=devices.pick_device()), info)
        if failed.item() and error is None:
            raise NotEnoughSpace(f"Rank 0 found too little space for the checkpoints in {folder} (see its message).")
    if error is not None:
        raise error


def run_grid(config: profiles.RunConfig, prepared, *, checkpoint_root: str | os.PathLike | None = None,
             restart: bool = False, keep_last: bool = False, local_fallback: bool = False,
             callbacks: tuple = (), progress: bool = True, shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Train every model of ``config`` on every fraction with every seed; shared with any other worker.

    Each run is claimed before it trains (:mod:`helpers.training.claims`), so several processes started on one
    results folder train each run once; a run another worker holds is waited for, and taken over when that
    worker's heartbeat stops. Under torchrun the ranks train each run together, and nothing is claimed.

    Args:
        config: the run config (models, fractions, seeds and every training setting).
        prepared: the prepared dataset (made with the same config: image size and split seed).
        checkpoint_root: folder for one checkpoint folder per run (e.g. on Drive); default: in each run folder.
        restart: start every run over instead of resuming or skipping it.
        keep_last: keep each finished run's last.pt too (default best.pt only).
        local_fallback: when checkpoint writes keep failing (Drive full or gone), go on with them on local disk
            only instead of stopping.
        callbacks: called after every epoch as ``callback(run_id, history)`` (e.g. live curves).
        progress: show progress bars.
        shard: ``(i, n)``: only the grid's cells i, i + n, ... (a fixed split for schedulers); None: every cell.

    Returns:
        One row per run of this worker's cells: run_id, model, fraction, seed, status (trained, resumed, skipped,
        diverged), and done.json's fields.

    Raises:
        NotEnoughSpace: before training, when the checkpoints would not fit where they go.
        CheckpointWriteError: a checkpoint could not be written (and no ``local_fallback``).
    """
    _check_space_on_every_rank(config, prepared, checkpoint_root or paths.results_dir(), keep_last, restart)
    cells = [(m, f, s) for m in config.models for f in config.fractions for s in config.seeds]
    pending = [cell for k, cell in enumerate(cells) if claims.in_shard(k, shard)]
    shared = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    rows = {}
    while pending:
        held = []
        for model, fraction, seed in pending:
            spec = runs.make_spec(model, fraction, seed, prepared, config)
            claim = claims.claim_run(runs.run_dir(spec)) if shared else contextlib.nullcontext(True)
            if claim is None:  # another live worker trains it
                held.append((model, fraction, seed))
                continue
            with claim:
                result = _train_one(spec, prepared, config, checkpoint_root, restart=restart, keep_last=keep_last,
                                    local_fallback=local_fallback, callbacks=callbacks, progress=progress)
            rows[model, fraction, seed] = {"model": model, "fraction": fraction, "seed": seed, **result}
        if held:
            print(f"{len(held)} run(s) held by other workers: waiting for them (or for their heartbeat to stop).",
                  flush=True)
            time.sleep(claims.heartbeat_every())
        pending, restart = held, False  # a run another worker finished is not started over
    ordered = [rows[cell] for cell in cells if cell in rows]
    return pd.DataFrame(ordered).reindex(columns=COLUMNS)


def _train_one(spec: runs.RunSpec, prepared, config: profiles.RunConfig, checkpoint_root, **options) -> dict:
    """Train (resume, or skip) one run of the grid; a run that diverges is reported, and the grid goes on."""
    where = Path(checkpoint_root) / runs.run_id(spec) if checkpoint_root else None
    try:
        return loop.fit(spec, prepared, num_workers=config.num_workers, checkpoint_dir=where,
                        checkpoint_minutes=config.checkpoint_minutes, gpu_memory_gb=config.gpu_memory_gb,
                        **options)
    except loop.TrainingDiverged as err:
        print(err)
        return {"run_id": runs.run_id(spec), "run_dir": str(runs.run_dir(spec)), "status": "diverged"}


LISTS = ("models", "fractions", "seeds", "pretrained")  # options that take several values: a,b or a b


def _add_setting(parse: argparse.ArgumentParser, name: str) -> None:
    """One RunConfig setting as an option, from its declaration: flag, help, choices and each profile's value."""
    flag = profiles.option(name)
    if flag is None:
        return
    if profiles.SETTINGS[name].type == "bool":  # a switch that turns a default-on setting off
        parse.add_argument(flag, dest=name, action="store_false", default=None, help=profiles.describe_setting(name))
        return
    choices = profiles.CHOICES.get(name)
    parse.add_argument(flag, dest=name, default=None, nargs="+" if name in LISTS else None, choices=choices,
                       metavar=name.upper() if choices is None else None, help=profiles.describe_setting(name))


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.training``, derived from the settings' declarations."""
    parse = argparse.ArgumentParser(prog="python -m helpers.training",
                                    description="Train models × fractions × seeds of the study notebook 01 recorded "
                                                "(on every GPU under torchrun). Every option left out takes the "
                                                "profile's value.")
    parse.add_argument("--profile", default="", choices=["", *profiles.PROFILES],
                       help="the study's profile (default: the recorded study's; without one, $KIT_PROFILE, else t4 "
                            "on Colab or with a GPU and cpu otherwise)")
    for name in study.DATA_KEYS:
        meta = study.Study.__dataclass_fields__[name].metadata
        parse.add_argument("--" + name.replace("_", "-"), dest=name, default=None, choices=meta["choices"] or None,
                           help=f"{meta['help']} (default: the recorded study's)")
    for name in profiles.SETTINGS:
        _add_setting(parse, name)
    for name, help_text in study.GRID_OPTIONS.items():
        parse.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", help=help_text)
    parse.add_argument("--new-study", action="store_true",
                       help="record these data settings as the study (as notebook 01 does) instead of following it")
    parse.add_argument("--checkpoint-root", default="", help="folder for <run_id>/ checkpoint folders")
    parse.add_argument("--shard", default="", metavar="I/N",
                       help="train only the grid's cells I, I+N, I+2N, ... (a fixed split, e.g. a Slurm array's "
                            "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); default: every cell, shared with any other "
                            "worker on the same results folder")
    return cli.add_debug(parse)


def settings_from_args(args: argparse.Namespace) -> dict:
    """The settings the parsed options give (None: not given), by their declared names."""
    names = [*study.DATA_KEYS, *(n for n in profiles.SETTINGS if profiles.option(n)), *study.GRID_OPTIONS]
    values = {name: getattr(args, name) for name in names}
    for name in LISTS:  # --models unet unetpp, or --models unet,unetpp
        if values.get(name) is not None:
            values[name] = ",".join(values[name])
    return values


def config_from_args(args: argparse.Namespace) -> profiles.RunConfig:
    """The run config the parsed options ask for (the study's profile and data settings when one is recorded)."""
    return _choice(args).config


def _choice(args: argparse.Namespace) -> study.Choice:
    values = settings_from_args(args)
    if args.new_study:
        chosen = study.choose(args.profile, {k: v for k, v in values.items() if k in study.STUDY_KEYS})
        values = {k: v for k, v in values.items() if k not in study.STUDY_KEYS}
        return study.follow(chosen.study.profile, values)
    return study.follow(args.profile, values)


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        shard = claims.parse_shard(args.shard)  # every value checked before the study is read or recorded
        choice = _choice(args)
    except ValueError as err:
        raise cli.BadValue(str(err)) from None
    config = choice.config
    check_sizes(config)
    info = devices.setup()
    for turn in ("main", "others"):  # rank 0 prepares the cache first, the others then reuse it
        if info.is_main == (turn == "main"):
            data = study.prepare(config, choice.study)
        devices.barrier(info)
    table = run_grid(config, data, checkpoint_root=args.checkpoint_root or None, progress=info.is_main,
                     shard=shard, **choice.options)
    if info.is_main:
        print(table.to_string(index=False))
    if info.world_size > 1:
        torch.distributed.destroy_process_group()
    diverged = table.loc[table["status"] == "diverged", "run_id"].tolist()
    if diverged:
        print(f"✗ {len(diverged)} run(s) diverged (loss not finite): {', '.join(diverged)}; lower --lr or add "
              f"--warmup-epochs, then run again.", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train a grid from the command line (one process, or one per GPU under ``torchrun``).

    Returns:
        0 when every run finished, 1 when a run diverged or failed, 2 for a value refused where it entered.
    """
    return cli.run(_main, argv)
