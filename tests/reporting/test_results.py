"""Aggregation over run folders, statistics, comparisons, figures and the report, from a smoke grid."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from helpers.evaluation import scoring, stats
from helpers.reporting import figures, report, tables
from tests.builders import make_run, shifted_prepared

MODELS, FRACTIONS = ("transunet", "unet", "unetpp"), (0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """3 models × 4 fractions, evaluated; plus an unfinished, a broken and a data-less run folder."""
    root = tmp_path_factory.mktemp("grid")
    prepared = shifted_prepared(root / "data")
    for model in MODELS:
        for fraction in FRACTIONS:
            make_run(root, f"{model}_f{int(100 * fraction):03d}", model, fraction, prepared.root)
    make_run(root, "unet_f100_unfinished", "unet", 1.0, prepared.root, finished=False)
    broken = make_run(root, "unet_f100_broken", "unet", 1.0, prepared.root)
    (broken / "config.json").write_text("{not json")
    make_run(root, "unet_f100_nodata", "unet", 1.0, root / "moved-away")
    done = scoring.evaluate_runs(root, progress=False)
    return root, done


# ---- statistics: known values ---------------------------------------------------------------------

def test_bootstrap_ci_known_cases():
    assert stats.bootstrap_ci([0.7] * 20) == pytest.approx((0.7, 0.7))
    assert stats.bootstrap_ci([0.3]) == (0.3, 0.3)
    assert all(np.isnan(stats.bootstrap_ci([np.nan])))
    values = np.random.default_rng(1).uniform(size=400)
    low, high = stats.bootstrap_ci(values)
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.15)
    assert stats.bootstrap_ci(values) == (low, high)  # seeded


def test_wilcoxon_and_holm_known_values():
    assert stats.wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # exact: all 5 signs positive
    assert stats.wilcoxon_p([0, 0, 0]) == 1.0
    assert np.allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.isnan(stats.holm([np.nan, 0.2])[0]) and stats.holm([np.nan, 0.2])[1] == pytest.approx(0.2)


def test_paired_difference_and_verdict():
    b = np.linspace(0.5, 0.9, 30)
    out = stats.paired_difference(b + 0.1, b)
    assert out["mean_diff"] == pytest.approx(0.1) and out["ci_low"] == pytest.approx(0.1)
    assert out["a_wins"] == 1.0 and out["n"] == 30
    assert stats.verdict("unet", "unetpp", out["ci_low"], out["ci_high"]) == "unet better"
    assert stats.verdict("unet", "unetpp", -0.2, -0.1) == "unetpp better"
    assert stats.verdict("unet", "unetpp", -0.1, 0.1) == "no clear difference"
    with pytest.raises(ValueError, match="same images"):
        stats.paired_difference([1, 2], [1])


# ---- aggregation ------------------------------------------------------------------------------------

def test_evaluate_runs_evaluates_finished_runs_only(grid):
    root, done = grid
    actions = done.set_index("run_id")["action"]
    assert (actions.drop(["unet_f100_unfinished", "unet_f100_broken", "unet_f100_nodata"]) == "evaluated").all()
    assert actions["unet_f100_nodata"].startswith("failed: DataError: ") and "moved-away" in actions["unet_f100_nodata"]
    assert actions["unet_f100_unfinished"].startswith("skipped: unet_f100_unfinished: training has not finished")
    broken = actions["unet_f100_broken"]
    assert broken.startswith("skipped: ") and "config.json is unreadable" in broken
    again = scoring.evaluate_runs(root)
    assert not (again["action"] == "evaluated").any()


def test_summary_flags_incomplete_runs_instead_of_crashing(grid):
    root, _ = grid
    summary = pd.read_csv(tables.write_summary(root))
    assert len(summary) == 15
    status = summary.set_index("run_id")["status"]
    assert status["unet_f100_unfinished"] == "unfinished" and status["unet_f100_broken"] == "broken"
    assert status["unet_f100_nodata"] == "not evaluated"
    assert (status.drop(["unet_f100_unfinished", "unet_f100_broken", "unet_f100_nodata"]) == "ok").all()
    ok = summary[summary["status"] == "ok"]
    assert set(zip(ok["model"], ok["fraction"])) == {(m, f) for m in MODELS for f in FRACTIONS}
    assert (ok["n_test"] == 6).all() and (ok["params"] > 0).all() and (ok["train_seconds"] > 0).all()
    assert (ok["dice_ci_low"] <= ok["dice_mean"]).all() and (ok["dice_mean"] <= ok["dice_ci_high"]).all()
    assert {"iou_orig_mean", "jaccard_thresholded_mean", "hd95_std", "images_per_s", "ms_per_image",
            "eval_hardware", "hardware", "profile", "epochs"} <= set(summary.columns)
    first = ok.iloc[0]
    per_image = pd.read_csv(root / "runs" / first["run_id"] / "test_metrics.csv")
    assert first["dice_mean"] == pytest.approx(per_image["dice"].mean(), abs=1e-5)
    assert first["dice_std"] == pytest.approx(per_image["dice"].std(ddof=1), abs=1e-5)
    unfinished = summary.set_index("run_id").loc["unet_f100_unfinished"]
    assert unfinished["model"] == "unet" and pd.isna(unfinished["dice_mean"])


def test_compare_models_pairs_each_fraction(grid):
    root, _ = grid
    summary = tables.collect_summary(root)
    table = tables.compare_models(summary, "dice", root)
    assert len(table) == 4 * 3                                # 4 fractions × 3 model pairs
    assert set(zip(table["model_a"], table["model_b"])) == {("transunet", "unet"), ("transunet", "unetpp"),
                                                            ("unet", "unetpp")}
    assert (table["n"] == 6).all() and (table["p_holm"] >= table["p_wilcoxon"]).all()
    row = table.iloc[0]
    assert row["mean_diff"] == pytest.approx(row["mean_a"] - row["mean_b"])


# ---- figures and report -----------------------------------------------------------------------------

def test_result_figures_are_figures():
    summary = pd.DataFrame({"model": ["unet", "unet", "unetpp"], "fraction": [0.1, 1.0, 1.0],
                            "dice_mean": [0.6, 0.8, 0.82], "dice_ci_low": [0.5, 0.7, 0.75],
                            "dice_ci_high": [0.7, 0.9, 0.88]})
    fig = figures.data_efficiency(summary, "dice", report.REFERENCE_DICE)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2 + 2
    history = pd.DataFrame({"model": ["unet", "unet", "unetpp"], "fraction": [1.0, 1.0, 0.5], "epoch": [1, 2, 1],
                            "train_loss": [1, 0.5, 0.9], "val_loss": [1, 0.6, 0.8], "val_dice": [0.3, 0.6, 0.4]})
    curves = figures.training_curves(history)
    assert len(curves.axes) == 4 and len(curves.axes[0].lines) == 2   # 2 models × (loss, Dice); train + val
    image = np.zeros((4, 4, 3), np.uint8)
    mask, pred = np.eye(4, dtype=bool), np.zeros((4, 4), bool)
    pred[0, :2] = True
    tinted = figures.error_overlay(image, mask, pred, alpha=1.0)
    assert tuple(tinted[0, 0]) == figures.PALETTE["hit"] and tuple(tinted[0, 1]) == figures.PALETTE["false_alarm"]
    assert tuple(tinted[1, 1]) == figures.PALETTE["missed"] and tuple(tinted[3, 0]) == (0, 0, 0)


def test_pick_cases_best_median_worst():
    picked = figures.pick_cases(np.array([0.5, 0.9, 0.1, 0.7, 0.3]), per_group=1)
    assert picked["best"].tolist() == [1] and picked["median"].tolist() == [0] and picked["worst"].tolist() == [2]


def test_report_and_figures_from_the_smoke_grid(grid):
    root, _ = grid
    path = report.write_report(root, n_boot=200)
    text = path.read_text()
    assert path == root / "report.md" and (root / "summary.csv").is_file() and (root / "comparisons.csv").is_file()
    for name in ("data_efficiency_dice", "data_efficiency_jaccard_thresholded", "dice_distributions",
                 "training_curves", "cases"):
        assert (root / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"(figures/{name}.png)" in text
    for heading in ("## How to read this report", "## Setup: profile and hardware", "## Test results",
                    "## Which differences are real", "## Runs left out", "## Size, time and speed",
                    "for reference (its figures, not ours)"):
        assert heading in text
    assert text.count("| unet | tiny |") == 4 + 5  # scores: 4 evaluated runs; cost: also the finished nodata run
    assert "unet_f100_unfinished | unfinished" in text and "unet_f100_nodata | not evaluated" in text
    assert "0.8608" in text and "original study Dice (reference)" in text
    assert "per image" in text.lower() and "pooled" in text
    assert json.loads((root / "runs" / "unet_f100" / "eval.json").read_text())["n_images"] == 6


def test_seeds_show_their_spread_and_the_figures_use_one_seed(tmp_path):
    root, prepared = tmp_path / "results", shifted_prepared(tmp_path / "data")
    for seed in (1, 2, 3):
        folder = make_run(root, f"unet_f100_s{seed}", "unet", 1.0, prepared.root)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "seed": seed}))
    make_run(root, "unetpp_f100_s1", "unetpp", 1.0, prepared.root)  # one seed only: no spread row
    scoring.evaluate_runs(root, progress=False)
    for seed, shift in ((1, 0.0), (2, 0.1), (3, 0.2)):  # known per-seed means: each image's Dice moved by `shift`
        path = root / "runs" / f"unet_f100_s{seed}" / "test_metrics.csv"
        scores = pd.read_csv(path)
        scores["dice"] = 0.5 + shift
        scores.to_csv(path, index=False)
    summary = tables.collect_summary(root, n_boot=200)
    spread = tables.seed_spread(summary, "dice", root)
    assert list(spread["model"]) == ["unet"] and spread["seeds"].iloc[0] == "1,2,3"
    assert spread["mean"].iloc[0] == pytest.approx(0.6) and spread["std_between_seeds"].iloc[0] == pytest.approx(0.1)
    assert (spread["min"].iloc[0], spread["max"].iloc[0]) == pytest.approx((0.5, 0.7))
    primary = tables.primary_runs(summary, root)
    assert sorted(primary["run_id"]) == ["unet_f100_s1", "unetpp_f100_s1"]
    assert "## Between seeds" in report.write_report(root, n_boot=200).read_text()
    assert stats.between_seeds([0.5, np.nan])["n"] == 1


def test_percentile_interval_is_the_central_share_and_ignores_nan():
    values = np.arange(1, 101, dtype=float)
    assert stats.percentile_interval(values) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    assert stats.percentile_interval(np.append(values, np.nan), 0.5) == pytest.approx((25.75, 75.25))
    assert all(np.isnan(stats.percentile_interval([np.nan, np.nan])))
