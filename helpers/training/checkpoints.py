"""Atomic checkpoint I/O, so a training run survives Colab disconnects and Drive hiccups.

A checkpoint is a plain dict (see ``make_state``) holding only tensors and plain Python values, so
it loads with ``torch.load(weights_only=True)``, which refuses pickled code instead of running it.
Writes go to a temp file in the target folder, are fsynced, then renamed over the target with
``os.replace``; the previous ``last.pt`` is kept as ``last.prev.pt``, and ``load_latest`` falls back
to it when ``last.pt`` is unreadable.

For a folder on Google Drive (``local_copy=`` a folder on the runtime's disk) a checkpoint is written
to the local folder first, where the previous copy rolls, and then copied once to Drive, the same
atomic way: Drive holds one ``last.pt`` and one ``best.pt`` per run, written once per save. A write
that keeps failing (Drive full or gone) raises :class:`CheckpointWriteError`, which says what to do;
it never goes on silently without the protection Drive gives.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import random
import re
import shutil
import struct
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers import paths

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # (Distributed)DataParallel, torch.compile


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (truncated, corrupt or refused)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written after its retries (e.g. Google Drive full or unmounted)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds objects that ``weights_only`` loading refuses (possibly code)."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the previous version of ``path`` is kept: ``last.pt`` → ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _write_atomic(path: Path, write, keep_previous: bool) -> Path:
    """One attempt: ``write(file)`` into a temp file in the folder → fsync → last → prev → temp →
    path (:func:`helpers.paths.write_atomic`); then temp files left by writes killed mid-way go."""
    def into(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # the process's normal file mode, as for any file it writes
            write(f)

    paths.write_atomic(path, into, durable=True, previous=previous_path(path) if keep_previous else None)
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        stale.unlink(missing_ok=True)
    return path


def _copy_into(source: Path):
    def write(f) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f, 16 * 2**20)
    return write


def save_checkpoint(state: dict, path: str | os.PathLike, *, keep_previous: bool = True, retries: int = 3,
                    local_copy: str | os.PathLike | None = None, backoff: float = 0.5) -> Path:
    """Write ``state`` to ``path`` atomically; ``path`` is never left half-written.

    Args:
        state: checkpoint dict, e.g. from ``make_state``.
        path: target file, e.g. ``<run_dir>/checkpoints/last.pt``; its folder is created if needed.
        keep_previous: keep the file it replaces as ``previous_path(path)`` (with ``local_copy``: in that
            local folder, so a folder on Drive holds one copy).
        retries: how many times a failed write (OSError) to ``path`` is tried again, waiting
            ``backoff · 2**attempt`` seconds in between.
        local_copy: a folder on local disk: write there first, then copy the file to ``path`` (a folder on
            Drive); the local file stays, so a failed copy loses nothing from this runtime.
        backoff: first wait between attempts, in seconds.

    Returns:
        ``path``.

    Raises:
        CheckpointWriteError: every attempt failed; the message names the file and says what to do.
    """
    path = Path(path)
    if local_copy is not None:
        try:
            local = _write_atomic(Path(local_copy) / path.name, lambda f: torch.save(state, f), keep_previous)
        except OSError as err:
            raise CheckpointWriteError(
                f"Could not write checkpoint {Path(local_copy) / path.name} on this runtime's disk ({err}); "
                f"it goes there before {path}. Free space on the runtime's disk (on Colab: delete files "
                f"under /content, or start a new runtime: everything on Drive stays), then run the training "
                f"cell again.") from err
        write, keep = _copy_into(local), False
    else:
        write, keep = (lambda f: torch.save(state, f)), keep_previous
    retries = max(int(retries), 0)
    for attempt in range(retries + 1):
        try:
            return _write_atomic(path, write, keep)
        except OSError as err:
            error = err
            if attempt < retries:
                time.sleep(backoff * 2 ** attempt)
    kept = "" if local_copy is None else f" A copy is on this runtime's disk at {local} until it ends."
    raise CheckpointWriteError(
        f"Could not write checkpoint {path} after {retries + 1} attempts ({error}).{kept} Training stopped "
        f"so that it does not go on unprotected. Check that the folder is writable and has space: on Colab, "
        f"that Google Drive is mounted (run the setup cell again) and not full (free space, and empty "
        f"Drive's trash, which counts). Then run the training cell again: it resumes from the last "
        f"checkpoint that was saved. To go on with checkpoints on this runtime's disk only (lost if it "
        f"disconnects), set LOCAL_FALLBACK = True.") from error


def _refusal_reason(err: Exception) -> str:
    """What ``weights_only`` loading refused, without torch's advice on loading it anyway."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if found:
        return f"it names {found.group(1)}, which is code, not data"
    found = re.search(r"Unsupported operand \d+", str(err))
    if found:
        return f"{found.group(0).lower()} in its pickle"
    return "it holds objects that are not data"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; pickled code is never run.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeCheckpointError: if weights_only loading refuses it (objects other than tensors and
            plain values, e.g. a pickled class or function; or bytes that are no pickle at all).
        CheckpointError: if the file is truncated or corrupt (e.g. a half-copied ``last.pt``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}: check the run folder and name.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # what weights_only raises instead of running code
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it is not made only of tensors and plain Python values "
            f"({_refusal_reason(err)}), so it is not a checkpoint written by this kit, and loading "
            f"it could run code. Do not load it unless you trust its source; delete it, or train "
            f"the run again.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            struct.error) as err:
        # whatever a truncated or garbled file makes the unpickler raise
        raise CheckpointError(f"Could not read {path}: the file is truncated or corrupt "
                              f"({type(err).__name__}: {err}). Delete it or use "
                              f"{previous_path(path).name}.") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict.")
    return state


