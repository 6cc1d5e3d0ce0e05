"""Run names and run folders: what one training run is, where its files are, how to load it back.

A run is one model trained on one training fraction of one prepared dataset with one seed and one
set of settings (:class:`RunSpec`). Its name comes from one function, :func:`run_id`, e.g.
``unet-paper_f025_256px_seed_s42_isic2018_3f9c01ab`` (the last part hashes every setting), and its
folder is ``results/runs/<run_id>/``:

    config.json        what was run: every setting of the spec, data and checkpoint folders
                       (relative to the data and results homes, so the folder moves between
                       machines), hardware
    history.csv        one row per epoch: epoch, train_loss, val_loss, val_dice (mean per image),
                       lr (after the epoch's last step), epoch_seconds, images_per_s (training),
                       peak_gpu_gb (the most GPU memory its tensors held in the epoch; empty on the
                       CPU)
    done.json          only once the run finished: best_epoch, best_val_dice, epochs,
                       train_seconds, images_per_s, peak_gpu_gb (over all epochs; null on the CPU),
                       stopped_early, status
    checkpoints/       best.pt, and while it trains last.pt (+ last.prev.pt, on local disk only when
                       the results are on Drive); or in the folder named in config.json

Evaluation adds ``test_metrics.csv`` and ``eval.json`` to the same folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from helpers import paths
from helpers.data.prep import Prepared, load_prepared
from helpers.models import build_model, list_configs
from helpers.profiles import PER_RUN, SETTINGS, RunConfig
from helpers.training.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    restore_state,
)

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_seconds",
                   "images_per_s", "peak_gpu_gb"]
DONE_KEYS = ["best_epoch", "best_val_dice", "epochs", "train_seconds", "images_per_s",
             "peak_gpu_gb", "stopped_early"]


def _per_run_settings() -> type:
    """A frozen dataclass of the settings every run copies from its RunConfig
    (:data:`~helpers.profiles.PER_RUN`).

    Derived from RunConfig's declarations: the same names, types and defaults; a setting that does
    not change the result (``recipe``, a label) is left out of the comparison, and so out of the run
    id.
    """
    spec_fields = []
    for name in PER_RUN:
        declared = SETTINGS[name]
        spec_fields.append((name, declared.type,
                            field(default=declared.default, compare=declared.metadata["result"])))
    return make_dataclass("PerRunSettings", spec_fields, frozen=True, kw_only=True)


@dataclass(frozen=True, kw_only=True)
class RunSpec(_per_run_settings()):
    """What makes a run: every setting its result depends on (and so its run id).

    The training settings (``num_epochs``, ``batch_size``, ``lr``, ...:
    :data:`~helpers.profiles.PER_RUN`) come from :class:`~helpers.profiles.RunConfig`'s
    declarations, with its defaults; the fields below are the run's own.

    Attributes:
        model: ``unet``, ``unetpp`` or ``transunet``.
        model_config: named configuration in the model registry (``paper``, ``small``, ``cpu``,
            ``tiny``).
        fraction: training fraction, e.g. 0.25.
        image_size: side of the square training images.
        protocol: ``seed`` or ``official``.
        dataset: name of the data source, e.g. ``synthetic-60-s0`` or ``isic2018``.
        seed: initialisation, batch order and augmentation seed.
        split_seed: seed of the split and the fractions (the prepared cache's).
        model_overrides: config fields changed on top of the named config, e.g.
            ``{"deep_supervision": True}``.
        pretrained: start from ImageNet weights.
    """

    model: str
    model_config: str
    fraction: float
    image_size: int
    protocol: str
    dataset: str
    seed: int
    split_seed: int = RunConfig.split_seed
    model_overrides: dict = field(default_factory=dict)
    pretrained: bool = False


# what changes a result (id, hash)
SPEC_FIELDS = tuple(sorted(f.name for f in fields(RunSpec) if f.compare))
TRAINING_SETTINGS = PER_RUN  # the spec fields copied unchanged from the RunConfig of the same name
# settings left out of the run id at their default (ema_epochs = 0: no average), so that the runs
# made before they existed keep their ids
NEUTRAL = {name: SETTINGS[name].default for name in PER_RUN if SETTINGS[name].metadata["neutral"]}


def _tag(key: str, value: Any) -> str:
    if value is True:
        return key
    if value is False:
        return f"no_{key}"
    if isinstance(value, (list, tuple)):
        value = "x".join(map(str, value))
    return f"{key}{value}"


def settings_of(spec_or_config: RunSpec | dict) -> dict:
    """The result-changing settings of a spec, or of a recorded config, as plain JSON values; a
    neutral setting (:data:`NEUTRAL`) at its default, or not recorded, is left out."""
    values = asdict(spec_or_config) if isinstance(spec_or_config, RunSpec) else spec_or_config
    kept = {k: values.get(k) for k in SPEC_FIELDS
            if not (k in NEUTRAL and values.get(k) in (None, NEUTRAL[k]))}
    return json.loads(json.dumps(kept, sort_keys=True))


def settings_hash(spec: RunSpec) -> str:
    """Eight hex digits that change with any result-changing setting of the run."""
    return hashlib.sha256(json.dumps(settings_of(spec), sort_keys=True).encode()).hexdigest()[:8]


def run_id(spec: RunSpec) -> str:
    """The one name of a run: a readable part and the hash of all its settings.

    ``<model>-<config>[+overrides]_f<percent>_<size>px_<protocol>_s<seed>_<dataset>_<hash>``, e.g.
    ``unet-paper_f025_256px_seed_s42_isic2018_3f9c01ab``: change the epochs, lr or any other
    result-changing setting and the run gets a folder of its own.

    Raises:
        ValueError: the fraction is not a whole percentage.
    """
    percent = spec.fraction * 100
    if not 0 < percent <= 100 or abs(percent - round(percent)) > 1e-6:
        raise ValueError(f"fraction {spec.fraction} is not a whole percentage in (0, 100]; use "
                         f"e.g. 0.1 or 0.25.")
    config = spec.model_config + "".join(f"+{_tag(k, v)}"
                                         for k, v in sorted(spec.model_overrides.items()))
    config += "+pretrained" if spec.pretrained else ""
    name = (f"{spec.model}-{config}_f{round(percent):03d}_{spec.image_size}px_"
            f"{spec.protocol}_s{spec.seed}")
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{name}_{spec.dataset}_{settings_hash(spec)}")


def dataset_of(prepared: Prepared) -> str:
    """The data-source name of a prepared cache (its folder name without protocol, size and
    seed)."""
    manifest = prepared.manifest
    suffix = f"_{manifest.get('protocol')}_{manifest.get('image_size')}px_s{manifest.get('seed')}"
    return prepared.root.name.removesuffix(suffix) or prepared.root.name


def make_spec(model: str, fraction: float, seed: int, prepared: Prepared,
              config: RunConfig) -> RunSpec:
    """The spec of one grid cell: every setting from the run config, the data's from the cache.

    Raises:
        ValueError: the cache was prepared at another image size or split seed than the config's.
    """
    size, split_seed = int(prepared.manifest["image_size"]), int(prepared.manifest["seed"])
    if (size, split_seed) != (config.image_size, config.split_seed):
        raise ValueError(f"{prepared.root} holds {size}px images split with seed {split_seed}, but "
                         f"the run config asks for {config.image_size}px and split seed "
                         f"{config.split_seed}; prepare the data with the same config "
                         f"(sources.ensure_prepared).")
    overrides = dict(config.model_overrides.get(model, {}))
    if model == "unetpp":
        overrides.setdefault("deep_supervision", config.deep_supervision)
    return RunSpec(model=model, model_config=config.model_configs.get(model, "paper"),
                   fraction=float(fraction), image_size=size,
                   protocol=str(prepared.manifest["protocol"]), dataset=dataset_of(prepared),
                   seed=int(seed), split_seed=split_seed, model_overrides=overrides,
                   pretrained=model in config.pretrained,
                   **{name: getattr(config, name) for name in TRAINING_SETTINGS})


def differing_settings(recorded: dict, spec: RunSpec) -> list[str]:
    """Names of the result-changing settings whose recorded value differs from the spec's.

    A config written before a setting existed lacks it; such a missing setting counts as different.
    """
    wanted, have = settings_of(spec), settings_of(recorded)
    return [k for k in SPEC_FIELDS if wanted.get(k, NEUTRAL.get(k)) != have.get(k, NEUTRAL.get(k))]


def run_dir(spec_or_id: RunSpec | str) -> Path:
    """``results/runs/<run_id>`` (not created)."""
    name = run_id(spec_or_id) if isinstance(spec_or_id, RunSpec) else str(spec_or_id)
    return paths.results_dir() / "runs" / name


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON via a temp file and a rename (never half-written)."""
    return paths.write_atomic(path,
                              lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=str)))


