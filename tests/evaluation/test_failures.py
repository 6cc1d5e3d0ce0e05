"""The failure analysis: per-image attributes of an evaluated run, the worst tenth against the rest, in words."""
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers.evaluation import failures, inference, scoring
from helpers.evaluation.failures import (
    _contrast,
    _dark_frame,
    _error_kind,
    describe_failures,
    failure_summary,
    failure_table,
)
from helpers.reporting import failure_report
from tests.builders import Brightness, make_run, shifted_prepared


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    prepared = shifted_prepared(root / "data")
    run_dir = make_run(root, "bright_f100", "unet", 1.0, prepared.root)
    scoring.evaluate_runs(root, load_model=lambda _: Brightness(), progress=False)
    return run_dir, prepared


def test_table_has_every_test_image_worst_first_with_measured_attributes(evaluated):
    run_dir, prepared = evaluated
    table = failure_table(run_dir, prepared)
    scores = pd.read_csv(run_dir / inference.METRICS_FILE).set_index("isic_id")
    assert sorted(table["isic_id"]) == sorted(scores.index) and len(table) == (prepared.table["split"] == "test").sum()
    assert table["dice"].is_monotonic_increasing
    assert np.allclose(table.set_index("isic_id")["dice"], scores.loc[table["isic_id"], "dice"])
    rows = prepared.table.reset_index().set_index("isic_id")["index"]
    for case in table.itertuples():
        mask = prepared.masks[rows[case.isic_id]].astype(bool)
        assert case.lesion_pct == pytest.approx(100 * mask.mean())
        edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        assert case.touches_edge == edge
    # the stand-in model marks the bright box, the truth is the box shifted right: nothing is missed
    assert set(table["error"]) <= {"ok", "too small", "too large"}
    # grey 220 box on grey 40 skin; the further the truth is shifted off the box, the less its colour differs
    assert (table["contrast"] > 30).all() and table["contrast"].corr(table["dice"]) > 0.5


def test_worst_cases_figure_shows_the_worst_images(evaluated):
    run_dir, prepared = evaluated
    table = failure_table(run_dir, prepared)
    fig = failure_report.worst_cases(run_dir, table, count=4, prepared=prepared)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and titles[0].startswith(table["isic_id"].iloc[0])


def test_attribute_helpers():
    image = np.full((40, 40, 3), 200, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    image[mask] = (90, 50, 40)
    assert _contrast(image, mask) > 40
    assert np.isnan(_contrast(image, np.zeros_like(mask)))
    assert not _dark_frame(image)
    framed = image.copy()
    framed[:6], framed[-6:] = 0, 0
    assert _dark_frame(framed)
    assert _error_kind(0.9, 5, 5, 100, 100) == "ok"
    assert _error_kind(0.05, 1, 95, 100, 6) == "missed"
    assert _error_kind(0.5, 10, 60, 100, 50) == "too small"
    assert _error_kind(0.5, 60, 10, 100, 150) == "too large"


def test_summary_and_words_contrast_the_worst_tenth_with_the_rest():
    rest = [{"isic_id": f"r{k}", "dice": 0.9, "lesion_pct": 30.0, "pred_pct": 30.0, "touches_edge": False,
             "dark_frame": False, "contrast": 40.0, "error": "ok"} for k in range(18)]
    worst = [{"isic_id": f"w{k}", "dice": 0.05, "lesion_pct": 2.0, "pred_pct": 0.1, "touches_edge": True,
              "dark_frame": True, "contrast": 10.0, "error": "missed"} for k in range(2)]
    table = pd.DataFrame(worst + rest)
    summary = failure_summary(table)
    assert summary["images"].tolist() == ["worst 10 % (2)", "rest (18)"]
    assert summary.loc[0, "lesion < 5 % of image"] == 1.0 and summary.loc[1, "lesion < 5 % of image"] == 0.0
    assert summary.loc[0, "missed"] == 1.0 and summary.loc[1, "median contrast"] == 40.0
    text = describe_failures(table)
    assert "100 % of them are small lesions" in text and "most are **missed**" in text
    assert "(0.25×)" in text
    assert "too few" in describe_failures(table.head(5))


def test_postprocess_effect_is_measured_on_the_saved_predictions(evaluated, tmp_path):
    run_dir, prepared = evaluated
    effect = failures.postprocess_effect(run_dir, prepared)
    assert effect["dice"][0] == pytest.approx(effect["dice"][1]) and not effect["already"]  # one box: no change
    assert effect["dice"][0] == pytest.approx(pd.read_csv(run_dir / inference.METRICS_FILE)["dice"].mean(), abs=1e-6)
    copy = tmp_path / run_dir.name  # the same run with a stray blob added to every prediction
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    ids, preds = inference.load_predictions(run_dir)
    preds[:, -3:, :3] = True
    np.savez_compressed(copy / inference.PREDS_FILE, packed=np.packbits(preds, axis=-1), width=preds.shape[-1],
                        isic_id=ids)
    stray = failures.postprocess_effect(copy, prepared)
    assert stray["dice"][0] < stray["dice"][1] == pytest.approx(effect["dice"][1])
