"""The model card written next to an exported model (``MODEL_CARD.md``): what it is, what it learnt from, how well
it does, how to feed it, and what it is for.

Everything comes from the run folder (``config.json``, ``done.json``, ``eval.json``, ``test_metrics.csv``) and the
export's metadata: test metrics are the per-image Dice and IoU of notebook 04 with percentile-bootstrap 95 %
confidence intervals (:func:`helpers.evaluation.stats.bootstrap_ci`), or "not evaluated yet".
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.evaluation import inference, stats
from helpers.evaluation.predict import run_settings
from helpers.training import runs

ISIC_LICENCE = ("ISIC 2018 Task 1 challenge data, licensed CC BY-NC 4.0: **non-commercial use only**; cite the "
                "challenge (Codella et al., 2019; Tschandl et al., 2018) when you use this model.")
SYNTHETIC = ("the kit's synthetic sample (helpers.data.synthetic): procedurally drawn images, **no patient data**; "
             "a model trained on it says nothing about real lesions.")
INTENDED_USE = ("Research and teaching only. **Not for diagnosis, not a medical device**: it has not been "
                "validated clinically and must not inform any decision about a patient.")


def data_licence(dataset: str) -> str:
    """What the training data was and under which licence, from the run's dataset id."""
    if dataset.lower().startswith("synthetic"):
        return SYNTHETIC
    if dataset.lower().startswith("isic"):
        return ISIC_LICENCE
    return f"dataset {dataset!r}: unknown source; check its licence before sharing this model."


def _training_images(run_dir: Path, config: dict) -> str:
    """The number of training images: recorded by training, else counted in the prepared data if it is here."""
    if config.get("train_images") is not None:
        return str(config["train_images"])
    try:
        return str(len(runs.load_run_data(run_dir).indices("train", float(config["fraction"]))))
    except (FileNotFoundError, KeyError, ValueError):
        return "unknown (not recorded, and the prepared data is not on this machine)"


def metrics_section(run_dir: str | Path) -> list[str]:
    """Markdown lines: mean per-image Dice and IoU with 95 % bootstrap CIs, or "not evaluated yet"."""
    path = Path(run_dir) / inference.METRICS_FILE
    if not path.is_file():
        return ["Not evaluated yet: notebook 04 (or `scoring.evaluate_runs`) writes the run's `test_metrics.csv`."]
    table = pd.read_csv(path)
    used = run_settings(run_dir)  # what eval.json says notebook 04 evaluated with
    lines = [f"On {len(table)} test images of the run's split (per image, then averaged; 95 % percentile-bootstrap "
             f"CI over images; threshold {used['threshold']}, TTA {used['tta']}, "
             f"post-processing {used['post']}):", "", "| metric | mean | 95 % CI |", "|---|---|---|"]
    for column, label in (("dice", "Dice"), ("iou", "IoU"), ("dice_orig", "Dice, original size"),
                          ("iou_orig", "IoU, original size")):
        if column in table:
            low, high = stats.bootstrap_ci(table[column])
            lines.append(f"| {label} | {table[column].mean():.4f} | {low:.4f} – {high:.4f} |")
    return lines


def _sizes(meta: dict, files: dict[str, Path], written: dict[str, dict]) -> str:
    """The input sizes the files take, per file where they differ (TransUNet: ONNX by the dynamo exporter is
    dynamic, traced TorchScript is not)."""
    def text(dynamic: bool) -> str:
        return (f"any height and width that are multiples of {meta['size_multiple']} (trained at {meta['image_size']} "
                f"px)" if dynamic else f"{meta['image_size']} × {meta['image_size']} px only (fixed token grid)")

    dynamic = {fmt: written.get(fmt, meta)["dynamic_size"] for fmt in files}
    if len(set(dynamic.values())) <= 1:
        return text(next(iter(dynamic.values()), meta["dynamic_size"]))
    return "; ".join(f"`{Path(files[fmt]).name}`: {text(flag)}" for fmt, flag in dynamic.items())


def model_card(run_dir: str | Path, metadata: dict, files: dict[str, Path], written: dict[str, dict] | None = None) -> str:
    """The card's markdown.

    Args:
        run_dir: the run folder exported.
        metadata: the export's metadata (see :mod:`helpers.evaluation.export`).
        files: ``{format: path}`` of the exported files.
        written: ``{format: the metadata written into that file}`` where known (its exporter and sizes).
    """
    run_dir = Path(run_dir)
    config, done = runs.load_run_config(run_dir), runs.load_done(run_dir) or {}
    meta, written = metadata, written or {}
    sizes = _sizes(meta, files, written)
    recipe = ", ".join(f"{k} {config[k]}" for k in ("num_epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
                                                    "schedule", "augment", "amp", "early_stopping") if k in config)
    pruned = f", pruned at depth L{meta['prune_depth']}" if meta.get("prune_depth") else ""
    lines = [
        f"# Model card: {meta['model']} ({meta['model_config']}) — run {meta['run_id']}", "",
        "## Files", "", *(f"- `{Path(p).name}`: {fmt}" + (f", opset {meta['opset']}" if fmt == "onnx" else "")
                          + (f", by {written[fmt]['exporter']}" if fmt in written else "") for fmt, p in files.items()), "",
        "## Architecture", "",
        f"- {meta['model']}, configuration `{meta['model_config']}`{pruned}, overrides {meta['model_overrides']}",
        f"- config: `{json.dumps(meta['config'])}`",
        f"- parameters: {meta['params']:,}" + (" (the whole network; the pruned graph uses fewer)" if pruned else ""),
        f"- output: {meta['output']}", "",
        "## Training data", "",
        f"- dataset: `{config.get('dataset')}`, training fraction {config.get('fraction')}, "
        f"{config.get('image_size')} px; training images: {_training_images(run_dir, config)}",
        f"- licence: {data_licence(str(config.get('dataset', '')))}", "",
        "## Protocol and recipe", "",
        f"- split: `{config.get('protocol')}` protocol, split seed {config.get('split_seed', 'not recorded')}, "
        f"training seed {config.get('seed')}",
        f"- recipe: {recipe}",
        f"- best epoch {done.get('best_epoch', '?')} of {done.get('epochs', '?')}, best validation Dice "
        f"{done.get('best_val_dice', float('nan')):.4f}" if done else "- the run has not finished",
        "", "## Test metrics", "", *metrics_section(run_dir), "",
        "## Preprocessing", "",
        f"- input: {meta['input']}", f"- size: {sizes}; resize the whole image (box filter) to this size",
        f"- mean {meta['mean']}, std {meta['std']} (RGB, on pixel / 255)",
        f"- lesion where probability ≥ {meta['threshold']}; TTA {meta['tta']}, post-processing {meta['postprocess']} "
        "(`python -m helpers.evaluation.predict` applies all of it)", "",
        "## Intended use", "", INTENDED_USE, "",
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(run_dir: str | Path, metadata: dict, files: dict[str, Path], out_dir: str | Path,
                     written: dict[str, dict] | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into ``out_dir`` and return its path (arguments: :func:`model_card`)."""
    path, text = Path(out_dir) / "MODEL_CARD.md", model_card(run_dir, metadata, files, written)
    return paths.write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))  # never through a link