def load_latest(run_dir: str | os.PathLike, map_location: Any = "cpu",
                name: str = "last.pt") -> tuple[dict | None, Path | None]:
    """Newest readable checkpoint of a run: ``last.pt``, else ``last.prev.pt`` (with a warning).

    Returns:
        ``(state, path)``, or ``(None, None)`` if the run has no checkpoint yet (start fresh).

    Raises:
        CheckpointError: if checkpoint files exist but none is readable (message names each).
    """
    candidates = [Path(run_dir) / name, previous_path(Path(run_dir) / name)]
    problems = []
    for path in (p for p in candidates if p.exists()):
        try:
            return load_checkpoint(path, map_location), path
        except CheckpointError as err:
            warnings.warn(f"Skipping unreadable checkpoint {path}: {err}", RuntimeWarning,
                          stacklevel=2)
            problems.append(str(err))
    if not problems:
        return None, None
    raise CheckpointError(f"No readable checkpoint in {run_dir}: " + " | ".join(problems) +
                          " Delete these files to restart the run from scratch.")


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    state_dict = dict(state_dict)
    while state_dict:
        prefix = next((p for p in _WRAPPER_PREFIXES
                       if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain(value: Any, where: str) -> Any:
    """``value`` as str/int/float/bool/None and lists/dicts of them, which weights_only loads."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()  # np.float64 subclasses float but would pickle as a numpy global
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot "
                    "hold: convert it to str/int/float/bool/None or a list/dict of those.")


def _rng_state() -> dict:
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    rng = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
           "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        for device, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), device)
    n, p = rng["numpy"], rng["python"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _state_dict(obj: Any) -> dict | None:
    return None if obj is None else obj.state_dict()


def make_state(model, optimizer, scheduler, scaler, epoch: int, best_metric: float,
               history: list, config: Any, rng: bool = True) -> dict:
    """Everything a resumed run needs, as a weights_only-loadable dict.

    Args:
        model: the model; weights are taken from inside DDP / DataParallel / torch.compile
            wrappers, so their names carry no ``module.`` / ``_orig_mod.`` prefix.
        optimizer, scheduler, scaler: their ``state_dict()`` is stored (None allowed).
        epoch: the epoch just finished (the loop resumes at ``epoch + 1``).
        best_metric: best validation score so far.
        history: list of dicts of floats, one per epoch (numpy/tensor scalars are converted).
        config: plain dict or dataclass of str/int/float/bool/None/lists (converted to a dict).
        rng: also store torch CPU (and CUDA if available), numpy and python ``random`` RNG states.

    Returns:
        The state dict. Its tensors are the live weights, not copies: save it right away.
    """
    state = {"model": unwrap_model(model).state_dict(),
             "optimizer": _state_dict(optimizer), "scheduler": _state_dict(scheduler),
             "scaler": _state_dict(scaler), "epoch": int(epoch),
             "best_metric": _plain(best_metric, "best_metric"),
             "history": _plain(history, "history"), "config": _plain(config, "config")}
    if rng:
        state["rng"] = _rng_state()
    return state


def restore_state(state: dict, model, optimizer=None, scheduler=None, scaler=None,
                  restore_rng: bool = True) -> dict:
    """Load ``state`` (from ``make_state``) into the given objects, in place.

    Args:
        state: from ``load_checkpoint`` / ``load_latest`` (or a ``best.pt``: model only).
        model: the model, wrapped (DDP / DataParallel / torch.compile) or not.
        optimizer, scheduler, scaler: restored when given (the checkpoint must hold them).
        restore_rng: also restore the torch / CUDA / numpy / python RNG states, if saved.

    Returns:
        ``{"epoch", "best_metric", "history", "config"}`` from the checkpoint.
    """
    target, weights = unwrap_model(model), state["model"]
    if set(weights) != set(target.state_dict()):  # saved from a wrapped model by other code
        weights = strip_wrapper_prefixes(weights)
    try:
        target.load_state_dict(weights)
    except RuntimeError as err:
        name = type(target).__name__
        raise RuntimeError(f"The checkpoint's weights do not fit this {name}: build the model "
                           f"from the checkpoint's config (state['config']). {err}") from err
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if state.get(name) is None:
                raise KeyError(f"The checkpoint has no {name} state; pass {name}=None to skip it.")
            if state[name] or name != "scaler":  # {} = saved from a disabled GradScaler
                obj.load_state_dict(state[name])
    if restore_rng and "rng" in state:
        _set_rng_state(state["rng"])
    return {k: state.get(k) for k in ("epoch", "best_metric", "history", "config")}


def save_weights_atomic(model, path: str | os.PathLike, *, metric: float, epoch: int,
                        retries: int = 3, local_copy: str | os.PathLike | None = None,
                        run_id: str | None = None) -> Path:
    """Write a small weights-only file (e.g. ``best.pt``): ``{"model", "best_metric", "epoch"}``,
    and ``"run_id"``, the run that wrote it, when given.

    It loads with ``load_checkpoint`` and restores with ``restore_state(state, model)``.
    Returns ``path`` (see ``save_checkpoint``).
    """
    state = {"model": unwrap_model(model).state_dict(),
             "best_metric": _plain(metric, "metric"), "epoch": int(epoch)}
    if run_id is not None:
        state["run_id"] = str(run_id)
    return save_checkpoint(state, path, keep_previous=False, retries=retries, local_copy=local_copy)