def write_history(folder: Path, history: list[dict]) -> Path:
    """Write ``history.csv`` (one row per epoch, :data:`HISTORY_COLUMNS`) via a temp file and a
    rename."""
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    return paths.write_atomic(folder / "history.csv", lambda tmp: table.to_csv(tmp, index=False))


def read_history(folder: str | os.PathLike) -> pd.DataFrame:
    """A run's ``history.csv``, its floats read back exactly as they were written (whatever the
    pandas version).

    Raises:
        ValueError: the file is unreadable, lacks the epoch/loss/Dice columns or holds non-numbers
            there (the message names it).
    """
    path = Path(folder) / "history.csv"
    # 3.x: the default
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    try:
        table = pd.read_csv(path, **exact)
    except (UnicodeDecodeError, ValueError) as err:  # ParserError, EmptyDataError are ValueErrors
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]}); delete the run folder and train it "
                         f"again.") from None
    needed = HISTORY_COLUMNS[:4]
    missing = [c for c in needed if c not in table.columns]
    if missing or any(not pd.api.types.is_numeric_dtype(table[c]) for c in needed):
        what = (f"no columns {', '.join(missing)}" if missing
                else f"non-numbers in {', '.join(needed)}")
        raise ValueError(f"{path} is garbled ({what}); delete the run folder and train it again.")
    # an epoch written twice (a resume that repeated it): its last row counts, in epoch order
    table = table.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
    return table.reset_index(drop=True)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a run's file (config.json, done.json, eval.json...).

    Raises:
        ValueError: the file is truncated, not JSON or not an object (the message names it).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is unreadable (truncated or not JSON: {err}); restore it from a "
                         f"copy, or delete the run folder and run it again.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object; restore it "
                         f"from a copy.")
    return value


