"""TransUNet: the shared model checks (tester.py), then its size rules, position embeddings and pretrained weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from helpers.models import build_model, load_pretrained
from helpers.models.summary import count_parameters
from helpers.models.transunet import resize_pos_embed
from tests.models.tester import ModelTester


class TestTransUNet(ModelTester):
    name = "transunet"
    params = {"paper": 105_322_001, "small": 25_300_625, "cpu": 1_333_049, "tiny": 79_533}


def test_an_input_off_the_patch_grid_names_the_multiple_needed() -> None:
    model = build_model("transunet", "tiny")
    message = "TransUNet needs input height and width that are multiples of 16; got 40x40 — resize or pad to e.g. 256x256"
    with pytest.raises(ValueError) as error:
        model(torch.randn(1, 3, 40, 40))
    assert str(error.value) == message


def test_transunet_paper_at_224_has_the_published_105_28_million_parameters() -> None:
    with torch.device("meta"):
        model = build_model("transunet", "paper", img_size=224)
    assert round(count_parameters(model) / 1e6, 2) == 105.28


def test_resize_pos_embed_keeps_constants_and_is_identity_on_the_same_grid() -> None:
    pos_embed = torch.randn(1, 4 * 6, 8)
    assert torch.allclose(resize_pos_embed(pos_embed, (4, 6), (4, 6)), pos_embed, atol=1e-6)
    constant = torch.full((1, 14 * 14, 8), 0.5)
    resized = resize_pos_embed(constant, (16, 16), (14, 14))
    assert resized.shape == (1, 256, 8)
    assert torch.allclose(resized, torch.full_like(resized, 0.5), atol=1e-6)


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory: pytest.TempPathFactory):
    """Random torchvision resnet50 / vit_b_16 state dicts with recognisable constants, saved to files."""
    folder = tmp_path_factory.mktemp("weights")
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    resnet["layer1.0.conv1.weight"].fill_(0.125)
    torch.save(resnet, folder / "resnet50.pt")
    del resnet
    vit = torchvision.models.vit_b_16(weights=None).state_dict()
    vit["encoder.layers.encoder_layer_3.mlp.0.bias"].fill_(0.25)
    vit["encoder.pos_embedding"][:, 1:].fill_(0.75)  # patch tokens constant; the class token stays random
    in_proj = vit["encoder.layers.encoder_layer_5.self_attention.in_proj_weight"].clone()
    torch.save(vit, folder / "vit_b_16.pt")
    return folder / "resnet50.pt", folder / "vit_b_16.pt", in_proj


def test_load_pretrained_maps_torchvision_weights_into_the_paper_transunet(torchvision_weights) -> None:
    resnet_path, vit_path, in_proj = torchvision_weights
    model = build_model("transunet", "paper")  # img_size 256: a 16x16 token grid
    report = load_pretrained(model, resnet_weights=resnet_path, vit_weights=vit_path)
    assert torch.all(model.backbone.layer1[0].conv1.weight == 0.125)
    assert torch.all(model.transformer.layers[3].ffn[0].bias == 0.25)
    assert torch.equal(model.transformer.layers[5].attn.qkv.weight, in_proj)
    assert model.transformer.pos_embed.shape == (1, 256, 768)
    assert torch.allclose(model.transformer.pos_embed, torch.full((1, 256, 768), 0.75), atol=1e-5)
    assert all(torch.all(model.backbone.layer3[i].bn3.weight == 0) for i in (6, 7, 8))
    assert "backbone.layer3.5.conv2.weight" in report.loaded and "transformer.pos_embed" in report.loaded
    assert "backbone.layer3.6.conv1.weight" in report.missing and "head.weight" in report.missing
    assert "transformer.patch_embed.weight" in report.missing
    assert {"resnet50:fc.weight", "resnet50:layer4.0.conv1.weight", "vit_b_16:class_token"} <= set(report.unused)
    assert "vit_b_16:encoder.pos_embedding" not in report.unused
    assert len(report.loaded) + len(report.missing) == len(model.state_dict())
    assert "backbone.layer3.6" in str(report)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()


def test_load_pretrained_rejects_weights_that_do_not_fit(torchvision_weights, tmp_path) -> None:
    resnet_path, vit_path, _ = torchvision_weights
    with pytest.raises(ValueError, match="'paper' configuration"):
        load_pretrained(build_model("transunet", "small"), vit_weights=vit_path)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not look like a torchvision state dict"):
        load_pretrained(build_model("transunet", "tiny"), resnet_weights=tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pretrained(build_model("transunet", "tiny"), vit_weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="nothing to load"):
        load_pretrained(build_model("transunet", "tiny"))


def test_small_transunet_takes_the_whole_torchvision_resnet(torchvision_weights) -> None:
    resnet_path, _, _ = torchvision_weights
    model = build_model("transunet", "small")
    report = load_pretrained(model, resnet_weights=resnet_path)
    assert not [key for key in report.missing if key.startswith("backbone.")]
    assert torch.all(model.backbone.layer1[0].conv1.weight == 0.125)


@pytest.mark.parametrize(("weights_class", "model_fn"), [("ResNet50_Weights", "resnet50"), ("ViT_B_16_Weights", "vit_b_16")])
def test_offline_download_gives_a_clear_error(monkeypatch, tmp_path, weights_class: str, model_fn: str) -> None:
    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(getattr(torchvision.models, weights_class), "get_state_dict", offline)
    resnet_path = None
    if model_fn == "vit_b_16":  # the ResNet comes from a file, so only the ViT download is tried
        resnet_path = tmp_path / "resnet50.pt"
        torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, resnet_path)
    with pytest.raises(RuntimeError) as error:
        load_pretrained(build_model("transunet", "tiny"), resnet_weights=resnet_path, download=True)
    message = str(error.value)
    assert f"torchvision's {model_fn} ImageNet weights" in message
    assert "seems offline" in message and "pretrained off" in message
    assert f"{'resnet' if model_fn == 'resnet50' else 'vit'}_weights='{model_fn}.pt'" in message
    assert isinstance(error.value.__cause__, urllib.error.URLError)


def test_transunet_config_checks_and_fewer_skips() -> None:
    with pytest.raises(ValueError, match="img_size must be a multiple of 16; got 250"):
        build_model("transunet", "tiny", img_size=250)
    with pytest.raises(ValueError, match="n_skip must be 0, 1, 2 or 3"):
        build_model("transunet", "tiny", n_skip=4)
    model = build_model("transunet", "tiny", n_skip=1)  # only the 1/8 skip, as in the paper's ablation
    assert model.decoder[1].conv[0][0].in_channels == model.config.decoder_channels[0]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)
