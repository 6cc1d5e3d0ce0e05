"""UNet++: the shared model checks (tester.py), then deep supervision and pruning."""

from __future__ import annotations

import pytest
import torch

from helpers.models import build_model
from tests.models.tester import ModelTester, check_gradients


class TestUNetPlusPlus(ModelTester):
    name = "unetpp"
    params = {"paper": 9_159_681, "small": 2_291_969, "cpu": 574_017, "tiny": 144_017}
    export_overrides = {"deep_supervision": True, "prune_depth": 3}  # the pruned graph exports too


def test_unetpp_deep_supervision_returns_four_logits_in_training_and_one_in_eval() -> None:
    model = build_model("unetpp", "tiny", deep_supervision=True)
    images = torch.randn(2, 3, 32, 32)
    outputs = model(images)
    assert isinstance(outputs, list) and len(outputs) == 4
    assert all(logits.shape == (2, 1, 32, 32) for logits in outputs)
    sum(logits.mean() for logits in outputs).backward()
    check_gradients(model)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(logits, model.heads[3](model._nodes(images, 4)[(0, 4)]))  # the head on x_0_4


def test_unetpp_pruned_inference_uses_head_l_and_computes_only_its_nodes() -> None:
    torch.manual_seed(0)
    model = build_model("unetpp", "tiny", deep_supervision=True).eval()
    images = torch.randn(1, 3, 32, 32)
    called: list[str] = []
    for name, module in model.named_children():
        if name.startswith("x_"):
            module.register_forward_hook(lambda _m, _i, _o, name=name: called.append(name))
    outputs = {}
    for depth in (1, 2, 3, 4):
        called.clear()
        model.prune_depth = depth
        with torch.no_grad():
            outputs[depth] = model(images)
        assert outputs[depth].shape == (1, 1, 32, 32)
        assert len(called) == (depth + 1) * (depth + 2) // 2  # nodes x_i_j with i + j <= depth
        assert called[-1] == f"x_0_{depth}"
        assert all(int(i) + int(j) <= depth for i, j in (n.split("_")[1:] for n in called))
    for a, b in ((1, 2), (2, 3), (3, 4)):
        assert not torch.allclose(outputs[a], outputs[b])
    model.prune_depth = None
    with torch.no_grad():
        assert torch.equal(model(images), outputs[4])


def test_unetpp_pruning_needs_deep_supervision_and_a_valid_depth() -> None:
    with pytest.raises(ValueError, match="deep_supervision=True"):
        build_model("unetpp", "tiny", prune_depth=2)
    with pytest.raises(ValueError, match="between 1 and 4"):
        build_model("unetpp", "tiny", deep_supervision=True, prune_depth=5)
