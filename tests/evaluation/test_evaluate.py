"""Evaluation: TTA, post-processing, resizing back, per-image tables, latency, files in the run folder."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers.evaluation import inference
from helpers.training import metrics
from tests.builders import Brightness, shifted_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return shifted_prepared(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def result(prepared):
    return inference.evaluate(Brightness(), prepared, batch_size=4, progress=False)


class RightHalf(nn.Module):
    """Logits +50 on the right half of the image and −50 on the left (not flip-symmetric)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        logits = torch.full_like(images[:, :1], -50.0)
        logits[..., images.shape[-1] // 2:] = 50.0
        return logits + self.dummy


def test_tta_averages_identity_and_both_flips():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    (_, plain, _), = inference.iter_probs(RightHalf(), images, np.arange(2))
    (_, tta, _), = inference.iter_probs(RightHalf(), images, np.arange(2), tta=True)
    assert plain.shape == (2, 8, 8) and plain.dtype == np.float32
    assert np.allclose(plain[:, :, 4:], 1) and np.allclose(plain[:, :, :4], 0)
    # identity and vertical flip see the right half; the horizontal flip sees the left half.
    assert np.allclose(tta[:, :, 4:], 2 / 3) and np.allclose(tta[:, :, :4], 1 / 3)


def test_postprocess_keeps_the_largest_component_and_fills_its_holes():
    preds = np.zeros((10, 10), bool)
    preds[1:6, 1:6] = True          # 25 pixels, with a hole
    preds[3, 3] = False
    preds[8:10, 8:10] = True        # 4 pixels: dropped
    out = inference.postprocess(preds)
    assert out.sum() == 25 and out[3, 3] and not out[8:, 8:].any()
    assert not inference.postprocess(np.zeros((4, 4), bool)).any()


def test_finalize_resizes_probs_back_before_thresholding():
    probs = np.zeros((4, 4), np.float32)
    probs[:, 2:] = 1.0
    full = inference.finalize(probs, 0.5, size=(6, 10))
    assert full.shape == (6, 10) and full.dtype == bool
    assert full[:, 6:].all() and not full[:, :4].any()
    assert inference.finalize(probs, 0.5).sum() == 8


def test_thresholded_jaccard_hand_made_case():
    masks = np.zeros((3, 10, 10), bool)
    masks[:] = True                  # lesion fills each image: 100 pixels
    preds = np.zeros_like(masks)
    preds[0, :8] = True              # IoU 80/100 = 0.80 ≥ 0.65: kept
    preds[1, :6] = True              # IoU 0.60 < 0.65: scored 0
    preds[2].flat[:65] = True        # IoU exactly 0.65: kept
    table = inference.score_images(preds, masks, with_hd95=False)
    assert np.allclose(table["iou"], [0.8, 0.6, 0.65])
    assert np.allclose(table["jaccard_thresholded"], [0.8, 0.0, 0.65])
    assert np.allclose(table["dice"], [2 * 80 / 180, 2 * 60 / 160, 2 * 65 / 165])
    assert list(table.columns) == ["dice", "iou", "accuracy", "sensitivity", "specificity", "jaccard_thresholded"]


def test_evaluate_scores_every_test_image_at_both_sizes(prepared, result):
    rows = prepared.indices("test")
    table = result.table
    assert len(table) == len(rows) == 6 and list(table["isic_id"]) == list(prepared.table["isic_id"].iloc[rows])
    assert set(inference.METRICS + inference.ORIG_METRICS) <= set(table.columns)
    # the training-size scores are exactly helpers.training.metrics on the saved predictions
    expected = metrics.per_image_metrics(result.preds, np.asarray(prepared.masks[rows]), with_hd95=True)
    assert np.allclose(table["dice"], expected["dice"].numpy())
    assert np.allclose(table["hd95"], expected["hd95"].numpy())
    iou = table["iou_orig"].to_numpy()
    assert np.allclose(table["jaccard_thresholded_orig"], np.where(iou >= 0.65, iou, 0))
    assert (iou >= 0.65).any() and (iou < 0.65).any()         # both branches of the challenge score
    unshifted = table["isic_id"].str[-7:].astype(int) % 8 == 0
    assert (table.loc[unshifted, "dice_orig"] > 0.97).all()   # the bright box is the lesion


def test_evaluate_reports_latency_and_settings(result):
    info = result.info
    assert info["n_images"] == 6 and info["images_per_s"] > 0
    assert info["ms_per_image"] * info["images_per_s"] == pytest.approx(1000)
    assert info["device"] == "cpu" and info["original_resolution"] is True
    assert (info["tta"], info["postprocess"], info["threshold"]) == (False, False, 0.5)


def test_original_masks_come_from_the_preparation_when_the_raw_data_is_gone(prepared, result, tmp_path):
    table = prepared.table.copy()
    table["mask_path"] = str(tmp_path / "gone.png")  # a fresh Colab runtime: the raw files were on the old one
    moved = type(prepared)(prepared.root, prepared.images, prepared.masks, table, prepared.manifest)
    out = inference.evaluate(Brightness(), moved, progress=False)
    assert out.info["original_resolution"] is True
    pd.testing.assert_frame_equal(out.table.filter(like="_orig"), result.table.filter(like="_orig"))


def test_missing_original_masks_skip_original_resolution(prepared, tmp_path):
    table = prepared.table.copy()
    table["mask_path"] = str(tmp_path / "gone.png")
    moved = type(prepared)(tmp_path, prepared.images, prepared.masks, table, prepared.manifest)  # no originals.zip
    out = inference.evaluate(Brightness(), moved, with_hd95=False, progress=False)
    assert out.info["original_resolution"] is False and "dice_orig" not in out.table


def test_empty_split_is_an_error_naming_the_table(prepared):
    with pytest.raises(ValueError, match="splits.csv has no 'nope' images"):
        inference.evaluate(Brightness(), prepared, "nope")


def test_saved_evaluation_round_trips(result, tmp_path):
    path = inference.save_evaluation(result, tmp_path)
    assert path == tmp_path / "test_metrics.csv"
    table = pd.read_csv(path)
    assert np.allclose(table["dice"], result.table["dice"], atol=1e-6)
    info = json.loads((tmp_path / "eval.json").read_text())
    assert info["n_images"] == 6 and "created" in info
    ids, preds = inference.load_predictions(tmp_path)
    assert list(ids) == list(result.table["isic_id"]) and np.array_equal(preds, result.preds)
    assert not list(tmp_path.glob(".*tmp*"))


def test_the_claims_folder_of_the_training_command_is_no_run(tmp_path):
    from helpers.evaluation import scoring
    from helpers.training.claims import LOCK_FOLDER

    for name in (LOCK_FOLDER, "unet-run_b", "unet-run_a"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    assert [p.name for p in scoring.list_run_dirs(tmp_path)] == ["unet-run_a", "unet-run_b"]
    assert scoring.list_run_dirs(tmp_path / "nothing") == []
