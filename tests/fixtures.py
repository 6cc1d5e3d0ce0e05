"""Builders of small datasets in the official ISIC layout, with the defects tests need."""
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.isic import SPLIT_DIRS


def write_pair(root: Path, split: str, isic_id: str, size=(40, 30), lesion=True) -> tuple[Path, Path]:
    """One RGB JPEG and its 0/255 mask (a centred rectangle) in the split's folders."""
    image_dir, mask_dir = (root / d for d in SPLIT_DIRS[split])
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(int(isic_id[-7:]))
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if lesion:
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    image_path, mask_path = image_dir / f"{isic_id}.jpg", mask_dir / f"{isic_id}_segmentation.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def make_dataset(root: Path, count: int, split: str = "train", start: int = 0, size=(40, 30)) -> Path:
    """``count`` clean pairs with ids from ``start``."""
    for k in range(start, start + count):
        write_pair(root, split, f"ISIC_{k:07d}", size)
    return root
