"""DATA_SOURCE dispatch: synthetic, folder, zip (Windows paths too), and the official download."""
import io
import zipfile

import pytest

from helpers import paths
from helpers.data.isic import DataError
from helpers.data.sources import dataset_name, ensure_prepared, get_source
from helpers.profiles import resolve_config
from tests.builders import make_dataset

SMOKE = resolve_config("smoke", synthetic_count=12)


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))


def _zip_of(folder, zip_path, backslashes=False, top=""):
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                name = top + str(f.relative_to(folder))
                zf.write(f, name.replace("/", "\\") if backslashes else name)
    return zip_path


def test_synthetic_source_lands_in_data_raw():
    root = get_source("synthetic", None, SMOKE)
    assert root == paths.data_dir() / "raw" / "synthetic-12-s0"
    assert len(list((root / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))) == 12


def test_folder_source_is_used_in_place(tmp_path):
    src = make_dataset(tmp_path / "mine", 10)
    assert get_source("folder", str(src), SMOKE) == src.resolve()
    data = ensure_prepared(SMOKE, "folder", str(src))
    assert data.root.parent == paths.prepared_root() and data.root.name == "mine_seed_64px_s42"
    assert len(data.table) == 10


def test_unknown_source_and_missing_folder_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="DATA_SOURCE='kaggle' is not one of"):
        get_source("kaggle", None, SMOKE)
    with pytest.raises(DataError, match="does not exist.*set DATA_DIR"):
        get_source("folder", str(tmp_path / "nowhere"), SMOKE)
    with pytest.raises(DataError, match="no .zip files here"):
        get_source("zip", str(tmp_path), SMOKE)


def test_relative_data_dir_is_found_from_the_repository_root_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / ".")  # as papermill does: the notebook runs elsewhere (notebooks/)
    assert get_source("folder", "helpers", SMOKE) == paths.repo_root() / "helpers"
    (tmp_path / "helpers").mkdir()  # the current folder wins when both have it
    assert get_source("folder", "helpers", SMOKE) == (tmp_path / "helpers").resolve()


def test_zip_with_windows_paths_and_nested_top_folder_prepares(tmp_path):
    src = make_dataset(tmp_path / "src", 8)
    zip_path = _zip_of(src, tmp_path / "isic_part.zip", backslashes=True, top="My Data\\")
    root = get_source("zip", str(zip_path), SMOKE)
    assert (root / "My Data" / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000003.jpg").is_file()
    assert len(ensure_prepared(SMOKE, "zip", str(zip_path)).table) == 8
    assert dataset_name("zip", str(zip_path), SMOKE) == "isic_part"


def test_folder_of_zips_extracts_each(tmp_path):
    src = make_dataset(tmp_path / "src", 6)
    drive = tmp_path / "drive"
    drive.mkdir()
    _zip_of(src / "ISIC2018_Task1-2_Training_Input", drive / "a.zip", top="ISIC2018_Task1-2_Training_Input/")
    _zip_of(src / "ISIC2018_Task1_Training_GroundTruth", drive / "b.zip", top="ISIC2018_Task1_Training_GroundTruth/")
    assert len(ensure_prepared(SMOKE, "zip", str(drive)).table) == 6


def _official_zips(tmp_path, server, counts):
    for split, (count, start) in counts.items():
        src = make_dataset(tmp_path / f"official-{split}", count, split, start=start)
        for folder in src.iterdir():
            buf = io.BytesIO()
            _zip_of(folder, buf, top=folder.name + "/")
            server.files[f"/mirror/{folder.name}.zip"] = buf.getvalue()


def test_isic2018_source_downloads_extracts_and_prepares_both_protocols(tmp_path, server):
    _official_zips(tmp_path, server, {"train": (20, 0), "val": (4, 100), "test": (6, 200)})
    seed = ensure_prepared(SMOKE, "isic2018", None, mirror=server.url + "/mirror")
    assert seed.table["split"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    assert len(server.requests) == 2                                   # training zips only
    official = ensure_prepared(SMOKE, "isic2018", None, protocol="official", mirror=server.url + "/mirror")
    assert official.table["split"].value_counts().to_dict() == {"train": 20, "test": 6, "val": 4}
    assert len(server.requests) == 6                                   # train zips reused, not fetched again
    assert (paths.data_dir() / "downloads" / "ISIC2018_Task1-2_Test_Input.zip").is_file()


def test_a_training_folder_whose_files_changed_is_prepared_again(tmp_path, capsys):
    src = make_dataset(tmp_path / "mine", 10)
    assert len(ensure_prepared(SMOKE, "folder", str(src)).table) == 10
    assert len(ensure_prepared(SMOKE, "folder", str(src)).table) == 10 and "preparing it again" not in \
        capsys.readouterr().out  # unchanged: reused
    make_dataset(src, 3, start=10)  # three more pairs
    assert len(ensure_prepared(SMOKE, "folder", str(src)).table) == 13
    assert f"{src.resolve()} changed since it was prepared" in capsys.readouterr().out


def test_two_training_folders_with_one_name_are_not_mixed_up(tmp_path):
    first = make_dataset(tmp_path / "a" / "data", 10)
    other = make_dataset(tmp_path / "b" / "data", 12)
    assert len(ensure_prepared(SMOKE, "folder", str(first)).table) == 10
    with pytest.raises(DataError, match=r"b/data has the folder name of .*a/data, which is already prepared"):
        ensure_prepared(SMOKE, "folder", str(other))
    assert len(ensure_prepared(SMOKE, "folder", str(first)).table) == 10  # the first one's preparation is untouched
