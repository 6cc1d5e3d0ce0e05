"""``python -m helpers.training``: train the study's grid from the command line.

    python -m helpers.training --profile cpu --models unet,unetpp --fractions 0.1,1.0 --lr 3e-4
    torchrun --standalone --nproc_per_node=4 -m helpers.training --profile t4 --data-source folder \\
        --data-dir D

The options derive from the settings' declarations (:data:`helpers.profiles.SETTINGS`, the study's
fields, :data:`helpers.data.study.GRID_OPTIONS`). Several such processes started on one results
folder share the grid: each run is claimed before it trains (:mod:`helpers.training.claims`), and
``--shard I/N`` splits it in a fixed way instead. Under torchrun the ranks train each run together,
and nothing is claimed. The grid itself: :func:`helpers.training.grid.run_grid`.

SIGTERM (a scheduler's preemption) or SIGUSR1 (Slurm's ``--signal``) stops it cleanly: the run in
training saves last.pt at its next batch, releases its claim, one line says how to resume, and the
exit code is 75 (:mod:`helpers.training.stops`); the same command then resumes it.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.distributed

from helpers import cli, paths, profiles
from helpers.data import study
from helpers.models import list_configs
from helpers.training import claims, devices, grid, stops

LISTS = ("models", "fractions", "seeds", "pretrained")  # options that take several values: a,b or a b


def _add_setting(parse: argparse.ArgumentParser, name: str) -> None:
    """One RunConfig setting as an option, from its declaration: flag, help, choices and each
    profile's value."""
    flag = profiles.option(name)
    if flag is None:
        return
    help_text = profiles.describe_setting(name)
    if profiles.SETTINGS[name].type == "bool":  # a switch that turns a default-on setting off
        parse.add_argument(flag, dest=name, action="store_false", default=None, help=help_text)
        return
    choices = profiles.CHOICES.get(name)
    parse.add_argument(flag, dest=name, default=None, nargs="+" if name in LISTS else None,
                       choices=choices, metavar=name.upper() if choices is None else None,
                       help=help_text)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.training``, derived from the settings' declarations."""
    parse = argparse.ArgumentParser(
        prog="python -m helpers.training",
        description="Train models × fractions × seeds of the study notebook 01 recorded (on every "
                    "GPU under torchrun). Every option left out takes the profile's value.")
    parse.add_argument("--profile", default="", choices=["", *profiles.PROFILES],
                       help="the study's profile (default: the recorded study's; without one, "
                            "$KIT_PROFILE, else class on Colab or with a GPU and cpu otherwise)")
    for name in study.DATA_KEYS:
        meta = study.Study.__dataclass_fields__[name].metadata
        parse.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           choices=meta["choices"] or None,
                           help=f"{meta['help']} (default: the recorded study's)")
    for name in profiles.SETTINGS:
        _add_setting(parse, name)
    for name, help_text in study.GRID_OPTIONS.items():
        parse.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true",
                           help=help_text)
    parse.add_argument("--new-study", action="store_true",
                       help="record these data settings as the study (as notebook 01 does) instead "
                            "of following it")
    parse.add_argument("--checkpoint-root", default="", help="folder for <run_id>/ checkpoint folders")
    parse.add_argument("--model-config", default=None, metavar="MODEL=CONFIG,...",
                       help="named configurations of the models, comma-separated, e.g. unetpp=r34 or "
                            f"unet=small,unetpp=r34 (configs: {_config_names()})")
    parse.add_argument("--out", default=None, help="the results folder the run folders go into (default: "
                                                    "$KIT_RESULTS_DIR, else the kit's results/)")
    cli.add_device(parse)
    parse.add_argument("--shard", default="", metavar="I/N",
                       help="train only the grid's cells I, I+N, I+2N, ... (a fixed split, e.g. a "
                            "Slurm array's $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); default: "
                            "every cell, shared with any other worker on the same results folder")
    return cli.add_debug(parse)


def _config_names() -> str:
    return "; ".join(f"{model}: {', '.join(names)}" for model, names in list_configs().items())