def summarize(history: list[dict], stopped_early: bool) -> dict:
    """The ``done.json`` of a history: best epoch and Dice, epochs, seconds, throughput, peak GPU
    memory."""
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    best, peak = table.loc[table["val_dice"].idxmax()], table["peak_gpu_gb"].astype(float).max()
    return {"best_epoch": int(best["epoch"]), "best_val_dice": float(best["val_dice"]),
            "epochs": len(table), "train_seconds": float(table["epoch_seconds"].sum()),
            "images_per_s": float(table["images_per_s"].mean()),
            "peak_gpu_gb": None if pd.isna(peak) else float(peak),
            "stopped_early": bool(stopped_early), "status": "finished"}


def load_run_config(folder: str | os.PathLike) -> dict:
    """A run's ``config.json``.

    Raises:
        FileNotFoundError: no ``config.json`` there (not a run folder, or never started).
        ValueError: it is unreadable (named).
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a run folder, or the run "
                                f"never started. Give one of the folders that `ls "
                                f"{paths.results_dir() / 'runs'}` lists.")
    return check_config_types(path, read_json(path))


CONFIG_TYPES = {  # the fields of config.json the kit reads back, by the kind of value each holds
    "run_id": "text", "model": "text", "model_config": "text", "model_overrides": "object",
    "protocol": "text", "dataset": "text", "prepared_dir": "text", "checkpoint_dir": "text",
    "fraction": "number", "image_size": "whole number", "seed": "whole number",
    "split_seed": "whole number",
}
_KINDS = {"text": lambda v: isinstance(v, str), "object": lambda v: isinstance(v, dict),
          "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          "whole number": lambda v: isinstance(v, int) and not isinstance(v, bool)}


def check_config_types(path: Path, config: dict) -> dict:
    """``config`` as read from ``path``, once every field the kit reads holds the kind of value it
    must.

    Raises:
        ValueError: names the file, the field, its value and the kind expected.
    """
    for name, kind in CONFIG_TYPES.items():
        if name in config and not _KINDS[kind](config[name]):
            example = {"text": '"unet"', "object": "{}", "number": "0.25",
                       "whole number": "256"}[kind]
            raise ValueError(f"{path}: {name} is {json.dumps(config[name])}, not a {kind} (e.g. "
                             f"{example}); put back the value the run was trained with, or delete "
                             f"the run folder and train it again.")
    return config


def load_done(folder: str | os.PathLike) -> dict | None:
    """A run's ``done.json`` (None while it has not finished)."""
    path = Path(folder) / "done.json"
    return read_json(path) if path.is_file() else None


