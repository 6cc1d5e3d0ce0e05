"""Models in the box (helpers.tools.ship): fp16 weights that load like any best.pt into a committed study's run
folder, a model card, refusal of another run's weights, and the Dice through predict on the test images."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.evaluation import inference, predict, scoring
from helpers.tools import ship
from helpers.training import runs
from tests.builders import make_run


def _study_copy(run_dir, root):
    """The run's folder as a committed study holds it: its small files, no checkpoint."""
    study_run = root / "study" / "runs" / run_dir.name
    study_run.mkdir(parents=True)
    for name in ("config.json", "done.json", "history.csv"):
        shutil.copy2(run_dir / name, study_run / name)
    config = json.loads((study_run / "config.json").read_text())
    (study_run / "config.json").write_text(json.dumps({**config, "checkpoint_dir": "checkpoints"}))
    return study_run


def test_half_weights_halves_floats_and_keeps_integer_buffers():
    weights = {"w": torch.randn(3, 3), "n": torch.tensor(7, dtype=torch.long)}
    halved = ship.half_weights(weights)
    assert halved["w"].dtype == torch.float16 and halved["n"].dtype == torch.long and int(halved["n"]) == 7
    assert torch.allclose(halved["w"].float(), weights["w"], atol=1e-3)


def test_shipped_weights_load_like_any_best_pt_and_predict_the_same(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unetpp-run", "unetpp", 1.0, shifted.root)
    study_run = _study_copy(run, tmp_path)
    target = ship.ship_model(run, study_run)
    assert target == study_run / "checkpoints" / "best.pt"
    full = (run / "checkpoints" / "best.pt").stat().st_size
    assert target.stat().st_size < 0.7 * full  # fp16: about half the bytes
    assert torch.load(target, weights_only=True)["weights_dtype"] == "float16"
    original, shipped = runs.load_run_model(run), runs.load_run_model(study_run)
    assert all(p.dtype == torch.float32 for p in shipped.parameters())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        gap = (torch.sigmoid(original(images)) - torch.sigmoid(shipped(images))).abs().max()
    assert 0 < gap < 1e-2  # fp16 rounding, nothing more
    card = (study_run / "MODEL_CARD.md").read_text()
    assert "fp16 state dict" in card and "Not for diagnosis" in card and "unetpp" in card


def test_weights_of_another_run_are_refused_and_nothing_is_written(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    study_run = _study_copy(run, tmp_path)
    config = json.loads((study_run / "config.json").read_text())
    (study_run / "config.json").write_text(json.dumps({**config, "lr": 1e-3}))
    with pytest.raises(ValueError, match=r"lr: 0.0001 here, 0.001 in the study"):
        ship.ship_model(run, study_run)
    assert not (study_run / "checkpoints").exists()
    assert ship.main([str(run)]) == 2  # no study run and no --check-predict: a bad call


def test_dice_through_predict_matches_the_evaluation_at_the_original_size(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    found = ship.predict_dice(run)
    evaluated = inference.evaluate(runs.load_run_model(run), shifted, "test", progress=False, with_hd95=False)
    expected = evaluated.table.set_index("isic_id")["dice_orig"]
    assert found["n"] == len(shifted.indices("test")) == len(expected)
    assert found["dice_ci_low"] <= found["dice_mean"] <= found["dice_ci_high"]
    np.testing.assert_allclose(found["scores"][expected.index].to_numpy(), expected.to_numpy(), atol=0.02)


def test_a_study_model_without_predictions_gets_them_from_its_checkpoint(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    scoring.evaluate_run(run, prepared=shifted, progress=False)
    ids, preds = inference.load_predictions(run)
    (run / inference.PREDS_FILE).unlink()  # a committed study keeps scores, not predictions
    scores_before = (run / inference.METRICS_FILE).read_bytes()
    made_ids, made = scoring.predictions(run)
    assert list(made_ids) == list(ids) and np.array_equal(made, preds)
    assert (run / inference.PREDS_FILE).is_file() and (run / inference.METRICS_FILE).read_bytes() == scores_before
    shutil.rmtree(run / "checkpoints")
    (run / inference.PREDS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="test_preds.npz is missing"):
        scoring.predictions(run)


def test_try_inputs_falls_back_to_the_offline_sample_without_the_data(shifted, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    assert runs.has_data(run)
    here = predict.try_inputs(run, tmp_path / "yours", count=2)
    assert [p.parent for p in here] == [tmp_path / "yours"] * 2
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "prepared_dir": str(tmp_path / "gone")}))
    assert not runs.has_data(run)
    sample = predict.try_inputs(run, tmp_path / "yours2", count=3)
    assert len(sample) == 3 and all(p.suffix == ".jpg" and p.is_file() for p in sample)
    assert not (tmp_path / "yours2").exists()  # your folder stays yours: the sample goes beside it
    assert "not on this machine" in capsys.readouterr().out
    done = predict.predict(run, sample, tmp_path / "out", progress=False)
    assert len(done) == 3


MODELS_STUDY = Path(__file__).resolve().parents[2] / "results" / "isic2018-task1-512_seed_cpu-kit_cpu-2-cores"


@pytest.mark.parametrize("model", ["unet", "unetpp", "transunet"])
def test_the_models_in_the_box_load_predict_and_carry_their_card(model, tmp_path):
    found = sorted((MODELS_STUDY / "runs").glob(f"{model}-cpu*_f100_*"))
    assert len(found) == 1, f"one committed {model} run at 100 % with its model, found {found}"
    run = found[0]
    weights = run / "checkpoints" / "best.pt"
    assert weights.stat().st_size < 5e6  # fp16: a few MB
    state = torch.load(weights, weights_only=True)
    assert state["weights_dtype"] == "float16"
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float16}
    net = runs.load_run_model(run)  # the study's config.json rebuilds the model the weights fit
    with torch.no_grad():
        probs = torch.sigmoid(net(torch.zeros(1, 3, 128, 128)))
    assert probs.shape == (1, 1, 128, 128) and torch.isfinite(probs).all()
    card = (run / "MODEL_CARD.md").read_text()
    assert "CC BY-NC 4.0" in card and "Not for diagnosis" in card and "| Dice |" in card
    assert not predict.run_problem(run)
    done = predict.predict(run, predict.try_inputs(run, tmp_path / "yours", count=2), tmp_path / "out", progress=False)
    assert len(done) == 2 and done["lesion_fraction"].between(0, 1).all()


def test_ship_takes_the_newest_best_checkpoint_as_the_kit_loads_it(shifted, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    run = make_run(tmp_path / "results", "unet-run", "unet", 1.0, shifted.root)
    stale = tmp_path / "drive" / "checkpoints"  # an older copy where the config points, e.g. on Drive
    stale.mkdir(parents=True)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    torch.save({**state, "model": {k: torch.zeros_like(v) for k, v in state["model"].items()}}, stale / "best.pt")
    os.utime(stale / "best.pt", (1_000_000, 1_000_000))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "checkpoint_dir": str(stale)}))
    assert runs.best_checkpoint(run) == run / "checkpoints" / "best.pt"
    target = ship.ship_model(run, _study_copy(run, tmp_path))
    shipped = torch.load(target, weights_only=True)["model"]
    assert any(v.abs().sum() > 0 for v in shipped.values() if v.is_floating_point())  # not the stale zeros
    stale_only = tmp_path / "stale-run"
    shutil.copytree(run, stale_only, ignore=shutil.ignore_patterns("checkpoints"))
    assert runs.best_checkpoint(stale_only) == stale / "best.pt"
