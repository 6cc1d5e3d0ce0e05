"""External test sets: trained runs scored on another dataset used whole as a test set, and the drop."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data.isic import SPLIT_DIRS
from helpers.data.prep import prepare
from helpers.evaluation import external, inference, scoring
from helpers.reporting import report
from tests.builders import Brightness, make_run, shifted_prepared, write_shifted_pair


def write_unshifted(root, count=12, size=(44, 34)):
    """Images with a bright box whose mask is exactly that box (the shifted fixture's masks miss it by 0-21 px)."""
    image_dir, mask_dir = (root / d for d in SPLIT_DIRS["train"])
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for k in range(count):
        width, height = size
        image = np.full((height, width, 3), 40, np.uint8)
        mask = np.zeros((height, width), np.uint8)
        image[height // 4:3 * height // 4, width // 4:3 * width // 4] = 220
        mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = 255
        Image.fromarray(image).save(image_dir / f"ISIC_{500 + k:07d}.png")
        Image.fromarray(mask).save(mask_dir / f"ISIC_{500 + k:07d}_segmentation.png")
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two evaluated runs (a 'model' that marks bright pixels) and another dataset prepared as an external test set."""
    root = tmp_path_factory.mktemp("external")
    own = shifted_prepared(root / "data")
    for model in ("unet", "unetpp"):
        make_run(root, f"{model}_f100", model, 1.0, own.root)
    scoring.evaluate_runs(root, progress=False, load_model=lambda _: Brightness())
    other = prepare(write_unshifted(root / "raw-other"), root / "data" / "other_external_32px_s42", 32,
                    protocol="external", progress=False)
    return root, other


def test_external_preparation_is_all_test(study):
    _, other = study
    assert set(other.table["split"]) == {"test"} and len(other.indices("test")) == 12
    assert other.manifest["protocol"] == "external"


def test_runs_scored_on_the_external_set_with_their_own_settings(study):
    root, other = study
    done = external.evaluate_external_runs(other, root, load_model=lambda _: Brightness())
    assert list(done["action"]) == ["evaluated", "evaluated"] and set(done["test_dataset"]) == {"other"}
    folder = external.external_dir(root / "runs" / "unet_f100", "other")
    table = pd.read_csv(folder / inference.METRICS_FILE)
    info = json.loads((folder / inference.EVAL_FILE).read_text())
    assert len(table) == 12 and table["isic_id"].str.startswith("ISIC_00005").all()
    assert info["test_dataset"] == "other" and info["trained_on"] == "shifted" and info["threshold"] == 0.5
    assert table["dice"].mean() > 0.9  # the mask is the bright box itself here
    again = external.evaluate_external_runs(other, root, load_model=lambda _: Brightness())
    assert again["action"].str.startswith("skipped: already scored").all()


def test_the_drop_and_its_interval(study):
    root, other = study
    external.evaluate_external_runs(other, root, load_model=lambda _: Brightness())
    table = external.external_table(root, n_boot=500)
    assert list(table["model"]) == ["unet", "unetpp"] and set(table["test_dataset"]) == {"other"}
    row = table.iloc[0]
    own = scoring.read_metrics(root / "runs" / "unet_f100" / inference.METRICS_FILE)["dice"].mean()
    assert row["dice_in"] == pytest.approx(own) and row["n_in"] == 6 and row["n_external"] == 12
    assert row["dice_drop"] == pytest.approx(row["dice_in"] - row["dice_external"])
    assert row["dice_drop_ci_low"] <= row["dice_drop"] <= row["dice_drop_ci_high"] < 0  # better on the easier set
    shown = external.readable(table)
    assert list(shown.columns[-3:]) == ["dice, own test split", "dice, external", "drop (own − external)"]
    assert shown.iloc[0, -1].startswith(f"{row['dice_drop']:.3f} [")


def test_report_has_the_external_section(study):
    root, other = study
    external.evaluate_external_runs(other, root, load_model=lambda _: Brightness())
    text = report.write_report(root, n_boot=200).read_text()
    assert "## On another dataset" in text and "| unetpp | 100 % | shifted | other |" in text
    assert (root / external.EXTERNAL_FILE).is_file()
    summary = pd.read_csv(root / "summary.csv")
    assert set(summary.loc[summary["status"] == "ok", "test_dataset"]) == {"shifted"}


def test_wrong_size_or_own_dataset_is_refused(study, tmp_path):
    root, _ = study
    bigger = prepare(write_unshifted(tmp_path / "raw"), tmp_path / "big_external_48px_s42", 48,
                     protocol="external", progress=False)
    with pytest.raises(ValueError, match=r"prepared at 48 px but run unet_f100 was trained at 32 px"):
        external.evaluate_external(root / "runs" / "unet_f100", bigger, load_model=lambda _: Brightness())
    skipped = external.evaluate_external_runs(bigger, root)
    assert skipped["action"].str.contains("trained at another size").all()
    own = shifted_prepared(tmp_path / "own")
    own_named = type(own)(tmp_path / "shifted_seed_32px_s1", own.images, own.masks, own.table, own.manifest)
    with pytest.raises(ValueError, match="the dataset run unet_f100 was trained on"):
        external.evaluate_external(root / "runs" / "unet_f100", own_named, load_model=lambda _: Brightness())


def test_command_prepares_and_scores(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    own = shifted_prepared(tmp_path / "data")
    make_run(tmp_path / "results", "unet_f100", "unet", 1.0, own.root)
    scoring.evaluate_runs(tmp_path / "results", progress=False)
    raw = write_unshifted(tmp_path / "clinic")
    assert external.main(["--data-dir", str(raw), "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "evaluated" in out and "clinic" in out and (tmp_path / "results" / external.EXTERNAL_FILE).is_file()
    assert external.main(["--data-dir", str(raw), "--results", str(tmp_path / "empty")]) == 1


def test_default_source_follows_the_training_data(tmp_path):
    own = shifted_prepared(tmp_path / "data")
    run = make_run(tmp_path, "unet_f100", "unet", 1.0, own.root)
    scoring.evaluate_runs(tmp_path, progress=False, load_model=lambda _: Brightness())
    assert external.choose_source(None, tmp_path) == ""           # real data: no external test unless asked
    assert external.choose_source("folder", tmp_path) == "folder"
    assert external.choose_source(None, tmp_path / "nothing") == ""
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": "synthetic-60-s0"}))
    assert external.choose_source(None, tmp_path) == "synthetic"  # the demo shows the section


def test_scores_made_with_other_settings_are_made_again_and_never_mixed(tmp_path):
    own = shifted_prepared(tmp_path / "data")
    run = make_run(tmp_path, "unet_f100", "unet", 1.0, own.root)
    bright = {"load_model": lambda _: Brightness()}
    scoring.evaluate_runs(tmp_path, progress=False, **bright)
    other = prepare(write_unshifted(tmp_path / "raw-other"), tmp_path / "data" / "other_external_32px_s42", 32,
                    protocol="external", progress=False)
    assert list(external.evaluate_external_runs(other, tmp_path, **bright)["action"]) == ["evaluated"]
    scoring.evaluate_runs(tmp_path, progress=False, overwrite=True, threshold=0.9, **bright)  # REEVALUATE at 0.9
    assert external.external_table(tmp_path, n_boot=50).empty  # 0.5 outside, 0.9 inside: not compared
    assert list(external.evaluate_external_runs(other, tmp_path, **bright)["action"]) == ["evaluated"]
    info = json.loads((external.external_dir(run, "other") / inference.EVAL_FILE).read_text())
    assert info["threshold"] == 0.9 and len(external.external_table(tmp_path, n_boot=50)) == 1


def test_a_copy_of_the_training_data_is_not_an_external_test_set(tmp_path):
    own = shifted_prepared(tmp_path / "data")  # ids ISIC_0000000 … ISIC_0000039
    make_run(tmp_path, "unet_f100", "unet", 1.0, own.root)
    scoring.evaluate_runs(tmp_path, progress=False, load_model=lambda _: Brightness())
    copy = prepare(own.root.parent / "raw", tmp_path / "data" / "copy_external_32px_s42", 32, protocol="external",
                   progress=False)
    with pytest.raises(ValueError, match=r"40 of its 40 images have the ids of images in the dataset run unet_f100"):
        external.evaluate_external(tmp_path / "runs" / "unet_f100", copy, load_model=lambda _: Brightness())


def test_missing_folder_checkpoints_and_the_study_copy(tmp_path):
    from helpers.profiles import resolve_config
    from helpers.reporting import snapshot

    with pytest.raises(ValueError, match="EXTERNAL_SOURCE='folder' needs EXTERNAL_DIR"):
        external.prepare_external(resolve_config("smoke"), "folder", "")
    own = shifted_prepared(tmp_path / "data")
    run = make_run(tmp_path, "unet_f100", "unet", 1.0, own.root)
    scoring.evaluate_runs(tmp_path, progress=False, load_model=lambda _: Brightness())
    other = prepare(write_unshifted(tmp_path / "raw-other"), tmp_path / "data" / "other_external_32px_s42", 32,
                    protocol="external", progress=False)
    external.evaluate_external_runs(other, tmp_path, load_model=lambda _: Brightness())
    report.write_report(tmp_path, n_boot=50)
    study = snapshot.snapshot("study", tmp_path, tmp_path / "published")
    assert (study / "external.csv").is_file()
    assert (study / "runs" / "unet_f100" / "external" / "other" / "test_metrics.csv").is_file()
    assert not list(study.rglob("*.npz")) and not list(study.rglob("*.pt"))
    (run / "checkpoints" / "best.pt").unlink()
    done = external.evaluate_external_runs(other, tmp_path, overwrite=True)
    assert done["action"].str.startswith("skipped: no checkpoint here").all()
    assert external.score_on(resolve_config("smoke"), "folder", "/nowhere", tmp_path).empty  # nothing prepared


def test_the_demo_path_scores_a_second_draw_of_the_offline_sample(tmp_path, monkeypatch):
    """Notebook 04 after training on the offline sample: the external set is another draw, with ids of its own."""
    from helpers.data.sources import ensure_prepared
    from helpers.profiles import resolve_config
    from helpers.training import runs

    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    config = resolve_config("smoke", synthetic_count=12)
    own = ensure_prepared(config)
    run = make_run(tmp_path / "results", "unet_f100", "unet", 1.0, own.root, image_size=config.image_size)
    recorded = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**recorded, "dataset": runs.dataset_of(own)}))
    scoring.evaluate_runs(tmp_path / "results", progress=False, load_model=lambda _: Brightness())
    assert external.choose_source(None, tmp_path / "results") == "synthetic"
    done = external.score_on(config, "synthetic", None, tmp_path / "results", load_model=lambda _: Brightness())
    assert list(done["action"]) == ["evaluated"] and list(done["test_dataset"]) == ["synthetic-12-s1"]
    assert len(external.external_table(tmp_path / "results", n_boot=50)) == 1


def _score(home, folder):
    from helpers.profiles import resolve_config

    done = external.score_on(resolve_config("smoke"), "folder", str(folder), home, load_model=lambda _: Brightness())
    return done, pd.read_csv(external.write_external(home))


def test_a_changed_dataset_is_prepared_and_scored_again(scored_home, tmp_path, capsys):
    raw = write_unshifted(tmp_path / "clinic", count=12)
    done, table = _score(scored_home, raw)
    assert list(done["action"]) == ["evaluated"] and list(table["n_external"]) == [12]
    for path in sorted((raw / SPLIT_DIRS["train"][0]).glob("*.png"))[:4]:  # four images and their masks removed
        path.unlink()
        (raw / SPLIT_DIRS["train"][1] / f"{path.stem}_segmentation.png").unlink()
    done, table = _score(scored_home, raw)
    assert "changed since it was prepared" in capsys.readouterr().out
    assert list(done["action"]) == ["evaluated"] and list(table["n_external"]) == [8]  # not the old 12
    done, _ = _score(scored_home, raw)  # unchanged now: reused, and the scores too
    assert done["action"].str.startswith("skipped: already scored").all()


def test_two_datasets_whose_folders_share_a_name_stay_apart(scored_home, tmp_path):
    easy = write_unshifted(tmp_path / "A" / "data", count=12)
    hard = tmp_path / "B" / "data"
    for k in range(10):
        write_shifted_pair(hard, 300 + k)  # masks shifted from the bright box: lower Dice
    _, first = _score(scored_home, easy)
    _, both = _score(scored_home, hard)
    assert len(both) == 2 and both["test_dataset"].nunique() == 2
    assert all(name.startswith("data-") for name in both["test_dataset"])
    a, b = (both.set_index("test_dataset").loc[first["test_dataset"].iloc[0]],
            both[both["test_dataset"] != first["test_dataset"].iloc[0]].iloc[0])
    assert (a["n_external"], b["n_external"]) == (12, 10) and b["dice_external"] < a["dice_external"]


def test_dataset_problems_reach_the_command_line_as_one_line(scored_home, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = external.main(["--data-dir", str(tmp_path / "empty"), "--results", str(scored_home)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("✗ ") and "Traceback" not in err and str(tmp_path / "empty") in err