def is_finished(folder: str | os.PathLike) -> bool:
    """True once the run wrote ``done.json`` with status ``finished``."""
    done = load_done(folder)
    return bool(done) and done.get("status") == "finished"


def checkpoint_dirs(folder: str | os.PathLike) -> list[Path]:
    """Where a run's checkpoints may be: the folder in its config (if reachable),
    ``<run>/checkpoints``, and this runtime's local copies of both (a home on Drive)."""
    local = Path(folder) / "checkpoints"
    config = Path(folder) / "config.json"
    named = (paths.locate(load_run_config(folder)["checkpoint_dir"], Path(folder))
             if config.is_file() else None)
    found = [named or local, local]
    return list(dict.fromkeys([*found, *filter(None, map(paths.mirror, found))]))


def prepared_dir(config: dict) -> Path:
    """The prepared dataset a run was trained on, wherever the data home is now.

    Recorded relative to the data home (``prepared/<name>``); configs written by earlier versions
    hold an absolute path of the machine that made them, which is looked for under this data home by
    name.
    """
    return paths.locate(config["prepared_dir"], paths.data_dir(), paths.prepared_root()) or \
        paths.prepared_root() / Path(config["prepared_dir"]).name


def portable_config(config: dict) -> dict:
    """A copy of a run's config.json without the absolute paths of the machine that wrote it.

    An absolute ``prepared_dir`` becomes ``prepared/<name>`` (relative to the data home), and an
    absolute ``checkpoint_dir`` inside the run's own folder becomes ``checkpoints``; a checkpoint
    folder elsewhere (e.g. on Drive) is kept. Configs written by this version are portable already
    and come back unchanged.
    """
    out = dict(config)
    prepared = Path(str(config.get("prepared_dir", "")))
    if prepared.is_absolute():
        out["prepared_dir"] = f"prepared/{prepared.name}"
    checkpoints = Path(str(config.get("checkpoint_dir", "")))
    if checkpoints.is_absolute() and checkpoints.parent.name == config.get("run_id"):
        out["checkpoint_dir"] = checkpoints.name
    return out


def load_run_data(folder: str | os.PathLike) -> Prepared:
    """The prepared dataset of a run folder (its test split is what evaluation scores).

    Raises:
        FileNotFoundError: the dataset is not prepared on this machine; the message says how to
            prepare it.
    """
    return load_prepared(prepared_dir(load_run_config(folder)))


def has_data(folder: str | os.PathLike) -> bool:
    """True when the prepared dataset a run was trained on is on this machine (a committed study's
    runs name data that only a machine which prepared the same source has)."""
    try:
        return (prepared_dir(load_run_config(folder)) / "prepared.json").is_file()
    except (FileNotFoundError, ValueError, KeyError):
        return False


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """True when the run's ``best.pt`` is reachable (a results folder copied without checkpoints has
    none)."""
    return best_checkpoint(folder) is not None


def best_checkpoint(folder: str | os.PathLike) -> Path | None:
    """A run's ``best.pt``: the newest of its :func:`checkpoint_dirs` copies, or None when it has
    none."""
    files = [d / "best.pt" for d in checkpoint_dirs(folder) if (d / "best.pt").is_file()]
    return max(files, key=lambda f: f.stat().st_mtime, default=None)


