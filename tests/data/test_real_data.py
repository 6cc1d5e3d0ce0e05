"""The real ISIC 2018 training copy in ../shared, through the same code path (skips without it)."""
import numpy as np
import pytest

from helpers.data.isic import find_split_dirs, pair_files
from helpers.data.prep import prepare
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/isic2018_task1_512 is absent")


def test_all_2594_pairs_pair_cleanly():
    pairs, problems = pair_files(*find_split_dirs(SHARED_DATA))
    assert len(pairs) == 2594 and problems == []


@pytest.mark.slow
def test_real_data_prepares_with_the_seed_protocol(tmp_path):
    data = prepare(SHARED_DATA, tmp_path / "real", 32, progress=False)
    assert data.images.shape == (2594, 32, 32, 3)
    assert data.table["split"].value_counts().to_dict() == {"train": 1816, "val": 389, "test": 389}
    assert [len(data.indices("train", f)) for f in (0.1, 0.25, 0.5, 1.0)] == [182, 454, 908, 1816]
    assert set(np.unique(data.masks)) == {0, 1} and (data.table["note"] == "").all()
    assert (data.table[["orig_height", "orig_width"]] == 512).all().all()
    assert 0.05 < data.table["lesion_fraction"].median() < 0.6
