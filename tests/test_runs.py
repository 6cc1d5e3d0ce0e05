"""Run names, run folders and loading a run back (the contract evaluation is written against)."""
import dataclasses
import json

import pandas as pd
import pytest
import torch

from helpers import runs, train
from helpers.checkpoints import load_checkpoint
from helpers.profiles import resolve_profile
from tests.tiny_data import make_tiny_prepared, one_torch_thread  # noqa: F401 (autouse fixture)

CONFIG_KEYS = {"run_id", "model", "model_config", "model_overrides", "fraction", "image_size", "seed", "protocol",
               "dataset", "prepared_dir", "checkpoint_dir", "profile", "num_epochs", "batch_size", "lr",
               "weight_decay", "amp", "device", "hardware", "torch_version", "params"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_prepared(tmp_path_factory.mktemp("prepared") / "tiny_seed_32px_s0")


@pytest.fixture
def trained(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    profile = resolve_profile("smoke", image_size=32, batch_size=4, num_epochs=2)
    spec = runs.make_spec("unet", 0.5, tiny, profile, seed=0)
    train.fit(spec, tiny, profile, progress=False)
    return spec


def test_run_id_is_one_readable_function_of_the_spec():
    spec = runs.RunSpec("unet", "paper", 0.25, 256, 42, "seed", "isic2018_task1_512")
    assert runs.run_id(spec) == "unet-paper_f025_256px_seed_s42_isic2018_task1_512"
    assert runs.run_id(dataclasses.replace(spec, fraction=1.0, protocol="official", seed=7)) == \
        "unet-paper_f100_256px_official_s7_isic2018_task1_512"
    deep = runs.RunSpec("unetpp", "tiny", 0.1, 64, 42, "seed", "synthetic-60-s0", {"deep_supervision": True})
    assert runs.run_id(deep) == "unetpp-tiny+deep_supervision_f010_64px_seed_s42_synthetic-60-s0"
    pretrained = runs.RunSpec("transunet", "small", 0.5, 256, 1, "seed", "isic2018", pretrained=True)
    assert runs.run_id(pretrained) == "transunet-small+pretrained_f050_256px_seed_s1_isic2018"
    with pytest.raises(ValueError, match="whole percentage"):
        runs.run_id(dataclasses.replace(spec, fraction=0.125))


def test_make_spec_takes_the_profile_and_the_cache(tiny):
    profile = resolve_profile("smoke", image_size=32)
    spec = runs.make_spec("transunet", 0.25, tiny, profile, seed=3, model_overrides={"dropout": 0.0})
    assert (spec.model_config, spec.image_size, spec.protocol, spec.dataset) == ("tiny", 32, "seed", "tiny")
    assert spec.model_overrides == {"dropout": 0.0} and runs.dataset_of(tiny) == "tiny"
    with pytest.raises(ValueError, match="holds 32px images but the profile asks for 64px"):
        runs.make_spec("unet", 1.0, tiny, resolve_profile("smoke"), seed=0)


def test_run_folder_follows_the_contract(trained, tmp_path):
    folder = runs.run_dir(trained)
    assert folder == tmp_path / "results" / "runs" / "unet-tiny_f050_32px_seed_s0_tiny"
    config = runs.load_run_config(folder)
    assert CONFIG_KEYS <= set(config)
    assert (config["model"], config["fraction"], config["num_epochs"], config["amp"]) == ("unet", 0.5, 2, "off")
    assert config["checkpoint_dir"] == str(folder / "checkpoints") and config["hardware"].startswith("cpu: ")
    assert config["params"] == 122093 and config["profile"]["name"] == "smoke"
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_seconds",
                                     "images_per_s"]
    assert list(history["epoch"]) == [1, 2] and history["lr"].iloc[-1] == 0.0  # cosine ends at 0
    done = json.loads((folder / "done.json").read_text())
    assert set(done) == {"best_epoch", "best_val_dice", "epochs", "train_seconds", "images_per_s", "stopped_early",
                         "status"}
    assert done["status"] == "finished" and done["best_val_dice"] == history["val_dice"].max()
    assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.pt", "last.pt", "last.prev.pt"}
    assert runs.is_finished(folder)


def test_load_run_model_rebuilds_and_loads_best_or_last(trained):
    folder = runs.run_dir(trained)
    best = runs.load_run_model(folder)
    assert not best.training and type(best).__name__ == "UNet"
    stored = load_checkpoint(folder / "checkpoints" / "best.pt")
    assert set(stored) == {"model", "best_metric", "epoch"}
    assert all(torch.equal(best.state_dict()[k], v) for k, v in stored["model"].items())
    last = runs.load_run_model(folder, which="last")
    assert all(torch.equal(last.state_dict()[k], v)
               for k, v in load_checkpoint(folder / "checkpoints" / "last.pt")["model"].items())


def test_has_checkpoint_sees_best_pt_only(trained, tmp_path):
    folder = runs.run_dir(trained)
    assert runs.has_checkpoint(folder)
    copy = tmp_path / folder.name  # a results folder copied without its checkpoints
    copy.mkdir()
    for name in ("config.json", "history.csv"):
        (copy / name).write_bytes((folder / name).read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["checkpoint_dir"] = str(tmp_path / "elsewhere")
    (copy / "config.json").write_text(json.dumps(config))
    assert not runs.has_checkpoint(copy)


def test_list_runs_and_run_files(trained):
    table = runs.list_runs()
    assert list(table["run_id"]) == ["unet-tiny_f050_32px_seed_s0_tiny"]
    assert bool(table["finished"].iloc[0]) and table["epochs"].iloc[0] == 2
    files = runs.run_files(runs.run_id(trained))
    assert list(files["file"]) == ["config.json", "done.json", "history.csv", "best.pt", "last.prev.pt", "last.pt"]
    assert set(files["folder"]) == {str(runs.run_dir(trained)), str(runs.run_dir(trained) / "checkpoints")}


def test_missing_things_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        runs.load_run_config(tmp_path)
    assert not runs.is_finished(tmp_path) and runs.list_runs(tmp_path).empty
    with pytest.raises(RuntimeError, match="MOUNT_DRIVE = True"):
        runs.drive_checkpoint_root(tmp_path / "MyDrive")
    (tmp_path / "MyDrive").mkdir()
    assert runs.drive_checkpoint_root(tmp_path / "MyDrive") == tmp_path / "MyDrive" / "skin-lesion-kit" / "checkpoints"
