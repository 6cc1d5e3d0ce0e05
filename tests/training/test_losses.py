"""Known-value tests for helpers.losses.DiceBCELoss: values, dtypes, shapes, deep supervision."""
import math

import pytest
import torch

from helpers.training.losses import DiceBCELoss, soft_dice_loss


def _masks(batch=3, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float()
    masks[0] = 0  # one image without lesion
    return masks


def test_perfect_prediction_is_near_zero():
    masks = _masks()
    logits = (masks * 2 - 1) * 50  # confident and right everywhere
    assert DiceBCELoss()(logits, masks).item() < 1e-6


def test_known_value_by_hand():
    logits = torch.zeros(1, 1, 2, 2)  # probs 0.5 everywhere
    masks = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # BCE = ln 2 per pixel; soft Dice = (2·1 + 1) / (2 + 2 + 1) = 0.6, so Dice loss = 0.4
    assert DiceBCELoss()(logits, masks).item() == pytest.approx(0.5 * 0.4 + 0.5 * math.log(2))
    assert DiceBCELoss(1.0, 0.0)(logits, masks).item() == pytest.approx(0.4)
    assert DiceBCELoss(0.0, 1.0)(logits, masks).item() == pytest.approx(math.log(2))


def test_dice_is_per_image_then_averaged():
    logits = torch.zeros(2, 1, 2, 2)
    masks = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])[:, None]
    # image 1: (2·1 + 1) / (2 + 2 + 1) = 0.6; image 2: (2·2 + 1) / (2 + 4 + 1) = 5/7
    expected = ((1 - 0.6) + (1 - 5 / 7)) / 2
    assert soft_dice_loss(logits, masks).item() == pytest.approx(expected)
    assert DiceBCELoss(1.0, 0.0)(logits, masks).item() == pytest.approx(expected)
    pooled = 1 - (2 * 3 + 1) / (4 + 6 + 1)
    assert abs(expected - pooled) > 0.01


def test_fp16_and_autocast_logits_give_fp32_loss():
    masks = _masks()
    logits = torch.randn(3, 1, 8, 8)
    reference = DiceBCELoss()(logits, masks)
    half = DiceBCELoss()(logits.half(), masks)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(reference.item(), abs=1e-3)
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = conv(torch.randn(3, 3, 8, 8))
        loss = DiceBCELoss()(out, masks)
    assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32 and loss.ndim == 0


def test_mask_shapes_and_dtypes_are_converted():
    masks = _masks()
    logits = torch.randn(3, 1, 8, 8)
    loss = DiceBCELoss()
    expected = loss(logits, masks).item()
    variants = [masks[:, 0], masks.bool(), masks.to(torch.uint8), masks[:, 0].to(torch.uint8) * 255]
    for variant in variants:
        assert loss(logits, variant).item() == pytest.approx(expected)
    assert loss(logits[:, 0], masks).item() == pytest.approx(expected)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\).*\(2, 1, 4, 4\)"):
        DiceBCELoss()(torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 2, 8, 8\)"):
        DiceBCELoss()(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8))


def test_deep_supervision_averages_heads():
    masks = _masks()
    heads = [torch.randn(3, 1, 8, 8) for _ in range(3)]
    loss = DiceBCELoss()
    expected = sum(loss(h, masks).item() for h in heads) / 3
    assert loss(heads, masks).item() == pytest.approx(expected)
    assert loss(tuple(heads), masks).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="empty"):
        loss([], masks)


def test_gradient_is_finite_for_extreme_logits():
    masks = _masks()
    logits = (torch.randn(3, 1, 8, 8) * 100).requires_grad_()
    DiceBCELoss()(logits, masks).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_invalid_weights_raise():
    with pytest.raises(ValueError, match="weights"):
        DiceBCELoss(dice_weight=0.0, bce_weight=0.0)
    with pytest.raises(ValueError, match="weights"):
        DiceBCELoss(dice_weight=-1.0)
