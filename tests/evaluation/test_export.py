"""Exporting a run's best model to TorchScript and ONNX: parity with PyTorch, metadata, the model card, the command,
the errors, predict.py on an exported model, and which ONNX exporter wrote the file (dynamo by default, the legacy
one on request or as a named fallback)."""
import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from helpers.evaluation import inference, predict
from helpers.evaluation.export import DYNAMO, LEGACY, export_onnx, export_run, main
from helpers.evaluation.exported import ExportError, load_exported, read_metadata
from helpers.evaluation.model_card import data_licence
from helpers.evaluation.stats import bootstrap_ci
from helpers.models import build_model, transunet
from helpers.training import runs
from helpers.training.checkpoints import save_weights_atomic
from tests.builders import make_run


def _importable(*names):
    try:
        return [importlib.import_module(name) for name in names] and True
    except ImportError:
        return False


HAS_ONNX = _importable("onnx", "onnxruntime")  # the optional extra (requirements-export.txt)
FORMATS = ("onnx", "torchscript") if HAS_ONNX else ("torchscript",)
DATASETS = {"unet": "isic2018", "unetpp": "shifted", "transunet": "synthetic-60-s0"}


def _make(root, model, prepared_dir, overrides=None):
    """A run folder of a tiny model (``tests.builders.make_run``), with model overrides and a dataset name."""
    folder = make_run(root, f"{model}-run", model, 1.0, prepared_dir)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_overrides=overrides or {}, dataset=DATASETS[model])
    (folder / "config.json").write_text(json.dumps(config))
    if overrides:
        torch.manual_seed(1)
        save_weights_atomic(build_model(model, "tiny", **overrides), folder / "checkpoints" / "best.pt", metric=0.5, epoch=1)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory, shifted):
    """Each model exported once (both formats where onnx is installed, with parity): {model: (run folder, result)}."""
    root = tmp_path_factory.mktemp("export")
    found = {}
    for model, overrides, depth in (("unet", None, None), ("unetpp", {"deep_supervision": True}, 2),
                                    ("transunet", None, None)):
        folder = _make(root / "results", model, shifted.root, overrides)
        if model == "unet":  # notebook 04 evaluated it
            pd.DataFrame({"isic_id": list("abcdef"), "dice": [.9, .8, .7, .95, .6, .85], "iou": [.8, .7, .6, .9, .5, .75]}
                         ).to_csv(folder / inference.METRICS_FILE, index=False)
            (folder / inference.EVAL_FILE).write_text('{"threshold": 0.45, "tta": true, "postprocess": false}')
        found[model] = folder, export_run(folder, root / "out" / model, FORMATS, depth=depth, check=True)
    return found


