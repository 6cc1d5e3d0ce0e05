"""The ResNet-34 encoder of UNet and UNet++ (`r34` configs) and its opt-in ImageNet weights.

Nothing here downloads: weight files are torchvision resnet34 state dicts made with `weights=None`
and a fixed seed, and `torch.hub.download_url_to_file` raises wherever a test reads the hub cache.
"""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch
import torchvision

from helpers.evaluation.inference import pruned_copies
from helpers.models import build_model, get_config, load_encoder_weights
from helpers.models.encoder_weights import hub_file
from helpers.models.summary import count_parameters
from helpers.profiles import resolve_config
from helpers.training import engine, runs, state
from helpers.training.checkpoints import load_checkpoint
from helpers.training.losses import DiceBCELoss
from tests.models.tester import ModelTester

RESNET34_PARAMS = 21_284_672  # torchvision's resnet34 without its fc layer
EXPECTED_PARAMS = {"unet": 24_471_009, "unetpp": 26_286_721}


def _resnet34_state(seed: int = 7) -> dict[str, torch.Tensor]:
    """A torchvision resnet34 state dict, initialised with a fixed seed (stands in for the ImageNet file)."""
    torch.manual_seed(seed)
    return torchvision.models.resnet34(weights=None).state_dict()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet34.pt"
    torch.save(_resnet34_state(), path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch, weights_file):
    """A torch hub cache ($TORCH_HOME) holding the weights under torchvision's file name; downloads fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub_file().parent.mkdir(parents=True)
    hub_file().write_bytes(weights_file.read_bytes())

    def no_download(url, *_args, **_kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub_file()


def _assert_encoder_equals(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> int:
    """Every torchvision tensor but fc.* is in model.encoder unchanged; returns how many were compared."""
    own = model.state_dict()
    keys = [key for key in weights if not key.startswith("fc.")]
    for key in keys:
        assert torch.equal(own[f"encoder.{key}"], weights[key]), key
    return len(keys)


class TestUNetR34(ModelTester):
    name = "unet"
    configs = ("r34",)
    size = 64  # five levels: multiples of 32
    other_sizes = ((96, 96), (64, 96))
    params = {"r34": 24_471_009}

    @pytest.mark.slow  # tracing a 24-26 M-parameter graph takes 5-15 s on 2 cores
    def test_export_matches_eager(self) -> None:
        super().test_export_matches_eager()

    def test_the_deepest_encoder_level_takes_part(self) -> None:
        model = self.build()
        model(self.images()).mean().backward()
        assert model.encoder.layer4[0].conv1.weight.grad.abs().sum() > 0  # the 1/32 level


class TestUNetPlusPlusR34(TestUNetR34):
    name = "unetpp"
    params = {"r34": 26_286_721}


def test_r34_levels_and_parameter_counts() -> None:
    with torch.device("meta"):
        models = {name: build_model(name, "r34") for name in EXPECTED_PARAMS}
    for name, model in models.items():
        encoder = model.encoder
        resnet = count_parameters(encoder) - count_parameters(encoder.full)
        print(f"{name} r34: {count_parameters(model) / 1e6:.2f} M parameters, ResNet-34 encoder {resnet / 1e6:.2f} M")
        assert resnet == RESNET34_PARAMS
        assert count_parameters(model) == EXPECTED_PARAMS[name]
        assert model.config.depth == 5 and encoder.channels == [model.config.base, 64, 64, 128, 256, 512]
    features = build_model("unet", "r34").encoder(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 32, 64, 64), (1, 64, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8),
                                                  (1, 256, 4, 4), (1, 512, 2, 2)]


def test_r34_unetpp_keeps_its_nodes_deep_supervision_and_pruning() -> None:
    torch.manual_seed(0)
    model = build_model("unetpp", "r34", deep_supervision=True)
    nodes = sorted(name for name, _ in model.named_children() if name.startswith("x_"))
    assert nodes == sorted(f"x_{i}_{j}" for i in range(5) for j in range(1, 6 - i))  # x_{i}_0 is the encoder
    images = torch.randn(2, 3, 64, 64)
    outputs = model(images)
    assert isinstance(outputs, list) and [tuple(o.shape) for o in outputs] == [(2, 1, 64, 64)] * 5
    sum(o.mean() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    called: list[str] = []
    for name, module in [*model.named_children(), *model.encoder.named_children()]:
        if name.startswith(("x_", "layer")):
            module.register_forward_hook(lambda _m, _i, _o, name=name: called.append(name))
    copies = pruned_copies(model)  # deep copies carry the hooks
    assert list(copies) == ["L1", "L2", "L3", "L4", "L5"]
    results = {}
    for depth, (label, pruned) in enumerate(copies.items(), start=1):
        called.clear()
        with torch.no_grad():
            results[label] = pruned(images)
        assert results[label].shape == (2, 1, 64, 64)
        assert sorted(n for n in called if n.startswith("layer")) == [f"layer{k}" for k in range(1, depth)]
        assert len([n for n in called if n.startswith("x_")]) == depth * (depth + 1) // 2  # i + j <= L, j >= 1
        assert called[-1] == f"x_0_{depth}"
    with torch.no_grad():
        assert torch.equal(model(images), results["L5"])
    assert not torch.allclose(results["L2"], results["L5"])


def test_loading_a_weights_file_fills_the_encoder_and_nothing_else(weights_file) -> None:
    weights = _resnet34_state()
    for name in ("unet", "unetpp"):
        torch.manual_seed(1)
        model = build_model(name, "r34")
        before = {key: value.clone() for key, value in model.state_dict().items()}
        report = load_encoder_weights(model, weights_file)
        assert _assert_encoder_equals(model, weights) == len(report.loaded) == len(weights) - 2
        assert report.unused == ["resnet34:fc.weight", "resnet34:fc.bias"]
        assert len(report.loaded) + len(report.missing) == len(before)
        for key in report.missing:  # level 0, decoder and heads keep their initialisation
            assert not key.startswith("encoder.") or key.startswith("encoder.full.")
            assert torch.equal(model.state_dict()[key], before[key]), key
        print(report)
        assert str(report).startswith(f"loaded {len(weights) - 2} tensors;") and "encoder.full" in str(report)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_files_that_do_not_fit_give_errors_naming_the_file(weights_file, tmp_path) -> None:
    model = build_model("unet", "r34")
    weights = _resnet34_state()
    weights["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(weights, tmp_path / "wrong_shape.pt")
    with pytest.raises(ValueError, match=r"wrong_shape\.pt: tensor 'layer2\.0\.conv1\.weight' has shape \(128, 32, 3, 3\)"):
        load_encoder_weights(model, tmp_path / "wrong_shape.pt")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match=r"resnet18\.pt lacks \d+ tensors of a resnet34 .*'layer1\.2\."):
        load_encoder_weights(model, tmp_path / "resnet18.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt does not look like a torchvision resnet34 state dict.*torch\.save"):
        load_encoder_weights(model, tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"broken\.pt could not be read as a state dict"):
        load_encoder_weights(model, tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt'?: no such file"):
        load_encoder_weights(model, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="nothing to load"):
        load_encoder_weights(model)
    with pytest.raises(ValueError, match="has no pretrainable encoder.*'r34'"):
        load_encoder_weights(build_model("unet", "tiny"), weights_file)
    one_channel = build_model("unet", get_config("unet", "r34", in_channels=1))
    with pytest.raises(ValueError, match="in_channels=3"):
        load_encoder_weights(one_channel, weights_file)


def test_download_reads_the_hub_cache_and_says_what_to_do_offline(hub, monkeypatch) -> None:
    model = build_model("unetpp", "r34")
    report = load_encoder_weights(model, download=True)  # the file in $TORCH_HOME: no download
    assert _assert_encoder_equals(model, _resnet34_state()) == len(report.loaded)
    hub.unlink()

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as error:
        load_encoder_weights(model, download=True)
    message = str(error.value)
    assert "seems offline" in message and "weights='resnet34.pt'" in message and str(hub) in message
    assert "TORCH_HOME" in message and torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url in message


class _DisconnectAt(DiceBCELoss):
    """Dice+BCE that raises KeyboardInterrupt (a disconnect) in training step ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, logits, masks):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.step:
                raise KeyboardInterrupt("simulated disconnect")
        return super().forward(logits, masks)


