"""The recipe table (helpers.tools.recipe_table): labels, paired differences and verdicts on run folders written
here, and the test-time choices on a small run."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.tools import recipe_table as rt
from tests.builders import make_run

IDS = [f"ISIC_{k:07d}" for k in range(60)]


def _run(root, name, recipe, model="unetpp", fraction=1.0, lr=1e-3, warmup=1.0, epochs=16, dice=None, ids=IDS):
    """A finished, evaluated run folder with the given per-image test Dice."""
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    config = {"run_id": name, "model": model, "model_config": "cpu", "image_size": 128, "fraction": fraction,
              "num_epochs": epochs,
              "lr": lr, "warmup_epochs": warmup, "batch_size": 16, "weight_decay": 1e-4, "schedule": "cosine",
              "augment": "kit", "recipe": recipe}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "done.json").write_text(json.dumps({"best_epoch": epochs, "best_val_dice": 0.8, "epochs": epochs,
                                                  "train_seconds": 100.0 * fraction, "status": "finished"}))
    pd.DataFrame({"isic_id": ids, "dice": dice}).to_csv(folder / "test_metrics.csv", index=False)
    return folder


def test_labels_name_the_recipe_and_what_a_run_changed():
    assert rt.recipe_label({"recipe": "kit", "model_config": "cpu", "lr": 1e-3, "warmup_epochs": 1.0,
                            "weight_decay": 1e-4, "schedule": "cosine", "augment": "kit"}) == "kit"
    assert rt.recipe_label({"recipe": "kit", "model_config": "cpu", "lr": 2e-3, "warmup_epochs": 1.0,
                            "weight_decay": 1e-4, "schedule": "cosine", "augment": "kit"}) == "kit lr=0.002"
    assert rt.recipe_label({"recipe": "kit", "model_config": "paper", "lr": 3e-4, "warmup_epochs": 1.0,
                            "weight_decay": 1e-4, "schedule": "cosine", "augment": "kit"}) == "kit"
    assert rt.recipe_label({"recipe": "seed", "model_config": "cpu", "lr": 1e-4, "num_epochs": 12,
                            "warmup_epochs": 0.0, "weight_decay": 1e-4, "schedule": "cosine",
                            "augment": "kit"}) == "seed num_epochs=12"
    assert rt.recipe_label({"lr": 1e-3}) == "custom"  # runs made before recipes were recorded
    cpu_kit = {"recipe": "kit", "model": "unetpp", "model_config": "cpu", "image_size": 128, "lr": 1e-3,
               "warmup_epochs": 1.0, "weight_decay": 1e-4, "schedule": "cosine", "augment": "kit"}
    assert rt.recipe_label({**cpu_kit, "num_epochs": 16}) == "kit"  # the cpu profile's epochs
    assert rt.recipe_label({**cpu_kit, "num_epochs": 12}) == "kit num_epochs=12"
    assert rt.profile_epochs({**cpu_kit, "model_config": "cpu", "image_size": 128}) == 16  # cpu's, not class's 12
    # the steps beyond the recipe: each named as a change to the cpu profile
    assert rt.recipe_label({**cpu_kit, "num_epochs": 16, "ema_epochs": 1.0}) == "kit ema_epochs=1"
    assert rt.recipe_label({**cpu_kit, "num_epochs": 16, "ema_epochs": 0.0}) == "kit"
    assert rt.recipe_label({**cpu_kit, "num_epochs": 16, "model_config": "small"}) == "kit model_config=small"
    assert rt.recipe_label({**cpu_kit, "num_epochs": 16, "image_size": 160}) == "kit image_size=160"
    assert rt.reference_profile({**cpu_kit, "model_config": "tiny", "image_size": 64}).name == "cpu"  # smoke or demo
    paper = {**cpu_kit, "model_config": "paper", "image_size": 256, "lr": 3e-4, "num_epochs": 20}
    assert rt.reference_profile(paper).name == "t4" and rt.recipe_label(paper) == "kit"


def test_rows_carry_cis_and_paired_differences_to_the_baseline(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, len(IDS))
    _run(tmp_path, "a", "seed", lr=1e-4, warmup=0.0, epochs=20, dice=base)
    _run(tmp_path, "b", "kit", dice=base + 0.03 + rng.normal(0, 0.005, len(IDS)))  # clearly better
    _run(tmp_path, "c", "kit", lr=2e-3, dice=base + rng.normal(0, 0.02, len(IDS)))  # noise around the baseline
    _run(tmp_path, "d", "kit", fraction=0.1, dice=base - 0.05)  # no baseline at 10 %
    table = rt.recipe_table([tmp_path]).set_index("run_id")
    assert table.loc["a", "recipe"] == "seed" and table.loc["a", "verdict_seed"] == ""
    assert table.loc["b", "verdict_seed"] == "better"
    assert table.loc["b", "diff_to_seed"] == pytest.approx(0.03, abs=0.003)
    assert table.loc["b", "diff_seed_ci_low"] > 0 and table.loc["b", "dice_ci_low"] < table.loc["b", "dice_mean"]
    assert table.loc["c", "recipe"] == "kit lr=0.002" and table.loc["c", "verdict_seed"] == "inside CI"
    assert table.loc["c", "diff_seed_ci_low"] < 0 < table.loc["c", "diff_seed_ci_high"]
    assert np.isnan(table.loc["d", "diff_to_seed"])
    assert rt.verdict(-0.03, -0.01) == "worse"
    against_kit = rt.recipe_table([tmp_path], baselines=("seed", "kit")).set_index("run_id")
    assert against_kit.loc["a", "diff_to_kit"] == pytest.approx(-table.loc["b", "diff_to_seed"])  # seed − kit
    assert np.isnan(against_kit.loc["b", "diff_to_kit"])  # kit against itself: no row


def test_runs_of_other_images_are_refused(tmp_path):
    _run(tmp_path, "a", "seed", lr=1e-4, warmup=0.0, epochs=20, dice=np.full(60, 0.8))
    _run(tmp_path, "b", "kit", dice=np.full(50, 0.8), ids=IDS[:50])
    with pytest.raises(ValueError, match="different test images"):
        rt.recipe_table([tmp_path])


def test_runs_of_other_sizes_are_compared_at_the_original_size_and_rows_are_appended(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.9, len(IDS))
    kit = _run(tmp_path / "a", "kit128", "kit", fraction=0.1, dice=base)
    big = _run(tmp_path / "a", "kit160", "kit", fraction=0.1, dice=base)  # the same at its own size
    for folder, orig in ((kit, base - 0.05), (big, base + 0.01)):  # at the original size: 160 px is better
        metrics = pd.read_csv(folder / "test_metrics.csv").assign(dice_orig=orig)
        metrics.to_csv(folder / "test_metrics.csv", index=False)
    config = json.loads((big / "config.json").read_text())
    (big / "config.json").write_text(json.dumps({**config, "image_size": 160}))
    out = tmp_path / "table.csv"
    assert rt.main([str(tmp_path / "a"), "--baseline", "kit", "--out", str(out)]) == 0
    assert rt.main([str(tmp_path / "a"), "--baseline", "kit", "--metric", "dice_orig", "--out", str(out),
                    "--append", "--source", "today"]) == 0
    table = pd.read_csv(out).set_index(["run_id", "metric"])
    assert len(table) == 4 and table.loc[("kit160", "dice"), "recipe"] == "kit image_size=160"
    assert np.isnan(table.loc[("kit160", "dice"), "diff_to_kit"])  # 160 against 128 px masks: not comparable
    assert table.loc[("kit160", "dice_orig"), "diff_to_kit"] == pytest.approx(0.06)
    assert table.loc[("kit160", "dice_orig"), "verdict_kit"] == "better"
    assert table.loc[("kit160", "dice_orig"), "source"] == "today"
    earlier = pd.read_csv(out)
    earlier.loc[earlier["run_id"] == "kit160", "diff_to_kit"] = np.nan  # an empty column, filled by the next table
    earlier.loc[earlier["run_id"] == "kit128", "dice_mean"] = 0.5  # a value, kept
    earlier.to_csv(out, index=False)
    assert rt.main([str(tmp_path / "a"), "--baseline", "kit", "--metric", "dice_orig", "--out", str(out),
                    "--append", "--source", "later"]) == 0
    again = pd.read_csv(out).set_index(["run_id", "metric"])
    assert len(again) == 4 and list(again.columns)[:3] == ["recipe", "model", "fraction"]  # kept, not added
    assert again.loc[("kit160", "dice_orig"), "diff_to_kit"] == pytest.approx(0.06)
    assert (again.loc["kit128", "dice_mean"] == 0.5).all()
    assert again.loc[("kit160", "dice_orig"), "source"] == "today"
    (big / "test_metrics.csv").write_text("isic_id,dice\nISIC_0000000,0.5\n")
    with pytest.raises(ValueError, match="has no 'dice_orig' column"):
        rt.run_row(big, "dice_orig")


def test_the_command_writes_the_csv_and_names_an_empty_folder(tmp_path, capsys):
    _run(tmp_path, "a", "seed", lr=1e-4, warmup=0.0, epochs=20, dice=np.full(60, 0.8))
    out = tmp_path / "table.csv"
    assert rt.main([str(tmp_path), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["recipe"]) == ["seed"]
    assert rt.main([str(tmp_path / "empty")]) == 1
    assert "no evaluated runs under" in capsys.readouterr().err


def test_the_threshold_is_tuned_to_the_best_validation_dice():
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    probs = np.where(masks, 0.62, 0.58).astype(np.float32)  # only a threshold in (0.58, 0.62] separates them
    assert rt.tuned_threshold(probs, masks) == pytest.approx(0.6)


def test_test_time_choices_are_paired_with_the_plain_prediction(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    table = rt.test_time_table(run).set_index("choice")
    assert list(table.index) == ["plain", "tta", "postprocess", "threshold (val)", "all three"]
    assert table.loc["plain", "diff_to_plain"] == 0 and not table.loc["plain", "kept"]
    assert table.loc["threshold (val)", "threshold"] in rt.THRESHOLDS
    assert table.loc["all three", "threshold"] == table.loc["threshold (val)", "threshold"]
    for name, row in table.iterrows():
        assert row["dice_ci_low"] <= row["dice_mean"] <= row["dice_ci_high"]
        assert row["kept"] == (name != "plain" and row["diff_ci_low"] > 0)


def test_the_readme_quotes_the_committed_recipe_table():
    root = Path(__file__).resolve().parents[2]
    table = pd.read_csv(root / "results" / "benchmarks" / "recipes-cpu.csv")
    page = (root / "docs" / "results.md").read_text()
    section = page[page.index("## Recipes, measured on the CPU"):page.index("## Test-time choices")]
    for row in table.itertuples():
        if row.model == "unetpp":
            assert f"{row.dice_mean:.3f} [{row.dice_ci_low:.3f}, {row.dice_ci_high:.3f}]" in section, row.recipe
        if row.model == "unetpp" and row.recipe.startswith("kit") and row.fraction == 0.1 and row.diff_to_seed > 0:
            assert f"+{row.diff_to_seed:.3f} [{row.diff_seed_ci_low:.3f}, {row.diff_seed_ci_high:.3f}]" in section
            assert f"+{row.diff_to_custom:.3f} [{row.diff_custom_ci_low:.3f}, {row.diff_custom_ci_high:.3f}]" in section
        if str(row.source).startswith("steps") and row.recipe != "kit":  # a step beyond the recipe, against kit
            diff = f"{row.diff_to_kit:+.3f} [{row.diff_kit_ci_low:.3f}, {row.diff_kit_ci_high:.3f}]"
            assert diff.replace("-", "−") in section, row.recipe
    kit = table[(table["recipe"] == "kit num_epochs=12") & (table["fraction"] == 1.0)].set_index("model")
    for model in ("unet", "transunet"):
        assert f"{kit.loc[model, 'dice_mean']:.3f} [{kit.loc[model, 'dice_ci_low']:.3f}" in section
