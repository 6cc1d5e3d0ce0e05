"""Known-value tests for helpers.training.metrics: counts, reductions, ISIC score, HD95, accumulation."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from helpers.training.metrics import (
    MetricAccumulator,
    accuracy,
    confusion_counts,
    dice,
    hd95,
    iou,
    jaccard_thresholded,
    per_image_metrics,
    scores_from_counts,
    sensitivity,
    specificity,
)

SCORE_NAMES = ("dice", "iou", "accuracy", "sensitivity", "specificity", "jaccard_thresholded")


def _t(*rows):
    """One (1, 1, H, W) uint8 image from rows of 0/1."""
    return torch.tensor(rows, dtype=torch.uint8)[None, None]


def _square(shape, top, left, side):
    m = np.zeros(shape, dtype=bool)
    m[top:top + side, left:left + side] = True
    return m


def test_identical_masks_score_one():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, 2:6, 2:6] = 1
    masks[1, 0, :4] = 1
    scores = per_image_metrics(masks, masks)
    for name in SCORE_NAMES:
        assert torch.equal(scores[name], torch.ones(2)), name


def test_disjoint_masks_score_zero():
    preds = torch.zeros(1, 4, 4, dtype=torch.bool)
    preds[..., :2] = True
    scores = per_image_metrics(preds, ~preds)
    for name in SCORE_NAMES:
        assert scores[name].item() == 0.0, name


def test_half_overlap_exact_values():
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., :, :2] = 1  # left half, 8 px
    preds = torch.zeros(1, 1, 4, 4)
    preds[..., :2, :] = 1  # top half, 8 px: TP 4, FP 4, FN 4, TN 4
    counts = confusion_counts(preds, masks)
    assert [c.item() for c in counts] == [4, 4, 4, 4]
    assert dice(*counts).item() == 0.5
    assert iou(*counts).item() == pytest.approx(1 / 3)
    assert accuracy(*counts).item() == 0.5


def test_sensitivity_specificity_accuracy_by_hand():
    masks = _t([1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0])
    preds = _t([0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0])
    counts = confusion_counts(preds, masks)
    assert [c.item() for c in counts] == [3, 2, 3, 8]  # TP, FP, FN, TN
    assert sensitivity(*counts).item() == 0.5  # 3 / 6
    assert specificity(*counts).item() == pytest.approx(0.8)  # 8 / 10
    assert accuracy(*counts).item() == 0.6875  # 11 / 16
    assert dice(*counts).item() == pytest.approx(6 / 11)
    assert iou(*counts).item() == 0.375  # 3 / 8


def test_empty_mask_values():
    empty, full = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    both_empty = per_image_metrics(empty, empty)
    for name in SCORE_NAMES:
        assert both_empty[name].item() == 1.0, name
    false_alarm = per_image_metrics(full, empty)
    assert false_alarm["dice"].item() == 0.0 and false_alarm["iou"].item() == 0.0
    assert false_alarm["sensitivity"].item() == 1.0  # no lesion pixel to miss
    assert false_alarm["specificity"].item() == 0.0
    assert per_image_metrics(full, full)["specificity"].item() == 1.0  # no background


def test_jaccard_thresholded_isic_rule():
    out = jaccard_thresholded([0.9, 0.6, 0.7])
    assert torch.allclose(out, torch.tensor([0.9, 0.0, 0.7]))
    assert jaccard_thresholded(torch.tensor([0.65]), threshold=0.65).item() == pytest.approx(0.65)


def test_per_image_and_pooled_differ():
    masks = torch.zeros(2, 1, 10, 10)
    masks[0, 0, :6] = 1  # large lesion, 60 px, found exactly
    masks[1, 0, :2, :2] = 1  # small lesion, 4 px, missed
    preds = masks.clone()
    preds[1] = 0
    counts = confusion_counts(preds, masks)
    assert torch.equal(dice(*counts), torch.tensor([1.0, 0.0]))  # mean over images 0.5
    assert dice(*counts, reduction="pooled").item() == pytest.approx(120 / 124)
    assert iou(*counts, reduction="pooled").item() == pytest.approx(60 / 64)
    with pytest.raises(ValueError, match="reduction"):
        dice(*counts, reduction="mean")


def test_channel_axis_optional_and_mismatch_raises():
    masks = torch.rand(3, 1, 5, 6) > 0.5
    preds = torch.rand(3, 1, 5, 6) > 0.5
    expected = confusion_counts(preds, masks)
    for p, m in [(preds[:, 0], masks), (preds, masks[:, 0]), (preds[:, 0], masks[:, 0])]:
        assert all(torch.equal(a, b) for a, b in zip(confusion_counts(p, m), expected))
    numpy_counts = confusion_counts(preds.numpy(), masks[:, 0].numpy())
    assert all(torch.equal(a, b) for a, b in zip(numpy_counts, expected))
    for bad in (masks[:, :, :, :5], masks[:2], masks[0], torch.cat([masks, masks], dim=1)):
        with pytest.raises(ValueError, match=r"\(3, 1, 5, 6\)") as info:
            confusion_counts(preds, bad)
        assert str(tuple(bad.shape)) in str(info.value)


def test_dtypes_are_int64_counts_and_fp32_scores():
    probs = torch.rand(2, 1, 8, 8).half()
    masks = (torch.rand(2, 8, 8) > 0.5).to(torch.uint8) * 255  # 0/255 masks
    counts = confusion_counts(probs, masks)
    assert all(c.dtype == torch.int64 and c.shape == (2,) for c in counts)
    assert sum(c.sum().item() for c in counts) == 2 * 64
    scores = per_image_metrics(probs, masks)
    assert all(v.dtype == torch.float32 and v.shape == (2,) for v in scores.values())


def test_threshold_applies_to_probs():
    probs = torch.full((1, 1, 2, 2), 0.4)
    masks = torch.ones(1, 1, 2, 2)
    assert per_image_metrics(probs, masks)["dice"].item() == 0.0
    assert per_image_metrics(probs, masks, threshold=0.3)["dice"].item() == 1.0


def test_accumulator_matches_one_shot():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(10, 1, 16, 16, generator=generator)
    masks = torch.rand(10, 16, 16, generator=generator) > 0.6
    accumulator = MetricAccumulator(threshold=0.5)
    for start, stop in [(0, 3), (3, 7), (7, 10)]:
        accumulator.update(probs[start:stop], masks[start:stop])
    assert len(accumulator) == 10
    one_shot = per_image_metrics(probs, masks)
    per_image = accumulator.per_image()
    for name in SCORE_NAMES:
        assert torch.equal(per_image[name], one_shot[name]), name
        assert accumulator.means()[name] == pytest.approx(one_shot[name].mean().item())
    pooled = scores_from_counts(*confusion_counts(probs >= 0.5, masks), reduction="pooled")
    assert accumulator.pooled() == pytest.approx({k: v.item() for k, v in pooled.items()})
    accumulator.reset()
    with pytest.raises(ValueError, match="empty"):
        accumulator.counts()


def test_hd95_squares_offset_by_three():
    a = _square((12, 14), 2, 2, 6)
    b = _square((12, 14), 2, 5, 6)  # same square, 3 px to the right
    assert hd95(a, b) == 3.0
    assert hd95(a, b, spacing=0.5) == 1.5
    assert hd95(a, a) == 0.0


def test_hd95_empty_cases():
    empty = np.zeros((30, 40), dtype=bool)
    lesion = _square((30, 40), 5, 5, 4)
    assert hd95(empty, empty) == 0.0
    assert hd95(lesion, empty) == 50.0  # image diagonal: sqrt(30² + 40²)
    assert hd95(empty, lesion) == 50.0
    with pytest.raises(ValueError, match="hd95"):
        hd95(empty, empty[:, :10])


def _brute_boundary(mask):
    height, width = mask.shape
    points = []
    for r, c in zip(*np.nonzero(mask)):
        neighbours = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
        if any(not (0 <= y < height and 0 <= x < width) or not mask[y, x] for y, x in neighbours):
            points.append((r, c))
    return np.array(points, dtype=float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((20, 24)) > 0.55, rng.random((20, 24)) > 0.7
    spacing = np.array([1.0, 0.7])
    pa, pb = _brute_boundary(a) * spacing, _brute_boundary(b) * spacing
    distances = cdist(pa, pb)
    expected = np.percentile(np.concatenate([distances.min(1), distances.min(0)]), 95)
    assert hd95(a, b, spacing=(1.0, 0.7)) == pytest.approx(expected)
    as_tensors = torch.from_numpy(a)[None], torch.from_numpy(b)[None]  # (1, H, W) tensors
    assert hd95(*as_tensors, spacing=(1.0, 0.7)) == pytest.approx(expected)


def test_per_image_metrics_with_hd95():
    a = _square((12, 14), 2, 2, 6)
    b = _square((12, 14), 2, 5, 6)
    preds = torch.from_numpy(np.stack([a, a]))[:, None].float()  # (2, 1, H, W)
    masks = torch.from_numpy(np.stack([b, np.zeros_like(b)]))  # (2, H, W)
    scores = per_image_metrics(preds, masks, with_hd95=True)
    assert scores["hd95"].tolist() == pytest.approx([3.0, float(np.hypot(12, 14))])