def load_run_model(folder: str | os.PathLike, which: str = "best",
                   map_location: Any = "cpu") -> nn.Module:
    """Rebuild a run's model from ``config.json`` and load its ``best`` or ``last`` weights.

    Weights are read with ``weights_only=True``. When a checkpoint exists in several places (the
    checkpoint folder and the run's own ``checkpoints/``), the newer file wins.

    Returns:
        The model in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: no such checkpoint (e.g. Drive not mounted, or the run never saved one).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    config = load_run_config(folder)
    overrides = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in config["model_overrides"].items()}
    model = build_model(config["model"], config["model_config"], **overrides)
    dirs = checkpoint_dirs(folder)
    if which == "last":
        found = [load_latest(d, map_location) for d in dirs]
        state = max((s for s, _ in found if s is not None), key=lambda s: s["epoch"], default=None)
    else:
        best = best_checkpoint(folder)
        # on the CPU: a missing GPU is not the file's fault
        state = load_checkpoint(best, "cpu") if best else None
    if state is None:
        raise FileNotFoundError(f"No {which} checkpoint of run {Path(folder).name} in "
                                f"{', '.join(map(str, dirs))}; mount Drive if the run kept its "
                                f"checkpoints there, or train it first.")
    try:
        restore_state(state, model, restore_rng=False)
    except RuntimeError:
        raise CheckpointError(_misfit(folder, which, state["model"], model, config)) from None
    _note_another_run(folder, which, state, config)
    return model.to(map_location).eval()


def _note_another_run(folder, which: str, state: dict, config: dict) -> None:
    """Say, in one line, when a checkpoint records another run's id than the run folder it was
    loaded from."""
    mine, theirs = config.get("run_id") or Path(folder).name, state.get("run_id")
    if theirs is None and which == "last":
        theirs = (state.get("config") or {}).get("run_id")
    if theirs and theirs != mine:
        print(f"⚠ {which}.pt of run {mine} was saved by run {theirs}: it was copied in from "
              f"another run, and its weights are used as they are; put back this run's own "
              f"{which}.pt if that was not meant.")


def _misfit(folder, which: str, weights: dict, model: nn.Module, config: dict) -> str:
    """One line saying that a checkpoint holds another model than ``config.json`` names, naming
    both."""
    overrides = config.get("model_overrides") or {}
    mine = f"{config['model']} '{config['model_config']}'" + (f" {overrides}" if overrides else "")
    theirs = _identify(weights) or (f"another model ({len(weights)} tensors, "
                                    f"{sum(int(t.numel()) for t in weights.values()):,} weights)")
    return (f"{which}.pt of run {Path(folder).name} holds {theirs}, but its config.json names "
            f"{mine} ({len(model.state_dict())} tensors, "
            f"{sum(p.numel() for p in model.parameters()):,} weights): the checkpoint or "
            f"config.json was copied from another run; put back the pair that belong together.")


def _identify(weights: dict) -> str | None:
    """Which registered model and config a checkpoint's weights are (names and shapes match), else
    None."""

    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    for name, configs in list_configs().items():
        variants = (({}, {"deep_supervision": True}, {"deep_supervision": False})
                    if name == "unetpp" else ({},))
        for config in configs:
            for overrides in variants:
                with torch.device("meta"):
                    candidate = build_model(name, config, **overrides).state_dict()
                if {k: tuple(v.shape) for k, v in candidate.items()} == shapes:
                    return f"{name} '{config}'" + (f" {overrides}" if overrides else "")
    return None


def list_runs(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run folder: its spec, whether it finished, and its best validation Dice.

    Args:
        root: folder of run folders (default ``results/runs``).
    """
    root = Path(root) if root else paths.results_dir() / "runs"
    columns = ["run_id", "model", "model_config", "pretrained", "fraction", "image_size", "seed",
               "protocol", "dataset", "finished", "best_val_dice", "best_epoch", "epochs",
               "train_seconds", "run_dir"]
    rows = []
    for folder in sorted(p for p in root.glob("*") if (p / "config.json").is_file()):
        config, done = load_run_config(folder), load_done(folder) or {}
        rows.append({**{k: config.get(k) for k in columns},
                     **{k: done.get(k) for k in columns if k in done},
                     "finished": is_finished(folder), "run_dir": str(folder)})
    return pd.DataFrame(rows, columns=columns)


def run_files(run_id_or_dir: str | os.PathLike) -> pd.DataFrame:
    """The files of a run, wherever they are (run folder, checkpoint folders): name, size,
    folder."""
    folder = Path(run_id_or_dir) if Path(run_id_or_dir).is_dir() else run_dir(str(run_id_or_dir))
    files = sorted(p for p in folder.glob("*") if p.is_file())
    files += [p for d in checkpoint_dirs(folder) if d.is_dir() for p in sorted(d.glob("*.pt"))]
    return pd.DataFrame({"file": [p.name for p in files],
                         "kB": [round(p.stat().st_size / 1024, 1) for p in files],
                         "folder": [str(p.parent) for p in files]})