def _format(fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("model", ["unet", "unetpp", "transunet"])
def test_the_export_gives_pytorchs_probabilities_at_two_batch_sizes_and_two_sizes(exports, model, fmt):
    _format(fmt)
    figures = exports[model][1]["parity"][fmt]
    print(model, fmt, figures)
    assert max(figures.values()) < 1e-4
    assert {"random 1x3x32x32", "random 3x3x32x32", "real 3x3x32x32"} <= set(figures)  # two batch sizes, real images
    # a second size where the file allows it: TransUNet's traced grid is fixed, its dynamo ONNX graph is not
    assert ("random 2x3x64x64" in figures) == (model != "transunet" or fmt == "onnx")
    if fmt == "onnx":  # the default exporter wrote it, no fallback
        assert (exports[model][1]["exporter"], exports[model][1]["fallback"]) == (DYNAMO, None)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_metadata_round_trip(exports, fmt):
    _format(fmt)
    folder, result = exports["unetpp"]
    meta = read_metadata(result["files"][fmt])
    assert meta["mean"] == list(IMAGENET_MEAN) and meta["std"] == list(IMAGENET_STD) and meta["image_size"] == 32
    assert (meta["run_id"], meta["model"], meta["model_config"], meta["prune_depth"]) == ("unetpp-run", "unetpp", "tiny", 2)
    assert meta["config"]["deep_supervision"] and meta["dynamic_size"] and meta["size_multiple"] == 16
    assert (meta["threshold"], meta["tta"], meta["postprocess"], meta["format"]) == (0.5, False, False, fmt)
    assert meta["opset"] == (18 if fmt == "onnx" else None)
    if fmt == "onnx":  # where other tools look: ONNX metadata_props
        import onnx

        props = {p.key: p.value for p in onnx.load(str(result["files"]["onnx"])).metadata_props}
        assert json.loads(props["image_size"]) == 32 and json.loads(props["run_id"]) == "unetpp-run"
    else:  # TorchScript's extra file kit.json
        extra = {"kit.json": ""}
        torch.jit.load(str(result["files"]["torchscript"]), _extra_files=extra)
        assert json.loads(extra["kit.json"])["threshold"] == 0.5
    assert read_metadata(exports["unet"][1]["files"][fmt])["threshold"] == 0.45  # the run's eval.json
    transunet_meta = read_metadata(exports["transunet"][1]["files"][fmt])
    assert transunet_meta["dynamic_size"] == (fmt == "onnx") and transunet_meta["size_multiple"] == 16
    assert (meta["exporter"], meta.get("exporter_fallback")) == ((DYNAMO, None) if fmt == "onnx" else ("torch.jit.trace", None))


def test_the_graph_maps_normalised_images_to_the_probabilities_of_the_pruned_head(exports):
    folder, result = exports["unetpp"]
    exported = load_exported(result["files"]["torchscript"])
    x = torch.randn(2, 3, 48, 48)  # another size and batch than traced
    pruned = inference.pruned_copies(runs.load_run_model(folder))
    with torch.no_grad():
        probs = exported.probs(x)
        assert probs.shape == (2, 1, 48, 48) and probs.dtype == torch.float32
        assert torch.allclose(probs, torch.sigmoid(pruned["L2"](x)), atol=1e-6)
        assert not torch.allclose(probs, torch.sigmoid(pruned["L4"](x)), atol=1e-3)  # the depth mattered


def test_the_model_card_says_data_licence_metrics_and_intended_use(exports, shifted):
    unet, transunet, unetpp = (exports[m][1]["card"].read_text() for m in ("unet", "transunet", "unetpp"))
    assert exports["unet"][1]["card"].name == "MODEL_CARD.md"
    assert "CC BY-NC 4.0" in unet and "non-commercial use only" in unet
    assert "synthetic" in transunet and "no patient data" in transunet and "unknown source" in unetpp
    for card in (unet, transunet, unetpp):
        assert "Not for diagnosis, not a medical device" in card and "Research and teaching only" in card
    low, high = bootstrap_ci([.9, .8, .7, .95, .6, .85])
    assert f"| Dice | 0.8000 | {low:.4f} – {high:.4f} |" in unet and "| IoU |" in unet and "TTA True" in unet
    assert "Not evaluated yet" in transunet and "Not evaluated yet" not in unet
    params = exports["unet"][1]["metadata"]["params"]
    n_train = len(shifted.indices("train"))  # counted in the prepared data (make_run records no train_images)
    assert f"parameters: {params:,}" in unet and f"training fraction 1.0, 32 px; training images: {n_train}" in unet
    assert "`seed` protocol" in unet and "num_epochs 2, batch_size 4, lr 0.0001" in unet
    assert "32 × 32 px only" in transunet and "multiples of 16" in unet and "pruned at depth L2" in unetpp
    if HAS_ONNX:  # TransUNet's ONNX file (dynamo exporter) takes other sizes, its TorchScript file does not
        assert "`model.onnx`: any height and width that are multiples of 16" in transunet
        assert "`model.pt`: 32 × 32 px only" in transunet and f"opset 18, by {DYNAMO}" in unet
    assert data_licence("isic2018_task1_256") == data_licence("isic2018")


def test_the_command_line_writes_the_files_and_prints_parity(exports, tmp_path, capsys):
    folder = exports["transunet"][0]
    assert main([str(folder), str(tmp_path / "out"), "--format", "torchscript", "--check"]) == 0
    out = capsys.readouterr().out
    assert "parity torchscript random 3x3x32x32" in out and "model card" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["MODEL_CARD.md", "export_manifest.json",
                                                                    "model.pt"]
    elsewhere = make_run(tmp_path / "results", "no-data", "unet", 1.0, tmp_path / "not-prepared")  # data not here
    assert export_run(elsewhere, tmp_path / "no-data", ["torchscript"], check=True)["parity"]["torchscript"].keys() == \
        {"random 1x3x32x32", "random 3x3x32x32", "random 2x3x64x64"}
    assert "unknown (not recorded" in (tmp_path / "no-data" / "MODEL_CARD.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_clear_errors(exports, tmp_path, capsys, monkeypatch):
    unet, unetpp = exports["unet"][0], exports["unetpp"][0]

    def fails(*argv):
        assert main([*map(str, argv)]) == 1
        return capsys.readouterr().err

    assert "unknown export format(s) ['tflite']" in fails(unet, tmp_path / "a", "--format", "tflite")
    message = fails(unet, tmp_path / "b", "--depth", "2", "--format", "torchscript")
    assert "unet-run/config.json" in message and "Leave --depth out" in message
    assert "depths 1 to 4" in fails(unetpp, tmp_path / "c", "--depth", "9", "--format", "torchscript")
    assert "is not a run folder" in fails(tmp_path, tmp_path / "d", "--format", "torchscript")
    bare = make_run(tmp_path / "results", "bare", "unet", 1.0, tmp_path)
    (bare / "checkpoints" / "best.pt").unlink()
    assert "No best checkpoint of run bare" in fails(bare, tmp_path / "e", "--format", "torchscript")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # as if onnx were not installed
    assert "pip install -r requirements-export.txt" in fails(unet, tmp_path / "f", "--format", "onnx")
    with pytest.raises(ExportError, match="best.pt is not an export"):
        read_metadata(unet / "checkpoints" / "best.pt")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_predict_on_an_export_gives_the_run_folders_masks(exports, tmp_path, fmt):
    _format(fmt)
    folder, result = exports["unet"]
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + 8 * k, 56, 3), dtype=np.uint8)).save(tmp_path / f"x{k}.png")
    inputs = [tmp_path / f"x{k}.png" for k in range(3)]
    by_run = predict.predict(folder, inputs, tmp_path / "run", device="cpu", progress=False)
    by_file = predict.predict(result["files"][fmt], inputs, tmp_path / "file", progress=False)
    assert list(by_run["id"]) == list(by_file["id"]) == ["x0", "x1", "x2"]
    for name in by_run["id"]:
        masks = [np.asarray(Image.open(tmp_path / d / f"{name}_segmentation.png")) for d in ("run", "file")]
        assert np.array_equal(*masks)
    assert np.allclose(by_run["mean_confidence"], by_file["mean_confidence"], atol=1e-5)


