"""UNet: the shared model checks (tester.py)."""

from __future__ import annotations

import pytest
import torch

from helpers.models import build_model
from tests.models.tester import ModelTester


class TestUNet(ModelTester):
    name = "unet"
    params = {"paper": 31_037_633, "small": 7_763_041, "cpu": 1_942_577, "tiny": 122_093}

    def test_an_input_off_the_stride_names_the_multiple_needed(self) -> None:
        with pytest.raises(ValueError, match="UNet needs input height and width that are multiples of 16; got 32x24"):
            build_model("unet", "tiny")(torch.randn(1, 3, 32, 24))
