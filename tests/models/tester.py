"""What every segmentation model of the kit must do, written once.

A model's test class names the model and its configurations; the checks are inherited::

    class TestUNet(ModelTester):
        name = "unet"
        params = {"paper": 31_037_633}

Each model's own behaviour (UNet++'s deep supervision, TransUNet's pretrained weights) is tested
beside its class, in the same file.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from helpers.models import build_model, list_configs
from helpers.models.summary import count_parameters


def check_gradients(model: nn.Module) -> None:
    """Every trainable parameter received a finite gradient."""
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{key} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{key} has a non-finite gradient"


class ModelTester:
    """Shapes, gradients, other input sizes, determinism, state-dict round trip, counts, export, input checks."""

    name: str = ""
    configs: tuple[str, ...] = ("tiny", "small")  # the first is the one the other checks build
    size: int = 32  # an input side the model takes
    other_sizes: tuple[tuple[int, int], ...] = ((64, 64), (48, 80))  # larger and non-square inputs
    params: dict[str, int] = {}  # exact parameter counts of named configurations, e.g. {"paper": 31_037_633}
    export_overrides: dict = {}  # configuration fields for the export check (e.g. UNet++ pruned)

    def build(self, config: str | None = None, **overrides) -> nn.Module:
        torch.manual_seed(0)
        return build_model(self.name, config or self.configs[0], **overrides)

    def images(self, batch: int = 2, height: int | None = None, width: int | None = None) -> torch.Tensor:
        return torch.randn(batch, 3, height or self.size, width or self.size)  # (B, 3, H, W)

    def test_logits_have_the_input_size_and_every_parameter_gets_a_gradient(self) -> None:
        for config in self.configs:
            model = self.build(config)
            logits = model(self.images())
            assert logits.shape == (2, 1, self.size, self.size), config
            logits.float().mean().backward()
            check_gradients(model)

    def test_larger_and_non_square_inputs_keep_their_size(self) -> None:
        model = self.build().eval()
        with torch.no_grad():
            for height, width in self.other_sizes:
                assert model(self.images(1, height, width)).shape == (1, 1, height, width)

    def test_eval_mode_is_deterministic_and_batch_independent(self) -> None:
        model = self.build().eval()
        images = self.images(3)
        with torch.no_grad():
            batch = model(images)
            assert torch.equal(batch, model(images))
            alone = model(images[1:2])
        assert torch.allclose(alone, batch[1:2], atol=1e-5)  # no batch statistics at inference

    def test_a_state_dict_round_trip_gives_the_same_logits(self) -> None:
        model = self.build().eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        other = build_model(self.name, self.configs[0]).eval()  # another random initialisation
        other.load_state_dict(torch.load(buffer, weights_only=True))
        images = self.images()
        with torch.no_grad():
            assert torch.equal(other(images), model(images))

    def test_an_image_without_a_batch_dimension_gets_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match=r"expects images of shape \(B, C, H, W\)"):
            self.build()(torch.randn(3, self.size, self.size))

    def test_the_registry_offers_the_course_configurations(self) -> None:
        assert {"paper", "small", "cpu", "tiny"} <= set(list_configs()[self.name])
        assert set(self.configs) <= set(list_configs()[self.name])

    def test_configurations_have_their_parameter_counts(self) -> None:
        assert self.params, f"{type(self).__name__} states no parameter count"
        for config, expected in self.params.items():
            with torch.device("meta"):  # counted without allocating the parameters
                assert count_parameters(build_model(self.name, config)) == expected, config

    def test_export_matches_eager(self) -> None:
        model = self.build(**self.export_overrides).eval()
        images = self.images()
        exported = torch.export.export(model, (images,))
        with torch.no_grad():
            assert torch.allclose(exported.module()(images), model(images), atol=1e-5)