def test_legacy_onnx_on_request_keeps_transunet_at_its_size(exports, tmp_path, capsys):
    _format("onnx")
    folder = exports["transunet"][0]
    assert main([str(folder), str(tmp_path / "cli"), "--format", "onnx", "--legacy-onnx"]) == 0
    out = capsys.readouterr().out
    assert f", {LEGACY})" in out.splitlines()[0] and "⚠" not in out  # asked for: no fallback line
    meta = read_metadata(tmp_path / "cli" / "model.onnx")
    assert (meta["exporter"], meta["exporter_fallback"], meta["dynamic_size"]) == (LEGACY, None, False)
    result = export_run(folder, tmp_path / "api", ["onnx"], check=True, legacy=True)
    assert (result["exporter"], result["fallback"]) == (LEGACY, None)
    assert max(result["parity"]["onnx"].values()) < 1e-4 and "random 2x3x64x64" not in result["parity"]["onnx"]


def test_the_legacy_exporter_stands_in_when_the_dynamo_one_fails_and_says_so(exports, tmp_path, capsys, monkeypatch):
    _format("onnx")
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator aten::fancy\n(a long trace)")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    folder = exports["unet"][0]
    assert main([str(folder), str(tmp_path / "cli"), "--format", "onnx", "--check"]) == 0
    out = capsys.readouterr().out
    assert "⚠ ONNX written by the legacy exporter" in out and "RuntimeError: unsupported operator aten::fancy" in out
    assert "a long trace" not in out and "parity onnx random 2x3x64x64" in out  # one line; still checked
    meta = read_metadata(tmp_path / "cli" / "model.onnx")
    assert meta["exporter"] == LEGACY and "the dynamo exporter failed (RuntimeError" in meta["exporter_fallback"]
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if onnxscript were not installed
    result = export_run(folder, tmp_path / "api", ["onnx"], check=True)
    assert result["exporter"] == LEGACY and "onnxscript is not installed" in result["fallback"]
    assert max(result["parity"]["onnx"].values()) < 1e-4 and "random 2x3x64x64" in result["parity"]["onnx"]
    assert f"by {LEGACY}" in result["card"].read_text()


class BranchesOnItsSize(torch.nn.Module):
    """What TransUNet did before it resized its position embeddings on every call: a branch on the input's size."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, images):
        out = self.conv(images)
        return out + 1 if int(images.shape[-1]) == 32 else out


def test_a_graph_the_dynamo_exporter_pinned_to_one_size_is_refused_and_the_legacy_one_named(tmp_path):
    pytest.importorskip("onnxscript")
    _format("onnx")
    metadata = {"dynamic_size": True, "size_multiple": 16, "image_size": 32}
    written = export_onnx(BranchesOnItsSize().eval(), tmp_path / "m.onnx", metadata, torch.zeros(2, 3, 32, 32))
    assert written["exporter"] == LEGACY and "branches on its input size, which the graph pinned" in written["exporter_fallback"]
    assert read_metadata(tmp_path / "m.onnx")["exporter_fallback"] == written["exporter_fallback"]


def test_transunet_resizes_its_position_embeddings_on_every_call_and_exactly_not_at_its_own_grid(monkeypatch):
    """What keeps its ONNX graph's size symbolic (no branch on the grid) changes no eager output or gradient."""
    torch.manual_seed(0)
    model, x = build_model("transunet", "tiny").train(), torch.randn(2, 3, 64, 64)  # tiny stores a 64-px grid

    def run():
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        return out.detach(), model.transformer.pos_embed.grad.clone()

    resized = run()
    monkeypatch.setattr(transunet, "resize_pos_embed", lambda pos_embed, new, old: pos_embed)  # the old branch
    assert all(torch.equal(a, b) for a, b in zip(resized, run()))


def test_an_edited_image_size_in_config_json_is_refused_not_exported(shifted, tmp_path, capsys):
    folder = make_run(tmp_path / "results", "unet-tiny_f100_32px_seed_s42_shifted_0000abcd", "unet", 1.0, shifted.root)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "image_size": 64}))
    assert main([str(folder), str(tmp_path / "out"), "--format", "torchscript"]) == 1
    err = capsys.readouterr().err
    assert "says image_size 64 but the run was trained at 32 px" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    (folder / "config.json").write_text(json.dumps(config))  # mended: exported at its own size
    assert read_metadata(export_run(folder, tmp_path / "out", ["torchscript"])["files"]["torchscript"])["image_size"] == 32
