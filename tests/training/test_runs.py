"""Run names, run folders and loading a run back (the contract evaluation is written against)."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import paths
from helpers.profiles import resolve_config
from helpers.training import engine, runs
from helpers.training.checkpointer import SettingsChanged
from helpers.training.checkpoints import load_checkpoint

CONFIG_KEYS = {"run_id", "settings_hash", *runs.SPEC_FIELDS, "prepared_dir", "checkpoint_dir", "amp_dtype",
               "device", "hardware", "torch_version", "params", "train_images"}


def _config(**changes):
    return resolve_config("smoke", **{"image_size": 32, "batch_size": 4, "num_epochs": 2, "split_seed": 0, **changes})


@pytest.fixture
def trained(tiny, results):
    spec = runs.make_spec("unet", 0.5, 0, tiny, _config())
    engine.fit(spec, tiny, progress=False)
    return spec


def test_run_id_is_a_readable_part_and_a_hash_of_every_setting():
    spec = runs.RunSpec(model="unet", model_config="paper", fraction=0.25, image_size=256, protocol="seed",
                        dataset="isic2018_task1_512", seed=42)
    name = runs.run_id(spec)
    assert re.fullmatch(r"unet-paper_f025_256px_seed_s42_isic2018_task1_512_[0-9a-f]{8}", name)
    assert runs.run_id(dataclasses.replace(spec, fraction=1.0, protocol="official", seed=7)).startswith(
        "unet-paper_f100_256px_official_s7_isic2018_task1_512_")
    deep = runs.RunSpec(model="unetpp", model_config="tiny", fraction=0.1, image_size=64, protocol="seed",
                        dataset="synthetic-60-s0", seed=42, model_overrides={"deep_supervision": True})
    assert runs.run_id(deep).startswith("unetpp-tiny+deep_supervision_f010_64px_seed_s42_synthetic-60-s0_")
    pretrained = runs.RunSpec(model="transunet", model_config="small", fraction=0.5, image_size=256, protocol="seed",
                              dataset="isic2018", seed=1, pretrained=True)
    assert runs.run_id(pretrained).startswith("transunet-small+pretrained_f050_256px_seed_s1_isic2018_")
    # every result-changing setting changes the id; the same settings give the same id
    changed = {"num_epochs": 21, "batch_size": 8, "lr": 3e-4, "weight_decay": 0.0, "warmup_epochs": 1.0,
               "schedule": "constant", "augment": "none", "amp": "fp16", "early_stopping": 0, "split_seed": 1}
    names = {runs.run_id(dataclasses.replace(spec, **{k: v})) for k, v in changed.items()}
    assert len(names) == len(changed) and name not in names
    assert runs.run_id(runs.RunSpec(model="unet", model_config="paper", fraction=0.25, image_size=256, protocol="seed",
                        dataset="isic2018_task1_512", seed=42)) == name
    with pytest.raises(ValueError, match="whole percentage"):
        runs.run_id(dataclasses.replace(spec, fraction=0.125))


def test_make_spec_takes_every_setting_from_the_config_and_the_data_from_the_cache(tiny):
    config = _config(lr=2e-3, weight_decay=0.0, warmup_epochs=0.5, model_overrides={"transunet": {"dropout": 0.0}},
                     pretrained="transunet", deep_supervision=False)
    spec = runs.make_spec("transunet", 0.25, 3, tiny, config)
    assert (spec.model_config, spec.image_size, spec.protocol, spec.dataset, spec.seed) == ("tiny", 32, "seed", "tiny", 3)
    assert spec.model_overrides == {"dropout": 0.0} and spec.pretrained and runs.dataset_of(tiny) == "tiny"
    assert (spec.lr, spec.weight_decay, spec.warmup_epochs, spec.num_epochs) == (2e-3, 0.0, 0.5, 2)
    assert runs.make_spec("unetpp", 1.0, 0, tiny, config).model_overrides == {"deep_supervision": False}
    assert runs.make_spec("unetpp", 1.0, 0, tiny, _config()).model_overrides == {"deep_supervision": True}
    with pytest.raises(ValueError, match="holds 32px images split with seed 0.*64px and split seed 42"):
        runs.make_spec("unet", 1.0, 0, tiny, resolve_config("smoke"))


def test_run_folder_follows_the_contract_with_paths_relative_to_the_homes(trained, results):
    folder = runs.run_dir(trained)
    assert folder == results / "runs" / runs.run_id(trained)
    config = runs.load_run_config(folder)
    assert set(config) >= CONFIG_KEYS and not runs.differing_settings(config, trained)
    assert (config["model"], config["fraction"], config["num_epochs"], config["amp_dtype"]) == ("unet", 0.5, 2, "off")
    assert config["checkpoint_dir"] == "checkpoints" and config["hardware"].startswith("cpu: ")
    assert not Path(config["prepared_dir"]).is_absolute() or not Path(config["prepared_dir"]).is_relative_to(
        paths.data_dir())  # inside the data home it is recorded relative to it
    assert config["params"] == 122093 and config["settings_hash"] == folder.name.rsplit("_", 1)[1]
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_seconds",
                                     "images_per_s", "peak_gpu_gb"]
    assert list(history["epoch"]) == [1, 2] and history["lr"].iloc[-1] == 0.0  # cosine ends at 0
    done = json.loads((folder / "done.json").read_text())
    assert set(done) == {"best_epoch", "best_val_dice", "epochs", "train_seconds", "images_per_s", "peak_gpu_gb",
                         "stopped_early", "status"}
    assert done["status"] == "finished" and done["best_val_dice"] == history["val_dice"].max()
    assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.pt"}  # a finished run keeps best.pt only
    assert runs.is_finished(folder)


def test_changing_a_setting_after_a_run_finished_trains_a_new_run(trained, tiny, capsys):
    again = engine.fit(trained, tiny, progress=False)
    assert again["status"] == "skipped"
    longer = runs.make_spec("unet", 0.5, 0, tiny, _config(num_epochs=3))  # what a learner changing NUM_EPOCHS does
    result = engine.fit(longer, tiny, progress=False)
    assert result["status"] == "trained" and result["epochs"] == 3 and result["run_id"] != again["run_id"]


def test_a_run_folder_with_other_settings_is_never_resumed_or_skipped_silently(trained, tiny, monkeypatch):
    other = dataclasses.replace(trained, lr=1e-2)  # e.g. a folder written by an older kit under the same name
    folder = runs.run_dir(trained)
    monkeypatch.setattr(runs, "run_id", lambda spec: folder.name)
    with pytest.raises(SettingsChanged, match=r"finished run made with other settings \(lr\)"):
        engine.fit(other, tiny, progress=False)
    engine.fit(trained, tiny, restart=True, keep_last=True, progress=False)
    (folder / "done.json").unlink()  # interrupted: only its checkpoint remains
    with pytest.raises(SettingsChanged, match=r"last.pt was written with other settings than this run's \(lr\)"):
        engine.fit(other, tiny, progress=False)
    result = engine.fit(other, tiny, restart=True, progress=False)
    assert result["status"] == "trained" and runs.load_run_config(folder)["lr"] == 1e-2


def test_a_moved_results_home_still_loads_its_runs(trained, results, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved)
    shutil.rmtree(results)
    monkeypatch.setenv("KIT_RESULTS_DIR", str(moved))
    folder = runs.run_dir(trained)
    assert folder.is_relative_to(moved) and runs.has_checkpoint(folder)
    assert type(runs.load_run_model(folder)).__name__ == "UNet"
    assert len(runs.load_run_data(folder).indices("val")) == 4


def test_run_folders_of_the_previous_layout_still_load(trained, tiny, tmp_path):
    """Absolute paths of another machine, no settings hash: what the committed studies were written with."""
    old = tmp_path / "old" / "unet-tiny_f050_32px_seed_s0_tiny"
    shutil.copytree(runs.run_dir(trained), old)
    config = json.loads((old / "config.json").read_text())
    for key in ("settings_hash", "split_seed", "schedule", "augment", "early_stopping", "amp_dtype"):
        config.pop(key)
    config.update(prepared_dir=f"/home/someone/kit/data/prepared/{tiny.root.name}", amp="off",
                  checkpoint_dir=f"/home/someone/kit/results/runs/{old.name}/checkpoints",
                  profile={"name": "smoke", "amp": False})
    (old / "config.json").write_text(json.dumps(config))
    prepared_home = Path(paths.prepared_root())
    prepared_home.mkdir(parents=True, exist_ok=True)
    (prepared_home / tiny.root.name).symlink_to(tiny.root, target_is_directory=True)
    try:
        assert runs.has_checkpoint(old) and type(runs.load_run_model(old)).__name__ == "UNet"
        assert runs.prepared_dir(config) == prepared_home / tiny.root.name
        assert len(runs.load_run_data(old).indices("val")) == 4
    finally:
        (prepared_home / tiny.root.name).unlink()


def test_load_run_model_rebuilds_and_loads_best_or_last(trained, tiny):
    folder = runs.run_dir(trained)
    with pytest.raises(FileNotFoundError, match="No last checkpoint"):  # a finished run keeps best.pt only
        runs.load_run_model(folder, which="last")
    engine.fit(trained, tiny, restart=True, keep_last=True, progress=False)
    best = runs.load_run_model(folder)
    assert not best.training and type(best).__name__ == "UNet"
    stored = load_checkpoint(folder / "checkpoints" / "best.pt")
    assert set(stored) == {"model", "best_metric", "epoch", "run_id"}  # the run that wrote it
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
    assert list(table["run_id"]) == [runs.run_id(trained)]
    assert bool(table["finished"].iloc[0]) and table["epochs"].iloc[0] == 2
    files = runs.run_files(runs.run_id(trained))
    assert list(files["file"]) == ["config.json", "done.json", "history.csv", "best.pt"]
    assert set(files["folder"]) == {str(runs.run_dir(trained)), str(runs.run_dir(trained) / "checkpoints")}


def test_missing_things_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        runs.load_run_config(tmp_path)
    assert not runs.is_finished(tmp_path) and runs.list_runs(tmp_path).empty
    with pytest.raises(RuntimeError, match="only be mounted inside Colab"):
        paths.mount_drive()
