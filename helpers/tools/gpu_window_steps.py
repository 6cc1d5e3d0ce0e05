"""The steps of a GPU window (:mod:`helpers.tools.gpu_window`) and the window they share: its settings, its clock and
the runs it trains, each step within the deadline it is given.

- ``data``: the study's data prepared once (the ``--data-dir`` copy, else the synthetic sample).
- ``t4``: the T4 path emulated: each ``t4`` model trained in fp16 within 15 GB (``fit(gpu_memory_gb=15)``), a few
  hundred steps at batch 16 and 256 px: images/s, peak GPU memory, last loss, or the out-of-memory error.
- ``bench``: :mod:`helpers.tools.bench`'s sections on this device (data with a worker sweep, train, step, infer),
  then torch.compile rows of UNet if 90 s are to spare.
- ``recipes``: ``seed`` against ``kit`` on UNet++ at 100 %, both scored on the test split; with fewer epochs
  than the recipes' when the time left asks for it (both alike, and said so in the notes).
- ``grid``: the ``t4`` profile's grid (``--grid-recipe`` to change its recipe), smallest fractions first, each
  run scored on the test split.

The clock is read before each run (a run whose measured speed says it cannot finish is not started) and after
every epoch (:func:`stop_before`: a run whose next epoch would end after its step's time stops there; its
history comes back, unfinished). Training skips a run folder whose ``done.json`` says finished, checkpoints or
not. Rows of ``t4_check.csv`` and ``bench.csv`` an earlier window measured on the same hardware are kept instead
of measured again. Nothing here imports torch at import time.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.profiles import resolve_config

T4_GB = 15.0  # a Colab T4's memory, in GB of 2**30 bytes as helpers.training.devices counts it


class OutOfTime(Exception):
    """The clock ran out inside a step; the message says where it stopped."""


@dataclass
class Window:
    """One window's settings, its clock (``time.monotonic``), and what each step did."""

    out: Path
    work: Path
    minutes: float
    dry_run: bool = False
    data_dir: str | None = None
    previous: list = field(default_factory=list)
    t4_steps: int = 300
    grid_recipe: str | None = None
    start: float = field(default_factory=time.monotonic)
    report: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)

    @property
    def min_run_s(self) -> float:
        """Fewer seconds left than this: nothing new is started."""
        return 0.5 if self.dry_run else 20.0

    def end(self) -> float:
        """When the steps must be over: the window's end less a reserve for writing the bundle."""
        return self.start + 60 * self.minutes - (1.0 if self.dry_run else 20.0)

    def study(self, **changes):
        """The ``t4`` profile (dry run: ``smoke`` at two fractions) with ``changes``."""
        tiny = {"image_size": 32, "synthetic_count": 24, "batch_size": 4, "fractions": "0.5,1.0"}
        base = resolve_config("smoke", **tiny) if self.dry_run else resolve_config("t4")
        return base.with_(**changes)

    def data(self, config):
        """The prepared data of ``config``: the ``--data-dir`` copy, else the synthetic sample."""
        from helpers.data import sources  # torch: only once --dry-run has hidden the GPU

        return sources.ensure_prepared(config, "folder" if self.data_dir else "synthetic", self.data_dir)

    def earlier(self, name: str) -> Path | None:
        """``name`` in ``--out`` or the first ``--previous`` folder that has it."""
        return next((p / name for p in [self.out, *self.previous] if (p / name).exists()), None)


def stop_before(deadline: float, num_epochs: int):
    """An epoch callback for ``fit``: raises :class:`OutOfTime` when the next epoch would end after ``deadline``."""
    def check(run_id: str, history: list[dict]) -> None:
        last = history[-1] if history else None
        if last and last["epoch"] < num_epochs and time.monotonic() + 1.1 * float(last["epoch_seconds"]) > deadline:
            raise OutOfTime(f"{run_id} stopped after epoch {last['epoch']} of {num_epochs}: its next epoch would "
                            f"end after the step's time")
    return check


def epoch_seconds(w: Window, model: str, images: float) -> float | None:
    """Seconds for an epoch of ``images`` training images (validation included), from this window's speeds."""
    speeds = [r["images_per_s"] for rows in w.tables.values() for r in rows
              if r.get("model") == model and r.get("name") in ("kit (fit)", "t4 check") and (r.get("images_per_s") or 0) > 0]
    return 1.15 * images / min(speeds) if speeds else None  # validation: ~8 % of an epoch in the t4 study


def _label(config) -> str:
    return f"{config.models[0]} {config.fractions[0]:.0%} {config.recipe} {config.num_epochs} epochs"


