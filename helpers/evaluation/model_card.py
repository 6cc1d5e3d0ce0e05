"""The model card written next to an exported model (``MODEL_CARD.md``): what it is, what it learnt from, how well
it does, how to feed it, what it is for and not for, and its limits.

It opens with YAML front matter that model hubs read (Hugging Face's model card metadata): ``license``
(``cc-by-nc-4.0`` for a model that learnt from ISIC data), ``tags``, ``datasets``, ``metrics`` and a ``model-index``
with the test metrics' values. Everything comes from the run folder (``config.json``, ``done.json``, ``eval.json``,
``test_metrics.csv``) and the export's metadata: test metrics are the per-image Dice and IoU of notebook 04 with
percentile-bootstrap 95 % confidence intervals (:func:`helpers.evaluation.stats.bootstrap_ci`), or "not evaluated
yet".
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
OUT_OF_SCOPE = [
    "Diagnosis, screening or triage of patients, or any clinical decision: the model outlines a lesion, it does not "
    "say what the lesion is, and it has not been validated clinically.",
    "Photos that are not dermoscopy (a phone or camera picture of the skin without a dermatoscope, clinical close-ups, "
    "histology): it learnt from dermoscopic images only, and its masks on other images mean little.",
    "Commercial use, where the training data's licence (CC BY-NC 4.0) forbids it.",
]
# Where the measured skin-tone composition of the training data goes (the share of images per ITA group, from
# helpers.evaluation.image_factors); until it is measured, the card says so.
SKIN_TONE_MEASURED = (
    "Measured by the individual typology angle (ITA) of the skin around each lesion on all 2,594 ISIC 2018 Task 1 "
    "training images (notebook 01, section 6): very light 1,639 (63 %), light 367 (14 %), intermediate 272 "
    "(10 %), tan 203 (8 %), brown 89 (3 %), dark 15 (0.6 %), 9 without skin around the lesion. The darker "
    "groups are too small for a reliable score (notebook 04, section 11, gives test Dice by group with its "
    "intervals), and a dermatoscope's light shifts ITA, so the groups are rough.")
LIMITATIONS = [
    "Dermoscopy only, of the kinds of lesions and dermatoscopes in the ISIC 2018 challenge data.",
    "Skin tones: most training images show light skin, so how well the model does on darker skin is not "
    "known. {measured}",
    "Trained at {size} px on centre-cropped images: a lesion that runs past the image's central square was cut "
    "off in training, and fine borders are lost at this size.",
    "Its scores are on a test split of the same data (same sources and annotators); on other data they are likely "
    "to be lower.",
]
SYNTHETIC_LIMITS = ["Trained on the kit's synthetic sample: it shows the method working and says nothing about real "
                    "lesions."]
NOT_MEASURED = "The skin-tone composition of the training data (by ITA group) has not been measured yet."
TAGS = ["image-segmentation", "medical-imaging", "dermoscopy", "skin-lesion", "pytorch", "skin-lesion-kit"]


def data_description(dataset: str) -> str:
    """The training data as a user would have it, from the run's dataset id."""
    name = dataset.lower().replace("-", "_")
    if name.startswith("synthetic"):
        return "the kit's synthetic sample (procedural images, no patient data)"
    if name.startswith("isic2018_task1_128"):
        return "the bundled 128-px archive of the official ISIC 2018 Task 1 training set (data/isic2018_task1_128.zip)"
    if name.startswith("isic2018_task1_512"):
        return "the official ISIC 2018 Task 1 training set, 512-px centre-cropped copy"
    if name.startswith("isic2018_task1_256"):
        return "the official ISIC 2018 Task 1 training set, 512-px centre-cropped copy shrunk to 256 px"
    if name.startswith("isic2018"):
        return "the official ISIC 2018 Task 1 challenge download"
    return f"dataset {dataset!r}"


