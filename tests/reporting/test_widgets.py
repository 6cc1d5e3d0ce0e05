"""The prediction viewer builds and updates headlessly, and shows the same scores as the evaluation."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers.evaluation import scoring
from helpers.reporting.viewer import PredictionViewer
from helpers.training import runs
from tests.builders import Brightness, make_run, shifted_prepared

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    prepared = shifted_prepared(root / "data")
    make_run(root, "bright_f100", "unet", 1.0, prepared.root)
    make_run(root, "unet_f010_unfinished", "unet", 0.1, prepared.root, finished=False)
    load = lambda run_dir: Brightness(scale=1.0)  # soft probs: 0.83 on the bright box, 0.17 elsewhere
    scoring.evaluate_runs(root, load_model=load, progress=False)
    return PredictionViewer(root, load_model=load, device="cpu"), root


def _dice_shown(viewer) -> float:
    html = viewer.scores.value
    return float(html.split("Dice<br><b>")[1].split("</b>")[0])


def test_lists_finished_runs_and_test_images_worst_first(viewer):
    view, root = viewer
    assert list(view.run.options) == ["bright_f100"]          # the unfinished run is not offered
    table = pd.read_csv(root / "runs" / "bright_f100" / "test_metrics.csv")
    assert len(view.image.options) == len(table) == 6
    labels = [label for label, _ in view.image.options]
    assert labels[0].startswith(table.loc[table["dice"].idxmin(), "isic_id"])
    assert bytes(view.picture.value).startswith(PNG) and "Dice" in view.scores.value


def test_scores_match_the_evaluation_for_the_same_settings(viewer):
    view, root = viewer
    table = pd.read_csv(root / "runs" / "bright_f100" / "test_metrics.csv").set_index("isic_id")
    for label, row in view.image.options:
        view.image.value = row
        assert _dice_shown(view) == pytest.approx(table.loc[label.split()[0], "dice"], abs=1e-3)  # shown to 3 decimals


def test_threshold_tta_and_postprocessing_update_the_view(viewer):
    view, _ = viewer
    view.threshold.value = 0.5
    before, picture, updates = _dice_shown(view), view.picture.value, view.updates
    view.threshold.value = 0.9                      # above every prob: nothing predicted, Dice 0
    assert _dice_shown(view) == 0.0 and view.picture.value != picture and view.updates == updates + 1
    view.threshold.value = 0.5
    assert _dice_shown(view) == pytest.approx(before)
    view.tta.value = True                           # the model is flip-symmetric: same scores
    view.post.value = True
    assert view.updates == updates + 4 and _dice_shown(view) == pytest.approx(before, abs=0.02)
    assert "TTA True" in view.scores.value and "post-processing True" in view.scores.value
    preds, scores = view.current()
    assert preds.dtype == bool and preds.shape == view.prepared.masks.shape[1:]
    assert np.isfinite(scores["hd95"])


def test_no_finished_run_is_an_error_saying_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="No finished run .* train one first"):
        PredictionViewer(tmp_path)


def test_runs_copied_without_checkpoints_are_not_offered(viewer, tmp_path):
    _, root = viewer
    assert all(runs.has_checkpoint(p) for p in scoring.list_run_dirs(root))
    copy = tmp_path / "copied"  # e.g. a committed results folder on another machine
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("checkpoints"))
    for config in copy.glob("runs/*/config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "checkpoint_dir": str(tmp_path / "gone")}))
    assert not any(runs.has_checkpoint(p) for p in scoring.list_run_dirs(copy))
    with pytest.raises(ValueError, match="copied without checkpoints"):
        PredictionViewer(copy, device="cpu")


def test_shown_through_ipythons_display_hook_on_ipywidgets_7_and_8(viewer, monkeypatch):
    import IPython.display
    import ipywidgets

    view, _ = viewer
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **kw: shown.extend(objects))
    view._ipython_display_()  # what IPython calls for the last line of a cell
    assert shown == [view.widget] and isinstance(view.widget, ipywidgets.VBox)
    assert not hasattr(type(view), "_repr_mimebundle_")  # ipywidgets 7 widgets have no _repr_mimebundle_ to call