def run_row(step: str, config, prepared, status: str = "") -> dict:
    """One run of a step: its settings, done.json, peak memory and the mean test Dice (when scored)."""
    from helpers.training import runs  # torch: only once --dry-run has hidden the GPU

    spec = runs.make_spec(config.models[0], config.fractions[0], config.seeds[0], prepared, config)
    folder = runs.run_dir(spec)
    done, metrics = runs.load_done(folder) or {}, folder / "test_metrics.csv"
    return {"step": step, "recipe": config.recipe, "run_id": folder.name, "model": spec.model, "fraction": spec.fraction,
            "num_epochs": spec.num_epochs, "lr": spec.lr, "warmup_epochs": spec.warmup_epochs, "amp": spec.amp,
            "status": status or ("finished" if runs.is_finished(folder) else "unfinished"),
            **{k: done.get(k) for k in runs.DONE_KEYS},
            "test_dice": pd.read_csv(metrics)["dice"].mean() if metrics.is_file() else None}


def train_cells(w: Window, step: str, cells: list, deadline: float, entry: dict) -> list[dict]:
    """Train one-run configs in order, each scored on the test split when it finishes; notes what was left."""
    from helpers.evaluation import scoring  # torch: only once --dry-run has hidden the GPU
    from helpers.training import grid, runs  # torch: only once --dry-run has hidden the GPU

    rows = []
    for k, (config, prepared) in enumerate(cells):
        label = _label(config)
        spec = runs.make_spec(config.models[0], config.fractions[0], config.seeds[0], prepared, config)
        images = len(prepared.indices("train", config.fractions[0]))
        need = (epoch_seconds(w, config.models[0], images) or 0) * config.num_epochs
        if not runs.is_finished(runs.run_dir(spec)) and time.monotonic() + max(need, w.min_run_s) > deadline:
            entry["left"].append(f"{label} (needs ~{need:.0f} s, {max(0, deadline - time.monotonic()):.0f} s left)")
            continue
        try:
            status = grid.run_grid(config, prepared, callbacks=(stop_before(deadline, config.num_epochs),),
                                   progress=False)["status"].iloc[0]
        except OutOfTime as err:
            entry["left"] += [str(err), *(f"{_label(c)} (not started)" for c, _ in cells[k + 1:])]
            rows.append(run_row(step, config, prepared, "stopped"))
            break
        folder = runs.run_dir(spec)
        if runs.is_finished(folder) and not (folder / "test_metrics.csv").is_file():
            if runs.has_checkpoint(folder):
                scoring.evaluate_run(folder, progress=False)
            else:
                entry["notes"].append(f"{folder.name}: finished in an earlier window without its checkpoint; not scored")
        rows.append(run_row(step, config, prepared, status))
    return rows


def step_t4(w: Window, deadline: float, entry: dict) -> None:
    """fp16 within 15 GB, a few hundred steps of each ``t4`` model (restarted each window: a check, not a result)."""
    import torch  # torch: only once --dry-run has hidden the GPU

    from helpers.training import (  # torch: only once --dry-run has hidden the GPU
        devices,
        engine,
        runs,
    )

    device, kept = devices.pick_device(), _earlier_rows(w, "t4_check.csv", lambda r: r["status"] == "ok")
    config = w.study(amp="fp16", fractions="1.0")
    prepared = w.data(config)
    per_epoch = max(1, len(prepared.indices("train")) // config.batch_size)
    config = config.with_(num_epochs=max(1, math.ceil(w.t4_steps / per_epoch)))
    rows = w.tables.setdefault("t4", [r for r in kept if r["model"] in config.models])
    with paths.scoped_env(**{paths.RESULTS_ENV: w.work / "t4check"}):
        for model in [m for m in config.models if m not in {r["model"] for r in rows}]:
            if time.monotonic() + w.min_run_s > deadline:
                entry["left"].append(f"t4 check of {model}")
                continue
            spec = runs.make_spec(model, 1.0, config.seeds[0], prepared, config)
            devices.reset_peak_memory(device)
            status = "ok"
            try:
                engine.fit(spec, prepared, num_workers=config.num_workers, restart=True, gpu_memory_gb=T4_GB,
                           callbacks=(stop_before(deadline, config.num_epochs),), progress=False)
            except (OutOfTime, torch.cuda.OutOfMemoryError, engine.TrainingDiverged) as err:
                status = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                entry["left"] += [f"t4 check of {model}: {status}"] if isinstance(err, OutOfTime) else []
            finally:
                devices.limit_memory(device, None)
                torch.cuda.empty_cache() if device.type == "cuda" else None
            history = runs.read_history(runs.run_dir(spec)) if (runs.run_dir(spec) / "history.csv").is_file() else None
            last = history.iloc[-1] if history is not None and len(history) else {}
            peaks = [devices.peak_memory_gb(device), *([] if history is None else history.get("peak_gpu_gb", []))]
            rows.append({"name": "t4 check", "model": model, "config": spec.model_config, "amp": "fp16",
                         "gpu_memory_gb": T4_GB, "batch_size": spec.batch_size, "image_size": spec.image_size,
                         "steps": per_epoch * (0 if history is None else len(history)), "status": status,
                         "images_per_s": None if history is None else float(history["images_per_s"].mean()),
                         "peak_gb": max(peaks, key=lambda x: -1 if x != x else x), "last_train_loss": last.get("train_loss"),
                         "last_val_dice": last.get("val_dice"), "hardware": devices.hardware(device, devices.DistInfo())})
            print(f"t4 check {model}: {status}, peak {rows[-1]['peak_gb']:.2f} GB, {rows[-1]['images_per_s'] or 0:.0f} "
                  f"images/s over {rows[-1]['steps']} steps")


def _earlier_rows(w: Window, name: str, keep) -> list[dict]:
    """Rows of an earlier window's ``name`` measured on this hardware that ``keep`` accepts."""
    from helpers.training import devices  # torch: only once --dry-run has hidden the GPU

    path, here = w.earlier(name), devices.hardware(devices.pick_device(), devices.DistInfo())
    table = pd.read_csv(path) if path else pd.DataFrame(columns=["hardware"])
    return [r for r in table.to_dict("records") if r.get("hardware") == here and keep(r)]


def step_data(w: Window, deadline: float, entry: dict) -> None:
    """Prepare the study's data once (the ``--data-dir`` copy, else the synthetic sample) for every later step."""
    prepared = w.data(w.study())
    entry["notes"].append(f"{prepared.root.name}: {len(prepared.table)} images" +
                          ("" if w.data_dir or w.dry_run else "; synthetic, as no --data-dir was given: no real scores"))


def _bench(w: Window, *options: str) -> list[dict]:
    """Rows of ``python -m helpers.tools.bench`` with ``options`` on the study's profile and data."""
    from helpers.tools import bench  # torch: only once --dry-run has hidden the GPU

    source = ["--data-source", "folder", "--data-dir", w.data_dir] if w.data_dir else []
    scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=w.work))
    with paths.scoped_env(**{paths.RESULTS_ENV: scratch}):
        if bench.main(["--profile", w.study().name, *source, *options]) != 0:
            raise RuntimeError("python -m helpers.tools.bench failed (its message is above)")
    return pd.read_csv(scratch / "bench.csv").to_dict("records")