def hub_licence(dataset: str) -> str:
    """The licence id a model hub reads: ``cc-by-nc-4.0`` for ISIC data, ``mit`` for the synthetic sample, else
    ``other`` (check the data's licence)."""
    name = dataset.lower()
    return "cc-by-nc-4.0" if name.startswith("isic") else "mit" if name.startswith("synthetic") else "other"


def _yaml(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string or number is valid YAML


def front_matter(run_dir: Path, config: dict, meta: dict) -> list[str]:
    """The YAML block model hubs read: licence, tags, dataset, metrics and their values (``model-index``)."""
    dataset = str(config.get("dataset", ""))
    lines = ["---", f"license: {hub_licence(dataset)}", "library_name: pytorch", "pipeline_tag: image-segmentation",
             "tags:", *(f"  - {tag}" for tag in [*TAGS, meta["model"]]),
             "datasets:", f"  - {_yaml(data_description(dataset))}", "metrics:", "  - dice", "  - iou"]
    path = Path(run_dir) / inference.METRICS_FILE
    if path.is_file():
        table = pd.read_csv(path)
        split = (f"{len(table)} test images of the {config.get('protocol')} split, seed "
                 f"{config.get('split_seed', '?')}")
        lines += ["model-index:", f"  - name: {_yaml(meta['run_id'])}", "    results:", "      - task:",
                  "          type: image-segmentation", "          name: Skin-lesion segmentation", "        dataset:",
                  f"          name: {_yaml(data_description(dataset) + ' (' + split + ')')}",
                  f"          type: {_yaml(dataset)}", "        metrics:"]
        for column, kind, label in (("dice", "dice", "Dice (per image, mean)"), ("iou", "iou", "IoU (per image, mean)"),
                                    ("jaccard_thresholded", "jaccard", "thresholded Jaccard (ISIC 2018 score)")):
            if column in table:
                lines += [f"          - type: {kind}", f"            name: {_yaml(label)}",
                          f"            value: {round(float(table[column].mean()), 4)}"]
    return [*lines, "---", ""]


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
    size = config.get("image_size", "?")
    measured = SKIN_TONE_MEASURED or NOT_MEASURED
    isic = str(config.get("dataset", "")).lower().startswith("isic")
    lines = [
        *front_matter(run_dir, config, meta),
        f"# Model card: {meta['model']} ({meta['model_config']}) — run {meta['run_id']}", "",
        "## Files", "", *(f"- `{Path(p).name}`: {fmt}" + (f", opset {meta['opset']}" if fmt == "onnx" else "")
                          + (f", by {written[fmt]['exporter']}" if fmt in written else "") for fmt, p in files.items()), "",
        "## Architecture", "",
        f"- {meta['model']}, configuration `{meta['model_config']}`{pruned}, overrides {meta['model_overrides']}",
        f"- config: `{json.dumps(meta['config'])}`",
        f"- parameters: {meta['params']:,}" + (" (the whole network; the pruned graph uses fewer)" if pruned else ""),
        f"- output: {meta['output']}", "",
        "## Training data", "",
        f"- data: {data_description(str(config.get('dataset', '')))} (dataset id `{config.get('dataset')}`)",
        f"- training fraction {config.get('fraction')}, "
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
        "(`lesion-predict`, or `python -m helpers.evaluation.predict`, applies all of it)", "",
        "## Intended use", "", INTENDED_USE, "",
        "## Out-of-scope use", "", *(f"- {line}" for line in (OUT_OF_SCOPE if isic else OUT_OF_SCOPE[:2])), "",
        "## Limitations", "", *(f"- {line.format(measured=measured, size=size)}"
                                for line in (LIMITATIONS if isic else [*SYNTHETIC_LIMITS, *LIMITATIONS[2:]])), "",
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(run_dir: str | Path, metadata: dict, files: dict[str, Path], out_dir: str | Path,
                     written: dict[str, dict] | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into ``out_dir`` and return its path (arguments: :func:`model_card`)."""
    path, text = Path(out_dir) / "MODEL_CARD.md", model_card(run_dir, metadata, files, written)
    # through a temporary file: a link there is replaced, never written through
    return paths.write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
