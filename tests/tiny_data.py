"""A tiny prepared cache for training tests: dark discs on noisy skin, written straight as arrays.

Building it takes milliseconds (no JPEGs, no resizing), and it has the layout that
``helpers.prep.load_prepared`` reads, so the training code sees a real ``Prepared``. Test modules
import :func:`one_torch_thread` too (an autouse fixture).
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.prep import load_prepared


def make_tiny_prepared(folder: Path, count: int = 24, size: int = 32, n_val: int = 4, seed: int = 0):
    """``count`` images of ``size`` px: the first ``count - n_val`` train (nested ranks 0..), the rest val.

    Returns:
        The loaded :class:`helpers.prep.Prepared`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    for k in range(count):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        radius = rng.uniform(0.15, 0.3) * size
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        skin = np.array([200, 160, 140]) + rng.normal(0, 12, (size, size, 3))
        images[k] = np.clip(skin - masks[k][..., None] * np.array([110, 90, 70]), 0, 255)
    n_train = count - n_val
    table = pd.DataFrame({"isic_id": [f"ISIC_{k:07d}" for k in range(count)],
                          "split": ["train"] * n_train + ["val"] * n_val,
                          "protocol": "seed",
                          "train_rank": list(range(n_train)) + [-1] * n_val})
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", masks)
    table.to_csv(folder / "splits.csv", index=False)
    manifest = {"version": 1, "source": "tiny", "image_size": size, "protocol": "seed", "seed": seed, "count": count}
    (folder / "prepared.json").write_text(json.dumps(manifest))
    return load_prepared(folder)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train fastest, and steadiest on a shared CPU, with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