@pytest.mark.slow
def test_pretrained_loads_the_encoder_when_a_run_starts_and_not_on_resume(tiny, results, hub, monkeypatch) -> None:
    config = resolve_config("smoke", image_size=32, batch_size=4, num_epochs=2, split_seed=0, amp="off")
    spec = dataclasses.replace(runs.make_spec("unet", 1.0, 0, tiny, config), model_config="r34", model_overrides={},
                               pretrained=True)
    loaded = []  # how many encoder tensors each ImageNet initialisation loaded
    original = state.init_from_imagenet

    def init(model):
        original(model)
        loaded.append(_assert_encoder_equals(model, _resnet34_state()))

    monkeypatch.setattr(engine, "init_from_imagenet", init)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(state, "DiceBCELoss", lambda: _DisconnectAt(6))  # 20 images, batch 4: step 1 of epoch 2
        engine.fit(spec, tiny, keep_last=True, progress=False)  # no checkpoint yet: a fresh start, from ImageNet
    assert len(loaded) == 1 and loaded[0] > 0
    saved = load_checkpoint(runs.run_dir(spec) / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1
    result = engine.fit(spec, tiny, keep_last=True, progress=False)  # resumes last.pt: its trained weights
    assert result["status"] == "resumed" and len(loaded) == 1  # no ImageNet weights over them
    assert not torch.equal(saved["model"]["encoder.conv1.weight"], _resnet34_state()["conv1.weight"])
    with pytest.raises(ValueError, match="has no ImageNet weights.*'r34'"):
        state.init_from_imagenet(build_model("unet", "tiny"))