def model_configs(text: str | None) -> dict | None:
    """``--model-config unet=small,unetpp=r34`` as ``{"unet": "small", "unetpp": "r34"}`` (None: not
    given; :func:`helpers.cli.model_config_pairs` against the model registry)."""
    return cli.model_config_pairs(text, list_configs())


def settings_from_args(args: argparse.Namespace) -> dict:
    """The settings the parsed options give (None: not given), by their declared names."""
    names = [*study.DATA_KEYS, *(n for n in profiles.SETTINGS if profiles.option(n)),
             *study.GRID_OPTIONS]
    values = {name: getattr(args, name) for name in names}
    for name in LISTS:  # --models unet unetpp, or --models unet,unetpp
        if values.get(name) is not None:
            values[name] = ",".join(values[name])
    if (configs := model_configs(getattr(args, "model_config", None))) is not None:
        values["model_configs"] = configs
    return values


def config_from_args(args: argparse.Namespace) -> profiles.RunConfig:
    """The run config the parsed options ask for (the study's profile and data settings when one is
    recorded)."""
    return _choice(args).config


def _choice(args: argparse.Namespace) -> study.Choice:
    values = settings_from_args(args)
    if args.new_study:
        chosen = study.choose(args.profile, {k: v for k, v in values.items() if k in study.STUDY_KEYS})
        values = {k: v for k, v in values.items() if k not in study.STUDY_KEYS}
        return study.follow(chosen.study.profile, values)
    return study.follow(args.profile, values)


def _sharing(info: devices.DistInfo) -> dict:
    """How this worker shares the grid: claims when it is one process, none under torchrun (the
    ranks train each run together)."""
    if info.world_size > 1:
        return {}
    stops.add_guard(claims.lost_message)  # a run taken over by another worker stops before a save
    return {"claim": claims.claim_run, "wait_s": claims.heartbeat_every()}


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    cli.check_device(args.device)
    scoped = {paths.RESULTS_ENV: cli.check_out_folder(args.out, "--out").resolve()} if args.out else {}
    if args.device:
        scoped[cli.DEVICE_ENV] = args.device
    with paths.scoped_env(**scoped):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    try:
        shard = claims.parse_shard(args.shard)  # every value checked before the study is read
        choice = _choice(args)
    except ValueError as err:
        raise cli.BadValue(str(err)) from None
    config = choice.config
    grid.check_sizes(config)
    info = devices.setup()
    try:
        with stops.on_signals():  # SIGTERM, SIGUSR1: save, release the claim, say how to resume
            table = _prepare_and_train(args, choice, info, shard)
    except stops.Preempted as err:
        print(err, file=sys.stderr, flush=True)
        return stops.EXIT_CODE
    if info.is_main:
        print(table.to_string(index=False))
    if info.world_size > 1:
        torch.distributed.destroy_process_group()
    diverged = table.loc[table["status"] == "diverged", "run_id"].tolist()
    if diverged:
        print(f"✗ {len(diverged)} run(s) diverged (loss not finite): {', '.join(diverged)}; lower "
              f"--lr or add --warmup-epochs, then run again.", file=sys.stderr)
        return 1
    return 0


def _prepare_and_train(args: argparse.Namespace, choice: study.Choice, info: devices.DistInfo,
                       shard: tuple[int, int] | None):
    """Prepare the study's data (rank 0 first, the others then reuse it), then train the grid."""
    for turn in ("main", "others"):
        if info.is_main == (turn == "main"):
            data = study.prepare(choice.config, choice.study)
        devices.barrier(info)
    return grid.run_grid(choice.config, data, checkpoint_root=args.checkpoint_root or None,
                         progress=info.is_main, shard=shard, **_sharing(info), **choice.options)


def main(argv: list[str] | None = None) -> int:
    """Train a grid from the command line (one process, or one per GPU under ``torchrun``).

    Returns:
        0 when every run finished, 1 when a run diverged or failed, 2 for a value refused where it
        entered, 75 (:data:`helpers.training.stops.EXIT_CODE`) when SIGTERM or SIGUSR1 stopped it:
        the run in training saved last.pt first, and the same command resumes it.
    """
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
