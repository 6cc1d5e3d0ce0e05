"""Tests of the segmentation models, their registry, pretrained loading and the size summary."""

from __future__ import annotations

import urllib.error

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from helpers.models import MODEL_CONFIGS, build_model, get_config, list_configs, load_pretrained
from helpers.models.summary import count_flops, count_parameters, model_table
from helpers.models.transunet import resize_pos_embed

MODELS = ["unet", "unetpp", "transunet"]


def _check_gradients(model: nn.Module) -> None:
    """Every trainable parameter received a finite gradient."""
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_shapes_and_gradients(name: str, config: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, config)
    images = torch.randn(2, 3, 32, 32)  # (B, 3, H, W)
    logits = model(images)
    assert logits.shape == (2, 1, 32, 32)
    logits.float().mean().backward()
    _check_gradients(model)


@pytest.mark.parametrize("name", MODELS)
def test_tiny_models_accept_other_sizes_and_non_square_inputs(name: str) -> None:
    model = build_model(name, "tiny").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 1, 48, 80)


@pytest.mark.parametrize(
    ("name", "expected_millions", "exact"),
    [("unet", 31.0, 31_037_633), ("unetpp", 9.0, 9_159_681), ("transunet", 105.0, 105_322_001)],
)
def test_paper_parameter_counts(name: str, expected_millions: float, exact: int) -> None:
    with torch.device("meta"):  # counted without allocating 145 M parameters
        count = count_parameters(build_model(name, "paper"))
    assert abs(count / 1e6 - expected_millions) <= 0.02 * expected_millions
    assert count == exact


def test_transunet_paper_at_224_has_the_published_105_28_million_parameters() -> None:
    with torch.device("meta"):
        model = build_model("transunet", "paper", img_size=224)
    assert round(count_parameters(model) / 1e6, 2) == 105.28


def test_unetpp_deep_supervision_returns_four_logits_in_training_and_one_in_eval() -> None:
    model = build_model("unetpp", "tiny", deep_supervision=True)
    images = torch.randn(2, 3, 32, 32)
    outputs = model(images)
    assert isinstance(outputs, list) and len(outputs) == 4
    assert all(logits.shape == (2, 1, 32, 32) for logits in outputs)
    sum(logits.mean() for logits in outputs).backward()
    _check_gradients(model)
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


def test_input_size_errors_say_what_to_do() -> None:
    model = build_model("transunet", "tiny")
    message = "TransUNet needs input height and width that are multiples of 16; got 40x40 — resize or pad to e.g. 256x256"
    with pytest.raises(ValueError) as error:
        model(torch.randn(1, 3, 40, 40))
    assert str(error.value) == message
    with pytest.raises(ValueError, match="UNet needs input height and width that are multiples of 16; got 32x24"):
        build_model("unet", "tiny")(torch.randn(1, 3, 32, 24))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        build_model("unetpp", "tiny")(torch.randn(3, 32, 32))


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


@pytest.mark.parametrize("name", MODELS)
def test_tiny_models_export_and_match_eager(name: str) -> None:
    torch.manual_seed(0)
    overrides = {"deep_supervision": True, "prune_depth": 3} if name == "unetpp" else {}
    model = build_model(name, "tiny", **overrides).eval()
    images = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(images), model(images), atol=1e-5)


def test_count_flops_counts_two_flops_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 2, kernel_size=1, bias=False).train()
    # 2 images x 2 output channels x 16 positions x 3 input channels = 192 MACs = 384 FLOPs
    assert count_flops(conv, (4, 4), batch=2) == 384
    assert conv.training


def test_model_table_has_the_columns_and_known_values() -> None:
    table = model_table([(name, config) for name in MODELS for config in ("tiny", "paper")], image_size=256)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["model", "config", "params_M", "GFLOPs"]
    assert (table["GFLOPs"] > 0).all()
    paper = table.set_index(["model", "config"])
    assert paper.loc[("unet", "paper"), "params_M"] == pytest.approx(31.04, abs=0.01)
    assert paper.loc[("unet", "paper"), "GFLOPs"] == pytest.approx(96.33, abs=0.01)
    tiny = build_model("unetpp", "tiny")
    assert paper.loc[("unetpp", "tiny"), "params_M"] == count_parameters(tiny) / 1e6
    assert paper.loc[("unetpp", "tiny"), "GFLOPs"] == pytest.approx(count_flops(tiny, 256) / 1e9)


def test_registry_lists_paper_small_cpu_and_tiny_for_every_model_and_r34_for_unets() -> None:
    assert list_configs() == {name: ["paper", "small", "cpu", "tiny"] + (["r34"] if name != "transunet" else [])
                              for name in MODELS}  # r34: the ResNet-34 encoder (tests/models/test_encoders.py)
    assert get_config("unet", "cpu").base == 16 and get_config("unetpp", "cpu").base == 8
    assert get_config("transunet", "cpu").img_size == 128
    assert set(MODEL_CONFIGS) == set(MODELS)
    assert get_config("unet", "small").base == 32
    assert get_config("transunet", "small", dropout=0.0).dropout == 0.0


def test_unknown_names_raise_value_errors_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*'transunet', 'unet', 'unetpp'"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"unknown configuration 'huge' for unet.*'paper', 'r34', 'small', 'tiny'"):
        build_model("unet", "huge")
    with pytest.raises(ValueError, match=r"unknown UNetConfig fields \['width'\].*'base'"):
        build_model("unet", "tiny", width=8)
    with pytest.raises(ValueError, match="needs a TransUNetConfig"):
        build_model("transunet", get_config("unet", "tiny"))


def test_transunet_config_checks_and_fewer_skips() -> None:
    with pytest.raises(ValueError, match="img_size must be a multiple of 16; got 250"):
        build_model("transunet", "tiny", img_size=250)
    with pytest.raises(ValueError, match="n_skip must be 0, 1, 2 or 3"):
        build_model("transunet", "tiny", n_skip=4)
    model = build_model("transunet", "tiny", n_skip=1)  # only the 1/8 skip, as in the paper's ablation
    assert model.decoder[1].conv[0][0].in_channels == model.config.decoder_channels[0]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1, 32, 32)