def step_bench(w: Window, deadline: float, entry: dict) -> None:
    """helpers.tools.bench's sections one by one, then torch.compile rows of UNet when 90 s are to spare."""
    rows = w.tables.setdefault("bench", _earlier_rows(w, "bench.csv", lambda r: True))
    sizes = ["--images", "16", "--batches", "2", "--steps", "1", "--workers", "0", "--models", "unet"] if w.dry_run \
        else ["--steps", "20"]
    for section in [s for s in ("data", "train", "step", "infer") if s not in {r["section"] for r in rows}]:
        if time.monotonic() + w.min_run_s > deadline:
            entry["left"].append(f"bench section {section}")
            continue
        rows += _bench(w, "--sections", section, *sizes)
    if w.dry_run or any(str(r.get("compile")) == "True" for r in rows):
        return
    if deadline - time.monotonic() > 90:  # each compilation takes tens of seconds
        rows += [r for r in _bench(w, "--sections", "step", "--compile", "--models", "unet", *sizes)
                 if str(r.get("compile")) == "True"]
    else:
        entry["left"].append("torch.compile rows (UNet; each compilation takes tens of seconds)")


def step_recipes(w: Window, deadline: float, entry: dict) -> None:
    """``seed`` vs ``kit`` on UNet++ at 100 %, with the same (possibly fewer) epochs."""
    from helpers.training import runs  # torch: only once --dry-run has hidden the GPU

    base = w.study(models="unetpp", fractions="1.0")
    prepared = w.data(base)
    configs = {r: base.with_(recipe=r, num_epochs=2) if w.dry_run else base.with_(recipe=r) for r in ("seed", "kit")}
    entry["notes"] += ["dry run: 2 epochs for both recipes"] if w.dry_run else []
    epochs = min(c.num_epochs for c in configs.values())
    finished = all(runs.is_finished(runs.run_dir(runs.make_spec("unetpp", 1.0, c.seeds[0], prepared, c)))
                   for c in configs.values())
    per_epoch = epoch_seconds(w, "unetpp", len(prepared.indices("train")))
    if not finished and per_epoch:  # both runs must fit in the time left: cut their epochs alike
        fits = int((deadline - time.monotonic() - 2 * w.min_run_s) / (2 * per_epoch))
        if fits < epochs:
            entry["notes"].append(f"epochs cut from {epochs} to {max(fits, 0)} for both recipes: ~{per_epoch:.0f} s an "
                                  f"epoch, {deadline - time.monotonic():.0f} s left")
            if fits < 1:
                entry["left"].append("the recipe comparison (not one epoch of each fits)")
                return
            configs = {r: c.with_(num_epochs=fits) for r, c in configs.items()}
    rows = train_cells(w, "recipes", [(c, prepared) for c in configs.values()], deadline, entry)
    w.tables["recipes"] = rows


def step_grid(w: Window, deadline: float, entry: dict) -> None:
    """The study's grid, smallest fractions first, each run scored; finished runs are skipped."""
    config = w.study(**({"recipe": w.grid_recipe} if w.grid_recipe else {}))
    prepared = w.data(config)
    cells = [(config.with_(models=m, fractions=f, seeds=s), prepared)
             for f in config.fractions for m in config.models for s in config.seeds]
    w.tables["grid"] = train_cells(w, "grid", cells, deadline, entry)
